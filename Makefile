# Thin entry points; the logic lives in scripts/. See scripts/infra.sh for ports and paths.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: install up down status build test lint clean-state seed

install:
	scripts/infra.sh install

build:
	$(CARGO) build --bins

up:
	scripts/infra.sh up
	$(CARGO) build --bins
	scripts/stack.sh up

# Demo products and accounts for the grpcurl examples of README.md (stack must be up).
seed:
	scripts/seed.sh

down:
	scripts/stack.sh down
	scripts/infra.sh down

status:
	scripts/infra.sh status
	scripts/stack.sh status

test:
	scripts/infra.sh up
	$(CARGO) build --bins
	eval "$$(scripts/infra.sh env)" && $(CARGO) test --workspace
	scripts/stack.sh up
	scripts/smoke.sh
	if [[ -f scripts/check-deploy.sh ]]; then bash scripts/check-deploy.sh; fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-state:
	scripts/stack.sh down
	scripts/infra.sh down
	scripts/infra.sh clean

# Outbox relay drain rate and commit-to-consumed latency against the real PostgreSQL and
# Kafka (docs/benchmarks.md). A few minutes; other benchmarks get their own targets.
.PHONY: bench-relay
bench-relay:
	scripts/infra.sh up
	eval "$$(scripts/infra.sh env)" && $(CARGO) bench -p outbox-relay --bench relay_bench

# Saga throughput and latency: release stack, 50 and 500 orders/s for 60 s each through
# tools/loadgen, results into docs/benchmarks.md. About 5 minutes once built.
.PHONY: bench
bench:
	scripts/bench.sh
