#!/usr/bin/env bash
# Runs the project's own binaries in the background against the infrastructure of
# scripts/infra.sh (which must be up). Logs and pid files live in the state dir.
#
#   scripts/stack.sh up       start what is not running, wait until every process is healthy
#   scripts/stack.sh down     stop every process (SIGTERM, then SIGKILL after a grace period)
#   scripts/stack.sh status   one line per process
#
# Binaries come from `cargo build --bins` (debug profile) in ${CARGO_TARGET_DIR:-target}.
# A process whose binary was rebuilt since it started is restarted by `up`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${ORDERSAGA_STATE:-$ROOT/.local}"
CACHE="${ORDERSAGA_CACHE:-$HOME/.cache/ordersaga}"
LOGS="$STATE/logs"
RUN="$STATE/run"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
# STACK_PROFILE=release runs `cargo build --release --bins` output (benchmarks).
STACK_PROFILE="${STACK_PROFILE:-debug}"
BIN_DIR="$TARGET_DIR/$STACK_PROFILE"

PG_PORT="${PG_PORT:-55432}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
OTLP_GRPC_PORT="${OTLP_GRPC_PORT:-4317}"
JAEGER_QUERY_PORT="${JAEGER_QUERY_PORT:-16686}"
STACK_TIMEOUT="${STACK_TIMEOUT:-60}"    # seconds each process gets to become healthy
STACK_RUST_LOG="${STACK_RUST_LOG:-info}"
# Where the notification service posts outcomes; empty: recorded, not delivered.
NOTIFICATION_WEBHOOK_URL="${NOTIFICATION_WEBHOOK_URL:-}"
SAGA_STEP_TIMEOUT_MS="${SAGA_STEP_TIMEOUT_MS:-30000}"

# Values the table below may use as ${NAME} (see expand()).
# shellcheck disable=SC2034
PG_URL_BASE="postgres://postgres@127.0.0.1:$PG_PORT"
# shellcheck disable=SC2034
KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
# shellcheck disable=SC2034
OTLP_ENDPOINT="http://127.0.0.1:$OTLP_GRPC_PORT"

# Environment every process gets (before its own entries, which may override it).
COMMON_ENV='OTEL_EXPORTER_OTLP_ENDPOINT=${OTLP_ENDPOINT} LOG_FORMAT=text RUST_LOG=${STACK_RUST_LOG}'

# The processes, started in this order (each healthy before the next starts) and
# stopped in reverse. One per line:
#   NAME  BINARY  HEALTH_ADDR (grpc.health.v1 endpoint)  ENV (KEY=VALUE ..., no spaces in values)
STACK_TABLE='
order-service        order-service        127.0.0.1:50051  LISTEN_ADDR=127.0.0.1:50051 DATABASE_URL=${PG_URL_BASE}/order_db KAFKA_BROKERS=${KAFKA_BROKERS} METRICS_LISTEN_ADDR=127.0.0.1:9181 OTEL_SERVICE_NAME=order-service
inventory-service    inventory-service    127.0.0.1:50052  LISTEN_ADDR=127.0.0.1:50052 DATABASE_URL=${PG_URL_BASE}/inventory_db KAFKA_BROKERS=${KAFKA_BROKERS} METRICS_LISTEN_ADDR=127.0.0.1:9182 OTEL_SERVICE_NAME=inventory-service
payment-service      payment-service      127.0.0.1:50053  LISTEN_ADDR=127.0.0.1:50053 DATABASE_URL=${PG_URL_BASE}/payment_db KAFKA_BROKERS=${KAFKA_BROKERS} METRICS_LISTEN_ADDR=127.0.0.1:9183 OTEL_SERVICE_NAME=payment-service
shipment-service     shipment-service     127.0.0.1:50054  LISTEN_ADDR=127.0.0.1:50054 DATABASE_URL=${PG_URL_BASE}/shipment_db KAFKA_BROKERS=${KAFKA_BROKERS} METRICS_LISTEN_ADDR=127.0.0.1:9184 OTEL_SERVICE_NAME=shipment-service
notification-service notification-service 127.0.0.1:50055  LISTEN_ADDR=127.0.0.1:50055 DATABASE_URL=${PG_URL_BASE}/notification_db KAFKA_BROKERS=${KAFKA_BROKERS} NOTIFICATION_WEBHOOK_URL=${NOTIFICATION_WEBHOOK_URL} METRICS_LISTEN_ADDR=127.0.0.1:9185 OTEL_SERVICE_NAME=notification-service
orchestrator         orchestrator         127.0.0.1:50056  LISTEN_ADDR=127.0.0.1:50056 DATABASE_URL=${PG_URL_BASE}/orchestrator_db KAFKA_BROKERS=${KAFKA_BROKERS} SAGA_STEP_TIMEOUT_MS=${SAGA_STEP_TIMEOUT_MS} METRICS_LISTEN_ADDR=127.0.0.1:9186 OTEL_SERVICE_NAME=orchestrator
outbox-relay         outbox-relay         127.0.0.1:50060  HEALTH_LISTEN_ADDR=127.0.0.1:50060 RELAY_DATABASE_URLS=${PG_URL_BASE}/order_db,${PG_URL_BASE}/inventory_db,${PG_URL_BASE}/payment_db,${PG_URL_BASE}/shipment_db,${PG_URL_BASE}/notification_db,${PG_URL_BASE}/orchestrator_db KAFKA_BROKERS=${KAFKA_BROKERS} METRICS_LISTEN_ADDR=127.0.0.1:9190 OTEL_SERVICE_NAME=outbox-relay
'

log() { printf '[stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[stack %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
die_log() {
  local file="$1"; shift
  printf '[stack %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  if [[ -f "$file" ]]; then
    printf -- '----- last 40 lines of %s -----\n' "$file" >&2
    tail -n 40 "$file" >&2 || true
    printf -- '----- end of %s -----\n' "$file" >&2
  fi
  exit 1
}

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
# A live process (a zombie, killed but not yet reaped, does not count).
pid_alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}
read_pid() { [[ -s "$1" ]] && head -n1 "$1" | tr -dc '0-9' || true; }

# Expand ${NAME} references of the table (only the variables defined above).
expand() {
  local s="$1" v
  for v in PG_URL_BASE KAFKA_BROKERS OTLP_ENDPOINT STACK_RUST_LOG NOTIFICATION_WEBHOOK_URL SAGA_STEP_TIMEOUT_MS; do
    s="${s//\$\{$v\}/${!v}}"
  done
  [[ "$s" != *'${'* ]] || die "unknown \${...} in stack table entry: $s"
  printf '%s' "$s"
}

# Rows of the table as "name binary addr env..." lines, without blanks and comments.
rows() { grep -vE '^[[:space:]]*(#|$)' <<<"$STACK_TABLE"; }

GRPCURL="${GRPCURL:-$CACHE/bin/grpcurl}"
HEALTH_PROTO_DIR="$STATE/proto"

# health.proto is written locally so the check does not depend on server reflection.
write_health_proto() {
  mkdir -p "$HEALTH_PROTO_DIR"
  [[ -f "$HEALTH_PROTO_DIR/health.proto" ]] && return 0
  cat >"$HEALTH_PROTO_DIR/health.proto" <<'EOF'
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
EOF
}

healthy() {
  local addr="$1" out
  port_open "$addr" || return 1
  out="$("$GRPCURL" -plaintext -max-time 2 -import-path "$HEALTH_PROTO_DIR" -proto health.proto \
    "$addr" grpc.health.v1.Health/Check 2>&1)" || return 1
  grep -q '"SERVING"' <<<"$out"
}

binary_stamp() { stat -c '%Y %s' "$1" 2>/dev/null || echo missing; }

check_infra() {
  local missing=""
  port_open "127.0.0.1:$PG_PORT" || missing="$missing postgres(127.0.0.1:$PG_PORT)"
  port_open "127.0.0.1:$KAFKA_PORT" || missing="$missing kafka(127.0.0.1:$KAFKA_PORT)"
  port_open "127.0.0.1:$OTLP_GRPC_PORT" || missing="$missing jaeger(127.0.0.1:$OTLP_GRPC_PORT)"
  [[ -z "$missing" ]] || die "infrastructure is not up:$missing -- run scripts/infra.sh up"
  [[ -x "$GRPCURL" ]] || die "grpcurl not found at $GRPCURL -- run scripts/infra.sh install"
}

# The pid listening on ADDR (host:port), if `ss` can tell.
listener_pid() {
  ss -ltnpH "sport = :${1##*:}" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1
}

# ADDR is taken although our pid file names no live process. If the holder is the same
# program started from another checkout or state dir (e.g. a stale stack of an earlier
# session), stop it: its binary is not the one we were asked to run. Anything else: fail.
take_over_port() {
  local name="$1" binary="$2" addr="$3" holder exe
  holder="$(listener_pid "$addr")"
  exe="$(readlink "/proc/$holder/exe" 2>/dev/null || true)"
  if [[ -n "$holder" && "$(basename "${exe% (deleted)}")" == "$binary" ]]; then
    log "$name: $addr is held by pid $holder ($exe) from another state dir: stopping it"
    kill -TERM "$holder" 2>/dev/null || true
    local deadline=$((SECONDS + ${STACK_STOP_TIMEOUT:-15}))
    while pid_alive "$holder" && ((SECONDS < deadline)); do sleep 0.2; done
    pid_alive "$holder" && { kill -KILL "$holder" 2>/dev/null || true; sleep 0.3; }
    return 0
  fi
  die "$name: $addr is taken by another process (pid ${holder:-unknown} ${exe:-})"
}

stop_one() {
  local name="$1" pidfile="$RUN/$1.pid" pid deadline
  pid="$(read_pid "$pidfile")"
  if ! pid_alive "$pid"; then
    rm -f "$pidfile" "$RUN/$name.stamp"
    log "$name: not running"
    return 0
  fi
  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + ${STACK_STOP_TIMEOUT:-15}))
  while pid_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      log "$name: still running, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.3
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile" "$RUN/$name.stamp"
  log "$name: stopped"
}

start_one() {
  local name="$1" binary="$2" addr="$3"; shift 3
  local exe="$BIN_DIR/$binary" pidfile="$RUN/$name.pid" logfile="$LOGS/$name.log" pid
  [[ -x "$exe" ]] || die "$name: binary $exe not found -- build it with 'cargo build --bins' (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<unset>})"

  pid="$(read_pid "$pidfile")"
  if pid_alive "$pid"; then
    if [[ "$(cat "$RUN/$name.stamp" 2>/dev/null)" != "$(binary_stamp "$exe")" ]]; then
      log "$name: $exe was rebuilt since pid $pid started: restarting"
      stop_one "$name"
    elif healthy "$addr"; then
      log "$name: already running (pid $pid, $addr)"
      return 0
    else
      log "$name: pid $pid running but not healthy yet; waiting"
    fi
  fi

  pid="$(read_pid "$pidfile")"
  if ! pid_alive "$pid"; then
    port_open "$addr" && take_over_port "$name" "$binary" "$addr"
    local -a envs=()
    local kv
    for kv in $(expand "$COMMON_ENV") "$@"; do envs+=("$(expand "$kv")"); done
    rm -f "$pidfile"
    printf '\n===== %s starting at %s: %s =====\n' "$name" "$(date -Is)" "${envs[*]}" >>"$logfile"
    log "$name: starting $exe (log: $logfile)"
    binary_stamp "$exe" >"$RUN/$name.stamp"
    PIDFILE="$pidfile" setsid env "${envs[@]}" bash -c 'echo $$ >"$PIDFILE"; exec "$@"' _ "$exe" \
      </dev/null >>"$logfile" 2>&1 &
    for _ in $(seq 1 50); do [[ -s "$pidfile" ]] && break; sleep 0.1; done
    pid="$(read_pid "$pidfile")"
    [[ -n "$pid" ]] || die_log "$logfile" "$name: no pid after start"
  fi

  local deadline=$((SECONDS + STACK_TIMEOUT))
  until healthy "$addr"; do
    pid_alive "$pid" || die_log "$logfile" "$name: process $pid exited before becoming healthy"
    ((SECONDS < deadline)) || die_log "$logfile" "$name: not healthy on $addr after ${STACK_TIMEOUT}s"
    sleep 0.5
  done
  log "$name: healthy (pid $pid, $addr)"
}

cmd_up() {
  check_infra
  "$ROOT/scripts/infra.sh" reserve-ports
  mkdir -p "$LOGS" "$RUN"
  write_health_proto
  local name binary addr env
  while read -r name binary addr env; do
    # shellcheck disable=SC2086
    start_one "$name" "$binary" "$addr" $env
  done < <(rows)
  cmd_status
  cat <<EOF

Stack is up. Seed demo products and accounts once: make seed (scripts/seed.sh). Place an order:
  $GRPCURL -plaintext -d '{"customer_id":"customer-1","items":[{"product_id":"sku-widget","quantity":2}],"shipping_address":{"recipient":"Ada Lovelace","line1":"12 Analytical Way","city":"London","postal_code":"N1 9GU","country_code":"GB"},"idempotency_key":"demo-1"}' 127.0.0.1:50051 ordersaga.order.v1.OrderService/CreateOrder
Follow its saga (orderId and traceId come back from CreateOrder):
  $GRPCURL -plaintext -d '{"order_id":"<orderId>"}' 127.0.0.1:50051 ordersaga.order.v1.OrderService/GetOrder
  $GRPCURL -plaintext -d '{"order_id":"<orderId>"}' 127.0.0.1:50056 ordersaga.orchestrator.v1.OrchestratorService/GetSaga
Its trace, one for the whole saga:
  curl -s http://127.0.0.1:$JAEGER_QUERY_PORT/api/traces/<traceId>      (Jaeger query API)
  http://127.0.0.1:$JAEGER_QUERY_PORT/trace/<traceId>                  (Jaeger UI, where the Jaeger build ships it; the jaegertracing/jaeger image does)
Metrics: http://127.0.0.1:9181/metrics .. 9186 (services), 9190 (relay)
Logs: $LOGS/<name>.log (or scripts/infra.sh logs <name>)
EOF
}

cmd_down() {
  local -a names=()
  local name rest
  while read -r name rest; do names=("$name" "${names[@]}"); done < <(rows)
  for name in "${names[@]}"; do stop_one "$name"; done
}

cmd_status() {
  [[ -x "$GRPCURL" ]] && write_health_proto
  local name binary addr env pid st
  printf '%-21s %-8s %-18s %s\n' PROCESS PID ADDRESS STATE
  while read -r name binary addr env; do
    pid="$(read_pid "$RUN/$name.pid")"
    if ! pid_alive "$pid"; then
      st=down
    elif [[ -x "$GRPCURL" ]] && healthy "$addr"; then
      st=up
    else
      st=unhealthy
    fi
    printf '%-21s %-8s %-18s %s\n' "$name" "${pid:--}" "$addr" "$st"
  done < <(rows)
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
