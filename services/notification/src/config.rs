//! The notification service's configuration, read from flags or the environment.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::config::{DatabaseArgs, GrpcArgs, KafkaArgs, ShutdownArgs, TelemetryArgs};

use crate::domain::DeliveryPolicy;

/// The notification service: tells customers about their orders' outcomes.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "notification-service", version)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50055")]
    pub listen_addr: SocketAddr,
    /// http(s) URL each notification is POSTed to as JSON; empty: notifications are only recorded (NOT_CONFIGURED).
    #[arg(
        long,
        env = "NOTIFICATION_WEBHOOK_URL",
        default_value = "",
        value_parser = WebhookUrl::parse
    )]
    pub webhook_url: WebhookUrl,
    /// Delivery attempts per notification, the first included, before it is FAILED.
    #[arg(long, env = "NOTIFICATION_MAX_ATTEMPTS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Delay ceiling in milliseconds after the first failed delivery; doubles after each (with jitter).
    #[arg(long, env = "NOTIFICATION_RETRY_BASE_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_base_ms: u64,
    /// Largest delay in milliseconds between two delivery attempts.
    #[arg(long, env = "NOTIFICATION_RETRY_MAX_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_max_ms: u64,
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

impl Config {
    pub fn delivery_policy(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: self.max_attempts,
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms.max(self.retry_base_ms)),
        }
    }
}

/// The webhook's URL, if one is configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookUrl(pub Option<reqwest::Url>);

impl WebhookUrl {
    /// Empty (or blank) means none; otherwise an absolute http or https URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(Self(None));
        }
        let url = reqwest::Url::parse(raw).map_err(|error| format!("invalid URL: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("must be an http:// or https:// URL with a host".to_owned());
        }
        Ok(Self(Some(url)))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(
            ["notification-service", "--database-url", "postgres://x/y"]
                .iter()
                .chain(args),
        )
    }

    #[test]
    fn without_a_webhook_url_none_is_configured_and_defaults_apply() {
        let config = parse(&[]).expect("valid");
        assert_eq!(config.webhook_url, WebhookUrl(None));
        assert_eq!(
            config.delivery_policy(),
            DeliveryPolicy {
                max_attempts: 8,
                base: Duration::from_millis(500),
                max: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn a_webhook_url_must_be_http_or_https() {
        let config = parse(&["--webhook-url", "http://127.0.0.1:9/hook"]).expect("valid");
        assert_eq!(
            config.webhook_url.0.map(String::from),
            Some("http://127.0.0.1:9/hook".to_owned())
        );
        for bad in ["ftp://example.com/x", "not a url", "/relative"] {
            assert!(parse(&["--webhook-url", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_attempts_is_a_config_error() {
        assert!(parse(&["--max-attempts", "0"]).is_err());
    }
}
