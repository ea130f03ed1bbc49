//! The payment service's configuration, read from flags or the environment.

use std::net::SocketAddr;

use service_kit::config::{DatabaseArgs, GrpcArgs, KafkaArgs, ShutdownArgs, TelemetryArgs};

/// The payment service: customer accounts, and the saga's charges and refunds.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "payment-service", version)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50053")]
    pub listen_addr: SocketAddr,
    /// Largest single payment, in minor units; a larger charge is declined.
    #[arg(long, env = "PAYMENT_LIMIT_MINOR", default_value_t = 1_000_000)]
    pub payment_limit_minor: i64,
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn the_defaults_are_the_agreed_port_and_payment_limit() {
        let config = Config::try_parse_from(["payment-service", "--database-url", "postgres://x"])
            .expect("parses");
        assert_eq!(
            config.listen_addr,
            SocketAddr::from(([127, 0, 0, 1], 50053))
        );
        assert_eq!(config.payment_limit_minor, 1_000_000);
    }
}
