#!/usr/bin/env bash
# The saga benchmark (docs/benchmarks.md, "Saga throughput and latency").
#
#   scripts/bench.sh          build release binaries, start the stack with them, seed the
#                             load generator's products and accounts, then run
#                               (a) 50 orders/s for 60 s    targets: saga p50 <= 30 ms, p99 <= 100 ms
#                               (c) 30 s steps at 75, 100, 150, 200, 300, 400 orders/s, stopping at the first
#                                   that misses (rate kept, every saga ended, p99 <= 500 ms): the
#                                   sustainable rate is the last step met
#                               (d) twice the highest step sustained (twice 50/s if none) for
#                                   60 s, draining up to BENCH_OVERLOAD_DRAIN s: every saga must
#                                   end (nothing lost) and every service stay under 100 MB RSS
#                               (b) 500 orders/s for 60 s   targets: >= 500 sagas/s, p99 <= 500 ms
#                             and write the results block of the saga section of docs/benchmarks.md.
#                             The steps come before (b) because an overloaded run leaves a backlog
#                             (sagas in flight, timed-out steps being retried) that would poison
#                             every later run; before each run the script waits until the orders
#                             of earlier runs are no longer pending (BENCH_SETTLE_TIMEOUT).
#
# Every run is bounded (its duration plus the drain timeout) and talks only to 127.0.0.1.
# Knobs (environment):
#   BENCH_PROFILE        release | debug (release)    BENCH_DURATION     seconds of (a), (b) (60)
#   BENCH_SOURCE         worktree: build this checkout as it is (default); head: build the last
#                        commit (git archive) in .local/bench/src with its own target dir
#                        (BENCH_TARGET_DIR, ~/.cache/ordersaga/bench-target), so edits in
#                        progress in a shared checkout do not enter the measured binaries
#   BENCH_COMMIT         with BENCH_SOURCE=head: the commit to build (HEAD)
#   BENCH_LOW_RATE       (50)                         BENCH_HIGH_RATE    (500)
#   BENCH_MIX            happy=90,out_of_stock=5,insufficient_funds=3,undeliverable=2
#   BENCH_SEED           (1)                          BENCH_DRAIN_TIMEOUT seconds (30)
#   BENCH_SEARCH         1 runs the steps (c) (1)     BENCH_SETTLE_TIMEOUT seconds (180)
#   BENCH_SEARCH_RATES   ("75 100 150 200 300 400")          BENCH_SEARCH_DURATION (30)
#   BENCH_RUST_LOG       the services' RUST_LOG (info, as `make up`)
#   BENCH_WRITE_DOCS     1 updates docs/benchmarks.md (1)
#   BENCH_OUT            where reports, plots and logs go (.local/bench/saga-<UTC time>)
#   BENCH_ONLY           which of "low steps twice high" to run (all four, the default)
#   BENCH_OVERLOAD_DRAIN seconds the twice-the-sustainable run waits for its sagas (300)
#   BENCH_EXTRA_REPORTS  JSON reports of earlier runs to show beside this run's (space-separated)
#   BENCH_WARMUP         seconds at BENCH_LOW_RATE before the first measured run, not
#                        recorded: connections, consumer groups, the JVM's JIT (20; 0 skips)
#   BENCH_KAFKA          shared: the broker of scripts/infra.sh (default); own: a broker of its
#                        own on BENCH_KAFKA_PORT (19392, controller +1; below the ephemeral port
#                        range, which a busy machine's outgoing connections use) started with infra.sh
#                        under .local/bench/kafka, with the topics of config/topics.txt and
#                        nothing else, stopped again at the end together with the stack
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="${ORDERSAGA_STATE:-$ROOT/.local}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$CARGO_TARGET_DIR" = /* ]] || CARGO_TARGET_DIR="$ROOT/$CARGO_TARGET_DIR"
CARGO="${CARGO:-cargo}"

PROFILE="${BENCH_PROFILE:-release}"
SOURCE="${BENCH_SOURCE:-worktree}"
DURATION="${BENCH_DURATION:-60}"
LOW_RATE="${BENCH_LOW_RATE:-50}"
HIGH_RATE="${BENCH_HIGH_RATE:-500}"
MIX="${BENCH_MIX:-happy=90,out_of_stock=5,insufficient_funds=3,undeliverable=2}"
SEED="${BENCH_SEED:-1}"
DRAIN="${BENCH_DRAIN_TIMEOUT:-30}"
SEARCH="${BENCH_SEARCH:-1}"
SEARCH_RATES="${BENCH_SEARCH_RATES:-75 100 150 200 300 400}"
SETTLE_TIMEOUT="${BENCH_SETTLE_TIMEOUT:-180}"
SEARCH_DURATION="${BENCH_SEARCH_DURATION:-30}"
WRITE_DOCS="${BENCH_WRITE_DOCS:-1}"
ONLY="${BENCH_ONLY:-low steps twice high}"
OVERLOAD_DRAIN="${BENCH_OVERLOAD_DRAIN:-300}"
KAFKA_MODE="${BENCH_KAFKA:-shared}"
OWN_KAFKA_PORT="${BENCH_KAFKA_PORT:-19392}"
OWN_KAFKA_STATE="$STATE/bench/kafka"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${BENCH_OUT:-$STATE/bench/saga-$STAMP}"
DOC="$ROOT/docs/benchmarks.md"
BEGIN_MARK='<!-- saga-bench:begin (written by scripts/bench.sh; edit outside the markers) -->'
END_MARK='<!-- saga-bench:end -->'

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

case "$PROFILE" in
  release) BUILD=("$CARGO" build --release --bins) ;;
  debug) BUILD=("$CARGO" build --bins) ;;
  *) die "BENCH_PROFILE must be release or debug, not $PROFILE" ;;
esac
mkdir -p "$OUT"

log "infrastructure"
case "$KAFKA_MODE" in
  shared) scripts/infra.sh up ;;
  own)
    scripts/infra.sh up postgres jaeger
    log "a fresh Kafka broker of the benchmark's own on 127.0.0.1:$OWN_KAFKA_PORT"
    # Fresh every time: no backlog or committed offsets of an earlier benchmark.
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$OWN_KAFKA_PORT" 2>/dev/null; then
      die "127.0.0.1:$OWN_KAFKA_PORT is taken: stop what listens there or set BENCH_KAFKA_PORT"
    fi
    rm -rf "$OWN_KAFKA_STATE"
    ORDERSAGA_STATE="$OWN_KAFKA_STATE" KAFKA_PORT="$OWN_KAFKA_PORT" \
      KAFKA_CONTROLLER_PORT="$((OWN_KAFKA_PORT + 1))" scripts/infra.sh up kafka
    ;;
  *) die "BENCH_KAFKA must be shared or own, not $KAFKA_MODE" ;;
esac
eval "$(scripts/infra.sh env)"
PG_BASE="${ORDERSAGA_PG_URL_BASE:-postgres://postgres@127.0.0.1:55432}"
if [[ "$KAFKA_MODE" == own ]]; then
  export KAFKA_PORT="$OWN_KAFKA_PORT" KAFKA_BROKERS="127.0.0.1:$OWN_KAFKA_PORT"
  # The running stack may point at another broker: start it afresh on this one.
  scripts/stack.sh down >"$OUT/stack-down.log" 2>&1 || true
fi
finish() {
  if [[ "$KAFKA_MODE" == own ]]; then
    log "stopping the stack and the benchmark's broker (make up starts the usual ones)"
    scripts/stack.sh down >>"$OUT/stack-down.log" 2>&1 || true
    ORDERSAGA_STATE="$OWN_KAFKA_STATE" KAFKA_PORT="$OWN_KAFKA_PORT" \
      KAFKA_CONTROLLER_PORT="$((OWN_KAFKA_PORT + 1))" scripts/infra.sh down kafka || true
  fi
}
trap finish EXIT

commit="$(git rev-parse "${BENCH_COMMIT:-HEAD}")"
git_rev="$(git rev-parse --short "$commit" 2>/dev/null || echo unknown)"
case "$SOURCE" in
  worktree)
    git diff --quiet HEAD -- 2>/dev/null || git_rev="$git_rev with uncommitted changes"
    log "building the checkout ($PROFILE): ${BUILD[*]}"
    "${BUILD[@]}"
    ;;
  head)
    src="$STATE/bench/src"
    export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/ordersaga/bench-target}"
    log "building commit $git_rev ($PROFILE) in $src, target $CARGO_TARGET_DIR"
    if [[ "$(cat "$src/.bench-commit" 2>/dev/null)" != "$commit" ]]; then
      rm -rf "$src" && mkdir -p "$src"
      git archive "$commit" | tar -x -m -C "$src"
      echo "$commit" >"$src/.bench-commit"
    fi
    (cd "$src" && "${BUILD[@]}")
    ;;
  *) die "BENCH_SOURCE must be worktree or head, not $SOURCE" ;;
esac
LOADGEN="$CARGO_TARGET_DIR/$PROFILE/loadgen"
[[ -x "$LOADGEN" ]] || die "$LOADGEN was not built"

log "stack ($PROFILE binaries)"
if ! grep -q 'STACK_PROFILE' scripts/stack.sh; then
  die "scripts/stack.sh cannot run $PROFILE binaries (no STACK_PROFILE); use BENCH_PROFILE=debug"
fi
# Up to three tries: the services' ports lie in the kernel's ephemeral range, so on a busy
# machine an outgoing connection of another process can hold one for a moment.
for attempt in 1 2 3; do
  if STACK_PROFILE="$PROFILE" STACK_RUST_LOG="${BENCH_RUST_LOG:-info}" scripts/stack.sh up >"$OUT/stack-up.log" 2>&1; then
    break
  fi
  ((attempt < 3)) || { tail -n 40 "$OUT/stack-up.log" >&2; die "the stack did not come up"; }
  log "the stack did not come up (try $attempt): $(grep -m1 -o 'cannot listen on [0-9.:]*' "$OUT/stack-up.log" || echo see stack-up.log); retrying"
  sleep 5
done
STACK_PROFILE="$PROFILE" scripts/stack.sh status | tee "$OUT/stack-status.txt" >&2
for needed in order-service inventory-service payment-service shipment-service orchestrator outbox-relay; do
  grep -qE "^${needed}[[:space:]].*[[:space:]]up$" "$OUT/stack-status.txt" \
    || die "$needed is not up: the saga cannot complete without it"
done

log "seeding products and accounts"
"$LOADGEN" seed | tee "$OUT/seed.txt" >&2

psql_q() { psql "$PG_BASE/postgres" -XAtq -c "$1" 2>/dev/null || true; }

# Commits of every database and the WAL flushes of the server, for rates per run.
pg_counters() {
  psql_q "select (select sum(xact_commit) from pg_stat_database), wal_sync, wal_write, wal_bytes from pg_stat_wal"
}

# pg_stat_statements (loaded by scripts/infra.sh): reset before a run, then per database
# the statements executed and their execution time, for statements and time per saga.
pg_statements_reset() {
  psql_q "create extension if not exists pg_stat_statements" >/dev/null
  psql_q "select pg_stat_statements_reset()" >/dev/null
}
pg_statements() {
  psql_q "select d.datname, sum(s.calls), round(sum(s.total_exec_time)::numeric, 1)
          from pg_stat_statements s join pg_database d on d.oid = s.dbid
          where d.datname like '%_db' group by 1 order by 3 desc"
}
pg_top_statements() {
  psql_q "select d.datname, s.calls, round(s.total_exec_time::numeric, 1),
                 round((s.total_exec_time / s.calls)::numeric, 3),
                 left(regexp_replace(s.query, '\s+', ' ', 'g'), 100)
          from pg_stat_statements s join pg_database d on d.oid = s.dbid
          where d.datname like '%_db' order by s.total_exec_time desc limit 15"
}

# Samples what active PostgreSQL sessions wait for, once a second, until the file $1 goes.
pg_waits() {
  local flag="$1" file="$2" deadline=$((SECONDS + DURATION + ${RUN_DRAIN:-$DRAIN} + 120))
  while [[ -e "$flag" ]] && ((SECONDS < deadline)); do
    psql_q "select coalesce(wait_event_type || ':' || wait_event, 'CPU (no wait)') from pg_stat_activity
            where state = 'active' and backend_type = 'client backend' and pid <> pg_backend_pid()" >>"$file"
    sleep 1
  done
}

# The stack's pid files (and the infrastructure's); with a broker of our own, its pid
# file comes last so that its "kafka" replaces the shared broker's.
WATCH_DIRS="$STATE/run"
[[ "$KAFKA_MODE" == own ]] && WATCH_DIRS="$STATE/run,$OWN_KAFKA_STATE/run"
RUN_FILES=()
pending_orders() {
  psql "$PG_BASE/order_db" -XAtq -c "select count(*) from orders where status = 'PENDING'" 2>/dev/null || echo 0
}
# Waits until no more orders are pending than before the first run (bounded); 1 if not.
BASELINE_PENDING=""
settle() {
  local deadline=$((SECONDS + SETTLE_TIMEOUT)) pending
  [[ -n "$BASELINE_PENDING" ]] || BASELINE_PENDING="$(pending_orders)"
  while :; do
    pending="$(pending_orders)"
    ((pending <= BASELINE_PENDING)) && return 0
    if ((SECONDS >= deadline)); then
      log "$((pending - BASELINE_PENDING)) orders of earlier runs still pending after ${SETTLE_TIMEOUT}s"
      return 1
    fi
    sleep 2
  done
}
# run NAME LABEL RATE SECONDS [loadgen targets...]: one bounded open-loop run.
run_one() {
  local name="$1" label="$2" rate="$3" seconds="$4"; shift 4
  local flag="$OUT/$name.sampling"
  settle || log "run $label starts on a backlog: its figures include the earlier runs' work"
  log "run $label: $rate orders/s for $seconds s (mix $MIX)"
  local before after
  before="$(pg_counters)"
  pg_statements_reset
  touch "$flag"
  pg_waits "$flag" "$OUT/$name.pgwaits" &
  local sampler=$!
  local status=0
  "$LOADGEN" run \
    --label "$label" --rate "$rate" --duration "$seconds" --mix "$MIX" --seed "$SEED" \
    --drain-timeout "${RUN_DRAIN:-$DRAIN}" --progress log \
    --watch-pid-dir "$WATCH_DIRS" --watch-comm postgres=postgres \
    --target-rss-mb 100 \
    --json "$OUT/$name.json" --plot "$OUT/$name.png" "$@" \
    >"$OUT/$name.txt" 2>"$OUT/$name.progress" || status=$?
  rm -f "$flag"
  wait "$sampler" 2>/dev/null || true
  after="$(pg_counters)"
  pg_statements >"$OUT/$name.pgstatements"
  pg_top_statements >"$OUT/$name.pgtop"
  cat "$OUT/$name.txt" >&2
  ((status == 0)) || die "loadgen failed for $label (exit $status; see $OUT/$name.progress)"
  RUN_FILES+=("$OUT/$name.json")
  {
    printf '%s\t%s\t%s\t%s\n' "$name" "$label" "$before" "$after"
  } >>"$OUT/pg-counters.tsv"
  # Let the stack settle (notifications, relay rounds) before the next run.
  sleep 5
}

# Whether a run met its rate, latency and completeness targets (memory is reported, not searched on).
met() {
  "$LOADGEN" targets "$1" --only "send rate kept" --only "every saga ended" \
    --only "completed sagas/s" --only "saga p" >/dev/null
}

BASELINE_PENDING="$(pending_orders)"
WARMUP="${BENCH_WARMUP:-20}"
if ((WARMUP > 0)); then
  log "warm-up: $LOW_RATE orders/s for $WARMUP s (not recorded)"
  "$LOADGEN" run --label warm-up --rate "$LOW_RATE" --duration "$WARMUP" --mix "$MIX" --seed "$((SEED + 1))" \
    --drain-timeout "$DRAIN" --progress off >"$OUT/warm-up.txt" 2>&1 || log "warm-up failed (see $OUT/warm-up.txt)"
fi
if [[ " $ONLY " == *" low "* ]]; then
  run_one low "$LOW_RATE/s" "$LOW_RATE" "$DURATION" --target-p50-ms 30 --target-p99-ms 100
fi
if [[ " $ONLY " == *" steps "* ]]; then
  if [[ "$SEARCH" == 1 ]]; then
    sustained="none of the steps"
    for rate in $SEARCH_RATES; do
      ((rate < HIGH_RATE)) || break
      run_one "step-$rate" "$rate/s" "$rate" "$SEARCH_DURATION" --target-rate "$rate" --target-p99-ms 500
      if met "$OUT/step-$rate.json"; then
        sustained="$rate/s"
      else
        log "$rate/s missed: the sustainable rate is below it"
        break
      fi
    done
    log "highest step sustained: $sustained"
  fi
fi
if [[ " $ONLY " == *" twice "* ]]; then
  # Twice the highest step sustained (twice LOW_RATE when no step was), with a drain
  # long enough for every saga to end: latency rises, memory must stay bounded and no
  # saga may be lost.
  base="${sustained%/s}"
  [[ "$base" =~ ^[0-9]+$ ]] || base="$LOW_RATE"
  twice=$((2 * base))
  RUN_DRAIN="$OVERLOAD_DRAIN" run_one twice "${twice}/s (twice ${base}/s)" "$twice" "$DURATION"
fi
if [[ " $ONLY " == *" high "* ]]; then
  run_one high "$HIGH_RATE/s" "$HIGH_RATE" "$DURATION" --target-rate "$HIGH_RATE" --target-p99-ms 500
fi

# ---------------------------------------------------------------------------
# The results block.

pg_setting() { psql_q "show $1"; }
mem_line="$(free -m | awk '/^Mem:/ {printf "total %s MB, used %s MB, available %s MB", $2, $3, $7}')"

pg_rates() {
  # name label commits0 sync0 write0 bytes0 commits1 sync1 write1 bytes1, separated by | and tabs
  local name label before after json seconds
  while IFS=$'\t' read -r name label before after; do
    json="$OUT/$name.json"
    seconds="$(sed -n 's/.*"send_seconds": \([0-9.]*\).*/\1/p' "$json" | head -n1)"
    IFS='|' read -r c0 s0 w0 b0 <<<"$before"
    IFS='|' read -r c1 s1 w1 b1 <<<"$after"
    local waits=""
    if [[ -s "$OUT/$name.pgwaits" ]]; then
      waits="$(sort "$OUT/$name.pgwaits" | uniq -c | sort -rn | head -n 5 \
        | awk '{n=$1; $1=""; sub(/^ /, ""); printf "%s%s %s", (NR>1 ? ", " : ""), $0, n}')"
    fi
    awk -v label="$label" -v secs="$seconds" -v c0="${c0:-0}" -v c1="${c1:-0}" -v s0="${s0:-0}" \
      -v s1="${s1:-0}" -v b0="${b0:-0}" -v b1="${b1:-0}" -v waits="${waits:-none sampled}" 'BEGIN {
        # The counters span the run and its drain; divide by the send window for a rate.
        printf "- %s: %.0f commits/s, %.0f WAL flushes/s, %.1f MB/s of WAL (run and drain, per second of sending); sessions seen waiting (samples): %s\n",
          label, (c1 - c0) / secs, (s1 - s0) / secs, (b1 - b0) / secs / 1048576, waits }'
    # Statements and their execution time per saga ended (run and drain), by database.
    local ended
    ended="$(sed -n 's/.*"completed": \([0-9]*\).*/\1/p' "$json" | head -n1)"
    if [[ -s "$OUT/$name.pgstatements" && "${ended:-0}" -gt 0 ]]; then
      awk -F'|' -v ended="$ended" '
        { calls += $2; ms += $3; by = by sprintf("%s%s %.2f ms (%.1f)", (NR > 1 ? ", " : ""), $1, $3 / ended, $2 / ended) }
        END { printf "  statements per saga: %.1f, executing %.2f ms of the server'"'"'s time; by database, ms (statements): %s\n", calls / ended, ms / ended, by }' \
        "$OUT/$name.pgstatements"
    fi
  done <"$OUT/pg-counters.tsv"
}

block="$OUT/results.md"
{
  echo "$BEGIN_MARK"
  echo
  echo "#### Latest results: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh); reports, plots and logs in \`${OUT#"$ROOT"/}\`."
  echo
  echo "- Machine: \`nproc\` $(nproc); memory (\`free -m\`) $mem_line; $(uname -sr); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "- Binaries: $PROFILE (\`STACK_PROFILE=$PROFILE\`) built from commit $git_rev; services log at \`${BENCH_RUST_LOG:-info}\` to files, spans exported to the local Jaeger."
  echo "- PostgreSQL $(pg_setting server_version): fsync $(pg_setting fsync), synchronous_commit $(pg_setting synchronous_commit), shared_buffers $(pg_setting shared_buffers), max_connections $(pg_setting max_connections); one server for all six databases."
  if [[ "$KAFKA_MODE" == own ]]; then
    echo "- Kafka: one KRaft broker ($(basename "$(dirname "${ORDERSAGA_KAFKA_LIBS:-unknown/libs}")")) of the benchmark's own (\`BENCH_KAFKA=own\`, 512 MB heap), holding only the topics of config/topics.txt."
  else
    echo "- Kafka: the shared KRaft broker of scripts/infra.sh ($(basename "$(dirname "${ORDERSAGA_KAFKA_LIBS:-unknown/libs}")")), with the topics of config/topics.txt and whatever the test suites created."
  fi
  echo "- Load: open loop, mix \`$MIX\`, seed $SEED, 100 products, 1000 customers, 4 HTTP/2 connections, drain timeout $DRAIN s."
  [[ -z "${sustained:-}" ]] || echo "- Highest step sustained (rate kept, every saga ended, p99 <= 500 ms): $sustained."
  echo
  # shellcheck disable=SC2086
  "$LOADGEN" markdown "${RUN_FILES[@]}" ${BENCH_EXTRA_REPORTS:-}
  echo
  echo "PostgreSQL during each run:"
  echo
  pg_rates
  echo
  echo "$END_MARK"
} >"$block"

if [[ "$WRITE_DOCS" == 1 ]]; then
  if grep -qF "$BEGIN_MARK" "$DOC" && grep -qF "$END_MARK" "$DOC"; then
    awk -v block="$block" -v begin="$BEGIN_MARK" -v end="$END_MARK" '
      $0 == begin { while ((getline line < block) > 0) print line; skipping = 1; next }
      $0 == end { skipping = 0; next }
      !skipping { print }' "$DOC" >"$DOC.tmp"
    mv "$DOC.tmp" "$DOC"
  else
    { echo; cat "$block"; } >>"$DOC"
  fi
  log "results written to docs/benchmarks.md"
fi
cat "$block"
if [[ "$KAFKA_MODE" == shared ]]; then
  log "done; the stack keeps running the $PROFILE binaries (make up restarts the debug ones)"
fi
