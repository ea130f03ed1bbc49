# syntax=docker/dockerfile:1
#
# One image carrying every binary of the workspace (order-service, inventory-service,
# payment-service, shipment-service, notification-service, orchestrator, outbox-relay, and
# the tools run by hand: dead-letters, loadgen). Each container picks its binary with its
# command, e.g.
#   docker run ordersaga order-service
#
# Stages:
#   chef          rust toolchain + C toolchain for librdkafka + cargo-chef
#   planner       computes the dependency recipe (changes only when manifests change)
#   builder       builds the dependencies from the recipe (cached layer), then the workspace
#   health-probe  grpc_health_probe from the Go module proxy (health checks in docker-compose)
#   runtime       debian slim, non-root, binaries only

ARG RUST_VERSION=1.95
ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
# rdkafka builds librdkafka from source with its own configure script (the workspace does
# not enable rdkafka's `cmake-build` feature, so no cmake): C/C++ compiler, make,
# pkg-config, zlib.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --workspace --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && find target/release -maxdepth 1 -type f -perm -u+x -exec cp {} /out/ \; \
    && ls -l /out

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS health-probe
ARG GRPC_HEALTH_PROBE_VERSION=v0.4.61
RUN CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN=/out \
        go install -trimpath -ldflags='-s -w' \
        "github.com/grpc-ecosystem/grpc-health-probe@${GRPC_HEALTH_PROBE_VERSION}" \
    && mv /out/grpc-health-probe /out/grpc_health_probe

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ordersaga \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin ordersaga
COPY --from=health-probe /out/grpc_health_probe /usr/local/bin/grpc_health_probe
COPY --from=builder /out/ /usr/local/bin/
# Fail the build, not the rollout, if a binary needs a shared library the slim image lacks.
RUN set -e; for bin in /usr/local/bin/*; do \
        libs=$(ldd "$bin" 2>&1 || true); \
        case "$libs" in *"not found"*) echo "$bin: $libs" >&2; exit 1 ;; esac; \
    done
# Numeric user so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
STOPSIGNAL SIGTERM
# No default binary on purpose: every container names the one it runs.
CMD ["sh", "-c", "echo 'choose a binary, e.g. order-service or outbox-relay' >&2; ls /usr/local/bin >&2; exit 64"]
