//! The service kit: what every binary of the system shares and nothing more.
//! Command-line/env config pieces, telemetry set-up (tracing + OpenTelemetry,
//! Prometheus metrics), graceful shutdown, gRPC serving with health,
//! reflection and a server-span layer, the database pool and migrations, the
//! build-then-serve shape of a service (`serving`), and the one mapping from
//! error kinds to `tonic::Status`.

pub mod config;
pub mod db;
pub mod grpc;
pub mod metrics;
pub mod overload;
pub mod serving;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod trace_context;
