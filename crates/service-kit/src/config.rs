//! Config pieces flattened into each binary's clap struct. Every field reads
//! an environment variable; `--help` lists them.

use std::net::SocketAddr;
use std::time::Duration;

/// Logging and tracing settings, with the standard `OTEL_*` names.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log line format: `text` for people, `json` for log shippers.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// OTLP gRPC endpoint that receives spans; empty disables export.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        default_value = "http://127.0.0.1:4317"
    )]
    pub otlp_endpoint: String,
    /// Service name reported on every span.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// Fraction of new traces sampled, 0.0 to 1.0; children follow their parent.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0)]
    pub sampling_ratio: f64,
    /// Address of the Prometheus `/metrics` endpoint, e.g. `127.0.0.1:9100`; empty disables it.
    // Spelled out so that clap takes the parser's `Option` as the value: an
    // empty variable means disabled rather than a parse error.
    #[arg(long, env = "METRICS_LISTEN_ADDR", default_value = "", value_parser = optional_addr)]
    pub metrics_listen_addr: std::option::Option<SocketAddr>,
}

/// An empty string is no address; anything else must be `host:port`.
fn optional_addr(value: &str) -> Result<Option<SocketAddr>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|error| format!("{value:?} is not an address like 127.0.0.1:9100: {error}"))
}

impl TelemetryArgs {
    /// Warnings only, no span export: for tests and tools.
    pub fn quiet() -> Self {
        Self {
            log_format: "text".into(),
            log_filter: "warn".into(),
            otlp_endpoint: String::new(),
            service_name: None,
            sampling_ratio: 1.0,
            metrics_listen_addr: None,
        }
    }
}

/// The gRPC server's admission limit (see `service_kit::overload`).
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcArgs {
    /// Most gRPC calls this process serves at once; a call beyond it is
    /// answered UNAVAILABLE at once instead of queueing (health checks and
    /// reflection never are).
    #[arg(long, env = "GRPC_MAX_IN_FLIGHT", default_value_t = GrpcArgs::DEFAULT_MAX_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_in_flight: u32,
}

impl GrpcArgs {
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 512;

    pub fn max_in_flight(&self) -> usize {
        self.grpc_max_in_flight as usize
    }
}

impl Default for GrpcArgs {
    fn default() -> Self {
        Self {
            grpc_max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// How long in-flight work may take to finish after a shutdown signal.
#[derive(Debug, Clone, clap::Args)]
pub struct ShutdownArgs {
    /// Seconds to drain in-flight work after SIGTERM/SIGINT before exiting.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,
}

impl ShutdownArgs {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// A service's own PostgreSQL database.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL of this service's own database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Maximum number of pooled database connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,
}

/// The Kafka cluster and the topic namespace a service uses.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Prepended to every topic and consumer group name, e.g. `staging.`; empty in production.
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    pub kafka_topic_prefix: String,
}

impl KafkaArgs {
    pub fn new(brokers: impl Into<String>, topic_prefix: impl Into<String>) -> Self {
        Self {
            kafka_brokers: brokers.into(),
            kafka_topic_prefix: topic_prefix.into(),
        }
    }

    /// The full name of topic `name` (one of `proto::topics`).
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.kafka_topic_prefix)
    }

    /// The consumer group of consumer `name`.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.kafka_topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        telemetry: TelemetryArgs,
    }

    #[test]
    fn an_empty_metrics_address_disables_metrics_and_a_malformed_one_is_refused() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("cli").chain(args.iter().copied()))
                .map(|cli| cli.telemetry.metrics_listen_addr)
        };
        assert_eq!(parse(&["--metrics-listen-addr", ""]).ok(), Some(None));
        assert_eq!(
            parse(&["--metrics-listen-addr", "127.0.0.1:9100"]).ok(),
            Some(Some(SocketAddr::from(([127, 0, 0, 1], 9100))))
        );
        assert!(parse(&["--metrics-listen-addr", "nine"]).is_err());
        assert_eq!(TelemetryArgs::quiet().metrics_listen_addr, None);
    }

    #[test]
    fn the_topic_prefix_namespaces_topics_and_groups() {
        let kafka = KafkaArgs::new("127.0.0.1:9092", "e2e-1.");
        assert_eq!(kafka.topic("saga.replies.v1"), "e2e-1.saga.replies.v1");
        assert_eq!(kafka.group("orchestrator"), "e2e-1.orchestrator");
        assert_eq!(KafkaArgs::new("b", "").topic("t"), "t");
    }
}
