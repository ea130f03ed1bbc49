#!/usr/bin/env bash
# End-to-end smoke test against a running stack (scripts/infra.sh up && scripts/stack.sh up):
#   1. CreateOrder through grpcurl (server reflection) returns an order id
#   2. GetOrder returns that order
#   3. an event keyed by the order id arrives on Kafka topic order.events.v1 (within 10 s)
#   4. that event carries the headers traceparent, message-id and message-type
#   5. the saga approves the order (the demo data of scripts/seed.sh is seeded first)
#   6. the order's one trace reached Jaeger with spans of all seven processes
# Ends with `smoke: N passed, M failed`; exits non-zero if anything failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${ORDERSAGA_STATE:-$ROOT/.local}"
eval "$("$ROOT/scripts/infra.sh" env)"

ORDER_ADDR="${ORDER_ADDR:-127.0.0.1:50051}"
EVENTS_TOPIC="${EVENTS_TOPIC:-order.events.v1}"
KAFKA_WAIT="${SMOKE_KAFKA_TIMEOUT:-10}"
TRACE_WAIT="${SMOKE_TRACE_TIMEOUT:-30}"  # the OTLP batch exporter flushes every ~5 s
TRACE_SERVICES="order-service orchestrator inventory-service payment-service shipment-service notification-service outbox-relay"
WORK="$STATE/smoke"
mkdir -p "$WORK"

now_ms() { local t="${EPOCHREALTIME/./}"; echo "${t:0:-3}"; }
passed=0
failed=0
skipped=0
log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { passed=$((passed + 1)); printf '[smoke] PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf '[smoke] FAIL %s\n' "$*"; }
finish() {
  [[ -n "${consumer_pid:-}" ]] && kill "$consumer_pid" 2>/dev/null || true
  if ((skipped > 0)); then
    printf 'smoke: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
  else
    printf 'smoke: %d passed, %d failed\n' "$passed" "$failed"
  fi
  if ((failed > 0)); then exit 1; fi
  exit 0
}

command -v jq >/dev/null || { log "jq is required"; fail "prerequisites"; finish; }
[[ -x "$GRPCURL" ]] || { log "grpcurl missing at $GRPCURL (scripts/infra.sh install)"; fail "prerequisites"; finish; }

# Start the consumer first: the JVM takes a couple of seconds to come up, and reading
# from the beginning means the event cannot be missed whenever it is published.
consumer_class="$("$ROOT/scripts/infra.sh" kafka-class \
  org.apache.kafka.tools.consumer.ConsoleConsumer kafka.tools.ConsoleConsumer)" ||
  { log "no ConsoleConsumer class in the Kafka jars"; fail "prerequisites"; finish; }
consumed="$WORK/consumed.txt"
: >"$consumed"
"$ROOT/scripts/infra.sh" kafka-java "$consumer_class" \
  --bootstrap-server "$KAFKA_BROKERS" --topic "$EVENTS_TOPIC" --from-beginning \
  --timeout-ms 60000 \
  --property print.key=true --property print.headers=true \
  --property key.separator=$'\t' --property headers.separator=',' \
  --property headers.key.separator=':' \
  >"$consumed" 2>"$WORK/consumer.err" &
consumer_pid=$!

log "seeding the demo products and accounts"
if "$ROOT/scripts/seed.sh" >"$WORK/seed.log" 2>&1; then
  pass "demo products and accounts seeded"
else
  cat "$WORK/seed.log" >&2
  fail "seeding"
  finish
fi

key="smoke-$(date +%s)-$$-$RANDOM"
request="$(jq -cn --arg key "$key" '{
  customer_id: "customer-1",
  items: [{product_id: "sku-widget", quantity: 2}],
  shipping_address: {recipient: "Ada Lovelace", line1: "12 Analytical Way", city: "London",
                     postal_code: "N1 9GU", country_code: "GB"},
  idempotency_key: $key}')"

# --- 1. CreateOrder
log "CreateOrder (idempotency_key $key)"
if ! created="$("$GRPCURL" -plaintext -max-time 10 -d "$request" "$ORDER_ADDR" \
    ordersaga.order.v1.OrderService/CreateOrder 2>&1)"; then
  printf '%s\n' "$created"
  fail "CreateOrder call"
  finish
fi
printf '%s\n' "$created"
# The id, wherever the response puts it: order_id/orderId at any depth, or order.id.
order_id="$(jq -r '[.. | objects | (.orderId?, .order_id?) | strings] + [.order?.id? | strings] | first // empty' \
  <<<"$created" 2>/dev/null || true)"
if [[ -n "$order_id" ]]; then
  pass "CreateOrder returned order id $order_id"
else
  fail "CreateOrder response has no order id"
  finish
fi

# --- 2. GetOrder
if got="$("$GRPCURL" -plaintext -max-time 10 -d "{\"order_id\":\"$order_id\"}" "$ORDER_ADDR" \
    ordersaga.order.v1.OrderService/GetOrder 2>&1)" && grep -qF "\"$order_id\"" <<<"$got"; then
  pass "GetOrder returned order $order_id"
else
  printf '%s\n' "$got"
  fail "GetOrder for $order_id"
fi

# --- 3. the event on Kafka, keyed by the order id
log "waiting up to ${KAFKA_WAIT}s for a $EVENTS_TOPIC message keyed $order_id"
deadline=$(($(now_ms) + KAFKA_WAIT * 1000))
line=""
while :; do
  # Lines are: headers <TAB> key <TAB> value
  line="$(awk -F'\t' -v k="$order_id" '$2 == k { print; exit }' "$consumed")"
  [[ -n "$line" ]] && break
  if ! kill -0 "$consumer_pid" 2>/dev/null; then
    log "console consumer exited early:"; tail -n 20 "$WORK/consumer.err" >&2
    break
  fi
  (($(now_ms) < deadline)) || break
  sleep 0.5
done
kill "$consumer_pid" 2>/dev/null || true
wait "$consumer_pid" 2>/dev/null || true
consumer_pid=""

headers=""
if [[ -n "$line" ]]; then
  pass "message keyed $order_id arrived on $EVENTS_TOPIC"
  headers="$(cut -f1 <<<"$line")"
  log "headers: $headers"
else
  fail "no message keyed $order_id on $EVENTS_TOPIC within ${KAFKA_WAIT}s ($(grep -c $'\t' "$consumed" || true) other messages seen)"
  tail -n 20 "$WORK/consumer.err" >&2 || true
fi

# --- 4. headers
if [[ -n "$line" ]]; then
  missing=""
  for h in traceparent message-id message-type; do
    grep -qE "(^|,)$h:" <<<"$headers" || missing="$missing $h"
  done
  if [[ -z "$missing" ]]; then
    pass "event headers include traceparent, message-id, message-type"
  else
    fail "event headers lack:$missing (got: $headers)"
  fi
fi

# --- 5. the saga's outcome
SAGA_WAIT="${SMOKE_SAGA_TIMEOUT:-30}"
log "waiting up to ${SAGA_WAIT}s for the saga to approve order $order_id"
deadline=$(($(now_ms) + SAGA_WAIT * 1000))
status=""
while :; do
  status="$("$GRPCURL" -plaintext -max-time 5 -d "{\"order_id\":\"$order_id\"}" "$ORDER_ADDR" \
    ordersaga.order.v1.OrderService/GetOrder 2>/dev/null | jq -r '.status // empty' 2>/dev/null || true)"
  [[ "$status" == ORDER_STATUS_APPROVED || "$status" == ORDER_STATUS_REJECTED ]] && break
  (($(now_ms) < deadline)) || break
  sleep 0.5
done
if [[ "$status" == ORDER_STATUS_APPROVED ]]; then
  pass "the saga approved order $order_id"
else
  fail "order $order_id is ${status:-unknown} after ${SAGA_WAIT}s, not approved"
fi

# --- 6. the request's trace reached Jaeger, with every process in it
trace_id="$(jq -r '[.. | objects | (.traceId?, .trace_id?) | strings] | first // empty' <<<"$created" 2>/dev/null || true)"
header_trace="$(tr ',' '\n' <<<"$headers" | sed -n 's/^traceparent:[0-9a-f]*-\([0-9a-f]*\)-.*/\1/p' | head -n1)"
[[ -n "$trace_id" ]] || trace_id="$header_trace"
if [[ -n "$header_trace" && -n "$trace_id" && "$header_trace" != "$trace_id" ]]; then
  log "note: the event's traceparent carries trace $header_trace, CreateOrder answered trace $trace_id"
fi
if [[ -z "$trace_id" ]]; then
  log "no trace id in the CreateOrder response nor in the event headers: trace check skipped"
  skipped=$((skipped + 1))
else
  log "waiting up to ${TRACE_WAIT}s for trace $trace_id in Jaeger"
  deadline=$(($(now_ms) + TRACE_WAIT * 1000))
  services=""
  while :; do
    services="$(curl -fsS --max-time 3 "$JAEGER_QUERY_URL/api/traces/$trace_id" 2>/dev/null |
      jq -r '[.data[]?.processes[]?.serviceName] | unique | join(",")' 2>/dev/null || true)"
    missing=""
    for want in $TRACE_SERVICES; do
      [[ ",$services," == *",$want,"* ]] || missing="$missing $want"
    done
    [[ -z "$missing" ]] && break
    (($(now_ms) < deadline)) || break
    sleep 1
  done
  if [[ -z "$missing" ]]; then
    pass "trace $trace_id is in Jaeger with every process (services: $services)"
  else
    fail "trace $trace_id lacks spans of:$missing after ${TRACE_WAIT}s (has: ${services:-none})"
  fi
  log "trace: $JAEGER_QUERY_URL/api/traces/$trace_id"
fi
finish
