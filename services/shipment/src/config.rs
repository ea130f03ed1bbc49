//! The shipment service's configuration, read from flags or the environment.

use std::net::SocketAddr;

use service_kit::config::{DatabaseArgs, GrpcArgs, KafkaArgs, ShutdownArgs, TelemetryArgs};

use crate::domain::{DEFAULT_DELIVERABLE_COUNTRIES, DeliverableCountries};

/// The shipment service: books and cancels shipments for the order saga.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "shipment-service", version)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50054")]
    pub listen_addr: SocketAddr,
    /// Comma-separated ISO 3166-1 alpha-2 codes of the countries delivered to.
    #[arg(
        long,
        env = "DELIVERABLE_COUNTRIES",
        default_value = DEFAULT_DELIVERABLE_COUNTRIES,
        value_parser = DeliverableCountries::parse
    )]
    pub deliverable_countries: DeliverableCountries,
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

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(
            ["shipment-service", "--database-url", "postgres://x/y"]
                .iter()
                .chain(args),
        )
    }

    #[test]
    fn the_country_list_parses_from_config_normalised() {
        let config = parse(&["--deliverable-countries", " de,fr , gb"]).expect("valid");
        let codes: Vec<&str> = config
            .deliverable_countries
            .iter()
            .map(|c| c.as_str())
            .collect();
        assert_eq!(codes, ["DE", "FR", "GB"]);
    }

    #[test]
    fn an_invalid_country_code_in_config_is_an_error() {
        assert!(parse(&["--deliverable-countries", "DE,Germany"]).is_err());
    }

    #[test]
    fn without_a_country_list_the_default_applies() {
        let config = parse(&[]).expect("valid");
        assert_eq!(
            config.deliverable_countries,
            DeliverableCountries::default()
        );
    }
}
