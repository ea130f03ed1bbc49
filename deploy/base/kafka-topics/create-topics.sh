#!/bin/sh
# Creates the Kafka topics listed in a topics file (`name partitions` per line, `#` comments),
# the project's single source of truth: config/topics.txt.
#
# Idempotent: existing topics are kept; a topic with fewer partitions than listed is grown
# (Kafka cannot shrink one, so more partitions than listed is only reported).
#
# Runs in the official apache/kafka image: the docker-compose `topic-init` service and the
# Kubernetes `kafka-topics` Job both run this file.
#
# Environment:
#   KAFKA_BROKERS                 bootstrap servers (required)
#   KAFKA_TOPIC_PREFIX            prepended to every topic name, as the services do (default empty)
#   TOPICS_FILE                   default /etc/ordersaga/topics/topics.txt
#   TOPIC_REPLICATION_FACTOR      default 1
#   TOPIC_MIN_INSYNC_REPLICAS     default 1
#   KAFKA_BIN                     default /opt/kafka/bin
#   KAFKA_WAIT_SECONDS            how long to wait for the brokers, default 180
set -eu

: "${KAFKA_BROKERS:?KAFKA_BROKERS must name the bootstrap servers}"
topics_file=${TOPICS_FILE:-/etc/ordersaga/topics/topics.txt}
replication=${TOPIC_REPLICATION_FACTOR:-1}
min_isr=${TOPIC_MIN_INSYNC_REPLICAS:-1}
kafka_bin=${KAFKA_BIN:-/opt/kafka/bin}
prefix=${KAFKA_TOPIC_PREFIX:-}
wait_seconds=${KAFKA_WAIT_SECONDS:-180}

topics() {
    "$kafka_bin/kafka-topics.sh" --bootstrap-server "$KAFKA_BROKERS" "$@"
}

log() {
    echo "create-topics: $*"
}

# Parse and validate the whole file before touching the cluster.
wanted=$(mktemp)
trap 'rm -f "$wanted"' EXIT
line_no=0
while IFS= read -r line || [ -n "$line" ]; do
    line_no=$((line_no + 1))
    line=${line%%#*}
    # shellcheck disable=SC2086 # word splitting is the parser here
    set -- $line
    [ $# -eq 0 ] && continue
    if [ $# -ne 2 ]; then
        log "$topics_file:$line_no: expected 'name partitions', got '$line'" >&2
        exit 2
    fi
    case $2 in
        '' | *[!0-9]* | 0)
            log "$topics_file:$line_no: partitions must be a positive integer, got '$2'" >&2
            exit 2
            ;;
    esac
    printf '%s%s %s\n' "$prefix" "$1" "$2" >>"$wanted"
done <"$topics_file"
if [ ! -s "$wanted" ]; then
    log "$topics_file lists no topics" >&2
    exit 2
fi

deadline=$(($(date +%s) + wait_seconds))
until existing=$(topics --describe --exclude-internal 2>/dev/null); do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "brokers $KAFKA_BROKERS not reachable after ${wait_seconds}s" >&2
        exit 1
    fi
    log "waiting for brokers $KAFKA_BROKERS"
    sleep 3
done

while read -r name partitions; do
    current=$(printf '%s\n' "$existing" |
        sed -n "s/^Topic: *\([^[:space:]]*\)[[:space:]].*PartitionCount: *\([0-9]*\).*/\1 \2/p" |
        awk -v t="$name" '$1 == t { print $2 }')
    if [ -z "$current" ]; then
        log "creating $name (partitions=$partitions, replication=$replication)"
        topics --create --if-not-exists --topic "$name" \
            --partitions "$partitions" --replication-factor "$replication" \
            --config "min.insync.replicas=$min_isr"
    elif [ "$current" -lt "$partitions" ]; then
        log "growing $name from $current to $partitions partitions"
        topics --alter --topic "$name" --partitions "$partitions"
    elif [ "$current" -gt "$partitions" ]; then
        log "warning: $name has $current partitions, more than the $partitions listed (left as is)"
    else
        log "$name exists with $partitions partitions"
    fi
done <"$wanted"
log "done"
