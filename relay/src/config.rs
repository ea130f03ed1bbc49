//! The relay's configuration, read from flags or the environment.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::config::{ShutdownArgs, TelemetryArgs};

/// The outbox relay: publishes the outbox of every listed database to Kafka.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "outbox-relay", version)]
pub struct Config {
    /// Comma-separated PostgreSQL URLs of the service databases whose outboxes to publish.
    #[arg(
        long,
        env = "RELAY_DATABASE_URLS",
        value_delimiter = ',',
        required = true
    )]
    pub database_urls: Vec<String>,
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Address of the grpc.health.v1 endpoint used by probes.
    #[arg(long, env = "HEALTH_LISTEN_ADDR", default_value = "127.0.0.1:50060")]
    pub health_listen_addr: SocketAddr,
    /// Most rows read and published per round trip.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: i64,
    /// Longest sleep of an idle relay without a notification, in milliseconds
    /// (while rows keep coming it polls every few milliseconds on its own).
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS", default_value_t = 500)]
    pub poll_interval_ms: u64,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

impl Config {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}
