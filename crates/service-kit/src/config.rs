//! Config pieces flattened into each binary's clap struct. Every field reads
//! an environment variable; `--help` lists them.

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
