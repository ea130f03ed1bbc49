#!/usr/bin/env bash
# Mutations are literal text: `$` inside single quotes is meant.
# shellcheck disable=SC2016
# Proves that scripts/check-deploy.sh catches breakage: copies the deployment files to a
# temporary directory, breaks them one way at a time, and asserts that the check meant to
# catch it fails (and that the untouched copy passes). Uses the fake help texts in
# scripts/testdata/check-deploy/help instead of building the binaries.
#
#   scripts/check-deploy-selftest.sh
#
# Ends with `check-deploy-selftest: N passed, M failed`.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ORDERSAGA_CACHE=${ORDERSAGA_CACHE:-$HOME/.cache/ordersaga}
PRISTINE=$(mktemp -d)
CASE_DIR=$(mktemp -d)
trap 'rm -rf "$PRISTINE" "$CASE_DIR"' EXIT

FILES=(
    Dockerfile .dockerignore docker-compose.yml config deploy
    scripts/check-deploy.sh scripts/check-deploy-selftest.sh scripts/deploy_checks.py scripts/testdata
)
for f in "${FILES[@]}"; do
    mkdir -p "$PRISTINE/$(dirname "$f")"
    cp -R "$ROOT/$f" "$PRISTINE/$f"
done

passed=0
failed=0

fresh_copy() {
    rm -rf "$CASE_DIR/repo"
    cp -R "$PRISTINE" "$CASE_DIR/repo"
    cd "$CASE_DIR/repo" || exit 1
}

run_checker() {
    CHECK_DEPLOY_HELP_DIR=$CASE_DIR/repo/scripts/testdata/check-deploy/help \
        bash scripts/check-deploy.sh >"$CASE_DIR/out" 2>&1
}

record() {
    local verdict=$1 name=$2
    if [ "$verdict" = pass ]; then
        passed=$((passed + 1))
        echo "ok    $name"
    else
        failed=$((failed + 1))
        echo "FAIL  $name"
        sed 's/^/      /' "$CASE_DIR/out" | tail -40
    fi
}

# yq-free YAML edits: python with PyYAML from the checker's virtualenv.
py() {
    "$ORDERSAGA_CACHE/venv/bin/python" - "$@"
}

# expect_failure NAME CHECK_PATTERN MUTATION...: the mutation must make the check whose
# name matches CHECK_PATTERN fail, and check-deploy exit non-zero.
expect_failure() {
    local name=$1 pattern=$2
    shift 2
    fresh_copy
    if ! "$@"; then
        echo "mutation failed" >"$CASE_DIR/out"
        record fail "$name"
        return
    fi
    if run_checker; then
        echo "check-deploy passed although: $name" >>"$CASE_DIR/out"
        record fail "$name"
    elif ! grep -E "^FAIL  .*($pattern)" "$CASE_DIR/out" >/dev/null; then
        echo "check-deploy failed, but not in a check matching /$pattern/" >>"$CASE_DIR/out"
        record fail "$name"
    elif ! tail -n1 "$CASE_DIR/out" | grep -E '^check-deploy: [0-9]+ passed, [1-9][0-9]* failed$' >/dev/null; then
        echo "the summary line does not count the failure" >>"$CASE_DIR/out"
        record fail "$name"
    else
        record pass "$name"
    fi
}

# ---------------------------------------------------------------- mutations

replace() { # FILE OLD NEW: replace the first occurrence, failing if OLD is absent
    py "$@" <<'EOF'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if old not in text:
    sys.exit(f"{old!r} not in {path}")
open(path, "w").write(text.replace(old, new, 1))
EOF
}

compose_edit() { # PYTHON_STATEMENT on `c`, the parsed docker-compose.yml
    py "$1" <<'EOF'
import sys, yaml
c = yaml.safe_load(open("docker-compose.yml"))
exec(sys.argv[1])
yaml.safe_dump(c, open("docker-compose.yml", "w"), sort_keys=False)
EOF
}

# ---------------------------------------------------------------- cases

fresh_copy
if run_checker && tail -n1 "$CASE_DIR/out" | grep -E '^check-deploy: [0-9]+ passed, 0 failed$' >/dev/null; then
    record pass "the untouched copy passes"
else
    record fail "the untouched copy passes"
fi

# Kubernetes manifests
expect_failure "unknown field in a container" "kubernetes-validate.*overlay dev" \
    replace deploy/base/order-service/deployment.yaml "imagePullPolicy: IfNotPresent" "imagePullPolicy: IfNotPresent
          restartPolicyy: Always"
expect_failure "wrong type in a manifest (replicas: two)" "kubernetes-validate.*overlay production" \
    replace deploy/base/outbox-relay/deployment.yaml "replicas: 2" "replicas: two"
expect_failure "missing required field (grpc probe without port)" "kubernetes-validate" \
    replace deploy/base/outbox-relay/deployment.yaml "grpc:
              port: 50060" "grpc:
              service: health"
expect_failure "kustomization that does not render" "kubernetes-validate.*overlay dev" \
    replace deploy/overlays/dev/kustomization.yaml "- jaeger.yaml" "- jaeger-missing.yaml"
expect_failure "writable root filesystem" "kubernetes rules" \
    replace deploy/base/order-service/deployment.yaml "readOnlyRootFilesystem: true" "readOnlyRootFilesystem: false"
expect_failure "capabilities not dropped" "kubernetes rules" \
    replace deploy/base/outbox-relay/deployment.yaml 'drop: ["ALL"]' 'drop: ["NET_RAW"]'
expect_failure "liveness probe that is not gRPC" "kubernetes rules" \
    replace deploy/base/order-service/deployment.yaml "livenessProbe:
            grpc:
              port: 50051" "livenessProbe:
            tcpSocket:
              port: 50051"
expect_failure "no memory limit" "kubernetes rules" \
    replace deploy/base/outbox-relay/deployment.yaml "              memory: 256Mi" ""
expect_failure "Secret key that the dev Secret lacks" "kubernetes rules: overlay dev" \
    replace deploy/base/order-service/deployment.yaml "key: order-service-database-url" "key: order-database-url"
expect_failure "Secret that production does not declare" "kubernetes rules: overlay production" \
    replace deploy/overlays/production/external-secrets.txt "ordersaga-db order-service-database-url" "ordersaga-db"
expect_failure "Service selector matching no pod" "kubernetes rules" \
    replace deploy/base/order-service/service.yaml "selector:
    app.kubernetes.io/name: order-service" "selector:
    app.kubernetes.io/name: orders"
expect_failure "no default-deny NetworkPolicy" "kubernetes rules" \
    replace deploy/base/kustomization.yaml "- network-policies.yaml" ""
expect_failure "pod annotation pointing Prometheus at the wrong port" "kubernetes rules" \
    replace deploy/base/orchestrator/deployment.yaml 'prometheus.io/port: "9090"' 'prometheus.io/port: "9091"'
expect_failure "METRICS_LISTEN_ADDR not on the metrics port" "kubernetes rules" \
    replace deploy/base/kustomization.yaml "METRICS_LISTEN_ADDR=0.0.0.0:9090" "METRICS_LISTEN_ADDR=0.0.0.0:9100"
expect_failure "no policy admitting metrics scrapes" "kubernetes rules" \
    replace deploy/base/network-policies.yaml "port: 9090" "port: 9091"
expect_failure "egress to Kafka not allowed" "kubernetes rules: overlay production" \
    replace deploy/base/network-egress.yaml "port: 9092" "port: 9093"
expect_failure "egress to DNS not allowed" "kubernetes rules" \
    replace deploy/base/network-egress.yaml "protocol: UDP" "protocol: SCTP"
expect_failure "dev PostgreSQL not admitting the services" "kubernetes rules: overlay dev" \
    replace deploy/overlays/dev/network-policies.yaml "values: [grpc-service, relay]" "values: [relay]"
expect_failure "dev egress narrowed to the wrong pods" "kubernetes rules: overlay dev" \
    replace deploy/overlays/dev/kustomization.yaml "app.kubernetes.io/name: jaeger" "app.kubernetes.io/name: otel-collector"
expect_failure "topics ConfigMap not from config/topics.txt" "topics ConfigMap" \
    replace config/kustomization.yaml "- topics.txt" "- topics.txt=kustomization.yaml"

# Compose
expect_failure "unknown key in a compose service" "compose schema" \
    compose_edit 'c["services"]["order-service"]["restart_policy"] = "always"'
expect_failure "unknown top-level key in compose" "compose schema" \
    compose_edit 'c["service"] = {}'
expect_failure "wrong type in compose (command: 5)" "compose schema" \
    compose_edit 'c["services"]["order-service"]["command"] = 5'
expect_failure "value outside an enum in compose" "compose schema" \
    compose_edit 'c["services"]["outbox-relay"]["depends_on"]["kafka"]["condition"] = "service_ready"'
expect_failure "port published on all interfaces" "compose rules" \
    compose_edit 'c["services"]["order-service"]["ports"] = ["50051:50051"]'
expect_failure "depends_on a service without healthcheck" "compose rules" \
    compose_edit 'del c["services"]["postgres"]["healthcheck"]'
expect_failure "bind mount of a missing file" "compose rules" \
    compose_edit 'c["services"]["topic-init"]["volumes"][0] = "./config/topic.txt:/etc/ordersaga/topics/topics.txt:ro"'

# Configuration drift
expect_failure "variable missing in compose" "config drift: docker-compose.yml" \
    compose_edit 'del c["services"]["order-service"]["environment"]["DATABASE_POOL_SIZE"]'
expect_failure "extra variable in compose" "config drift: docker-compose.yml" \
    compose_edit 'c["services"]["outbox-relay"]["environment"]["RELAY_BATCH"] = "10"'
expect_failure "variable missing in the manifests" "config drift: overlay dev" \
    replace deploy/base/order-service/kustomization.yaml "- DATABASE_POOL_SIZE=16" ""
expect_failure "extra variable in the manifests" "config drift: overlay production" \
    replace deploy/base/outbox-relay/kustomization.yaml "- RELAY_BATCH_SIZE=1000" "- RELAY_BATCH_SIZE=1000
      - RELAY_BATCH_LIMIT=1000"
expect_failure "extra variable only in one overlay" "config drift: overlay production" \
    replace deploy/overlays/production/kustomization.yaml "- LOG_FORMAT=json" "- LOG_FORMAT=json
      - OTEL_TRACES_SAMPLER=parentbased_traceidratio"
expect_failure "binary reads a new variable" "config drift" \
    replace scripts/testdata/check-deploy/help/order-service.txt "  -h, --help" "      --request-timeout <SECS>
          Per-request deadline [env: REQUEST_TIMEOUT_SECONDS=] [default: 5]
  -h, --help"
expect_failure "binary without a compose service" "config drift: docker-compose.yml" \
    compose_edit 'del c["services"]["notification-service"]; del c["services"]["outbox-relay"]["depends_on"]["notification-service"]'
expect_failure "binary without a Kubernetes workload" "config drift: overlay dev" \
    replace deploy/base/kustomization.yaml "  - shipment-service
" ""
expect_failure "setting of a new service missing in the manifests" "config drift: overlay production" \
    replace deploy/base/orchestrator/kustomization.yaml "      - SAGA_DEADLINE_SCAN_BATCH=100
" ""
expect_failure "container running the wrong binary" "config drift: overlay dev" \
    replace deploy/base/outbox-relay/deployment.yaml 'command: ["outbox-relay"]' 'command: ["order-service"]'

# Cross-file consistency
expect_failure "relay not reading a service database" "databases" \
    compose_edit 'c["services"]["outbox-relay"]["environment"]["RELAY_DATABASE_URLS"] = "postgres://ordersaga:ordersaga@postgres:5432/inventory_db"'
expect_failure "relay not reading a service database (dev Secret)" "databases" \
    replace deploy/overlays/dev/kustomization.yaml ",postgres://ordersaga:ordersaga-dev@postgres:5432/orchestrator_db" ""
expect_failure "database not created by the init script" "databases" \
    replace deploy/compose/postgres-init.sql "CREATE DATABASE order_db;" ""
expect_failure "third-party image pinned to two tags" "images" \
    replace deploy/overlays/dev/kafka.yaml "image: apache/kafka:4.4.0" "image: apache/kafka:4.3.1"
expect_failure "malformed topics file" "topics: create-topics.sh" \
    replace config/topics.txt "order.events.v1 6" "order.events.v1 six"
expect_failure "topic script that stops growing topics" "topics: create-topics.sh" \
    replace deploy/base/kafka-topics/create-topics.sh '[ "$current" -lt "$partitions" ]' '[ "$current" -lt 0 ]'

# Dockerfile and scripts
expect_failure "Dockerfile lint error" "hadolint" \
    replace Dockerfile "FROM chef AS planner" "FROM chef AS planner
MAINTAINER someone"
expect_failure ".dockerignore dropping sources" "dockerignore" \
    replace .dockerignore "docs" "docs
crates"
expect_failure "shell script bug" "shellcheck" \
    replace deploy/base/kafka-topics/create-topics.sh 'log "done"' 'log done $undefined_variable'

echo "check-deploy-selftest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
