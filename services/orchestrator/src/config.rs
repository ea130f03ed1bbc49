//! The orchestrator's configuration, read from flags or the environment.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::config::{DatabaseArgs, GrpcArgs, KafkaArgs, ShutdownArgs, TelemetryArgs};

use crate::saga::Timing;

/// The saga orchestrator: drives each order through reserve, charge, ship and approve.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "orchestrator", version)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50056")]
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
    /// Milliseconds a participant has to answer a command (the first send).
    #[arg(long, env = "SAGA_STEP_TIMEOUT_MS", default_value_t = 30_000)]
    pub saga_step_timeout_ms: u64,
    /// Sends of one compensation, approval or rejection before the saga needs attention.
    #[arg(long, env = "SAGA_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub saga_max_attempts: u32,
    /// Longest wait, in milliseconds, for the answer to a re-sent command.
    #[arg(long, env = "SAGA_RETRY_BACKOFF_MAX_MS", default_value_t = 300_000)]
    pub saga_retry_backoff_max_ms: u64,
    /// Milliseconds between two scans for sagas past their deadline.
    #[arg(long, env = "SAGA_DEADLINE_SCAN_INTERVAL_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_deadline_scan_interval_ms: u64,
    /// Sagas past their deadline handled per scanner transaction.
    #[arg(long, env = "SAGA_DEADLINE_SCAN_BATCH", default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
    pub saga_deadline_scan_batch: i64,
}

impl Config {
    pub fn timing(&self) -> Timing {
        Timing {
            step_timeout: Duration::from_millis(self.saga_step_timeout_ms),
            max_attempts: self.saga_max_attempts,
            retry_backoff_max: Duration::from_millis(self.saga_retry_backoff_max_ms),
        }
    }

    pub fn scan_interval(&self) -> Duration {
        Duration::from_millis(self.saga_deadline_scan_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = Config::try_parse_from(["orchestrator", "--database-url", "postgres://x/y"])
            .expect("parses");
        assert_eq!(config.listen_addr.port(), 50056);
        let timing = config.timing();
        assert_eq!(timing.step_timeout, Duration::from_secs(30));
        assert_eq!(timing.max_attempts, 10);
        assert_eq!(timing.retry_backoff_max, Duration::from_secs(300));
        assert_eq!(config.scan_interval(), Duration::from_millis(250));
        assert_eq!(config.saga_deadline_scan_batch, 100);
    }
}
