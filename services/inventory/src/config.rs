//! The inventory service's configuration, read from flags or the environment.

use std::net::SocketAddr;

use service_kit::config::{DatabaseArgs, GrpcArgs, KafkaArgs, ShutdownArgs, TelemetryArgs};

/// The inventory service: the product catalogue, its stock, and the saga's
/// stock reservations.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inventory-service", version)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50052")]
    pub listen_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub grpc: GrpcArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}
