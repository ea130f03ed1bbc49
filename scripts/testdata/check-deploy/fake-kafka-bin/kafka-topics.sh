#!/bin/sh
# A stand-in for Kafka's kafka-topics.sh, enough to test deploy/base/kafka-topics/create-topics.sh
# without a broker. The cluster's topics live in $FAKE_KAFKA_STATE as `name partitions` lines.
set -eu
state=${FAKE_KAFKA_STATE:?}
touch "$state"
action='' topic='' partitions=''
while [ $# -gt 0 ]; do
    case $1 in
        --describe | --create | --alter | --list) action=$1 ;;
        --topic) topic=$2; shift ;;
        --partitions) partitions=$2; shift ;;
        --bootstrap-server | --replication-factor | --config) shift ;;
    esac
    shift
done
echo "$action $topic $partitions" >>"$state.calls"
case $action in
    --list) cut -d' ' -f1 "$state" ;;
    --describe)
        while read -r name count; do
            printf 'Topic: %s\tTopicId: AAAAAAAAAAAAAAAAAAAAAA\tPartitionCount: %s\tReplicationFactor: 1\tConfigs: \n' "$name" "$count"
            printf '\tTopic: %s\tPartition: 0\tLeader: 1\tReplicas: 1\tIsr: 1\n' "$name"
        done <"$state"
        ;;
    --create) echo "$topic $partitions" >>"$state" ;;
    --alter)
        awk -v t="$topic" -v p="$partitions" '$1 == t { $2 = p } { print }' "$state" >"$state.new"
        mv "$state.new" "$state"
        ;;
esac
