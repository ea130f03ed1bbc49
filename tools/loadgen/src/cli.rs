//! Command-line interface: `loadgen run` (the load), `loadgen seed` (the
//! products and accounts the load needs) and `loadgen markdown` (tables from
//! JSON reports). Every option is also an environment variable.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::mix::Mix;
use crate::plan::Catalogue;

#[derive(Debug, clap::Parser)]
#[command(
    name = "loadgen",
    about = "Drives CreateOrder at a fixed rate or flat out and reports saga throughput and latency",
    long_about = "Drives ordersaga.order.v1.OrderService/CreateOrder and waits for every saga's \
                  outcome event (OrderApproved / OrderRejected on order.events.v1). Open loop with \
                  --rate (latency is measured from each send's scheduled time, so a slow server \
                  does not hide its queueing), closed loop with --concurrency. Only loopback \
                  addresses are accepted as targets."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Place orders for a while and report throughput and latency.
    Run(Box<RunArgs>),
    /// Create (or top up) the products and accounts a run uses.
    Seed(SeedArgs),
    /// Render JSON reports of `run --json` as Markdown tables, side by side.
    Markdown(MarkdownArgs),
    /// Print the target checks of a JSON report; exit 1 when one is missed.
    Targets(TargetsArgs),
}

/// The services and the Kafka cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// The order service's gRPC address.
    #[arg(
        long,
        env = "LOADGEN_ORDER_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub order_addr: String,
    /// The inventory service's gRPC address (seeding only).
    #[arg(
        long,
        env = "LOADGEN_INVENTORY_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory_addr: String,
    /// The payment service's gRPC address (seeding only).
    #[arg(
        long,
        env = "LOADGEN_PAYMENT_ADDR",
        default_value = "http://127.0.0.1:50053"
    )]
    pub payment_addr: String,
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Prefix of the topic names, as the services were started with.
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
}

/// The data the orders use.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Prefix of every seeded product and customer id.
    #[arg(long, env = "LOADGEN_DATA_PREFIX", default_value = "lg")]
    pub data_prefix: String,
    /// Number of stocked products the orders spread over.
    #[arg(long, env = "LOADGEN_PRODUCTS", default_value_t = 100)]
    pub products: u32,
    /// Number of funded customers the orders spread over.
    #[arg(long, env = "LOADGEN_CUSTOMERS", default_value_t = 1000)]
    pub customers: u32,
    /// Stock each product is brought up to by seeding.
    #[arg(long, env = "LOADGEN_STOCK", default_value_t = 1_000_000)]
    pub stock: i32,
    /// Balance (minor units) each funded customer is brought up to by seeding.
    #[arg(long, env = "LOADGEN_BALANCE_MINOR", default_value_t = 100_000_000)]
    pub balance_minor: i64,
    /// Unit price of every seeded product, minor units.
    #[arg(long, env = "LOADGEN_UNIT_PRICE_MINOR", default_value_t = 100)]
    pub unit_price_minor: i64,
    /// Currency of prices and balances.
    #[arg(long, env = "LOADGEN_CURRENCY", default_value = "EUR")]
    pub currency: String,
}

impl DataArgs {
    pub fn catalogue(&self) -> Catalogue {
        Catalogue {
            prefix: self.data_prefix.clone(),
            products: self.products.max(1),
            customers: self.customers.max(1),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub data: DataArgs,
    /// Concurrent seeding calls.
    #[arg(long, env = "LOADGEN_SEED_CONCURRENCY", default_value_t = 16)]
    pub seed_concurrency: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub data: DataArgs,
    /// Open loop: orders per second, on a fixed schedule.
    #[arg(long, env = "LOADGEN_RATE", conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many CreateOrder calls in flight, each sent as soon
    /// as the previous one answered (as fast as possible).
    #[arg(long, env = "LOADGEN_CONCURRENCY")]
    pub concurrency: Option<u32>,
    /// Seconds of sending.
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 60.0)]
    pub duration: f64,
    /// Weights of the order kinds: happy, out_of_stock, unknown_product,
    /// insufficient_funds, undeliverable.
    #[arg(long, env = "LOADGEN_MIX", default_value = "happy=100")]
    pub mix: Mix,
    /// Seed of the order draws: the same seed places the same orders.
    #[arg(long, env = "LOADGEN_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Seed the products and accounts before the run (as `loadgen seed`).
    #[arg(long, env = "LOADGEN_SEED_DATA")]
    pub seed_data: bool,
    /// Seconds to wait after the last send for the outstanding sagas.
    #[arg(long, env = "LOADGEN_DRAIN_TIMEOUT", default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Deadline of each CreateOrder call, seconds.
    #[arg(long, env = "LOADGEN_RPC_TIMEOUT", default_value_t = 10.0)]
    pub rpc_timeout: f64,
    /// HTTP/2 connections to the order service, used round robin.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 4)]
    pub connections: usize,
    /// Open loop: most calls in flight; a send beyond it waits (and is late).
    #[arg(long, env = "LOADGEN_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Name of the run in reports.
    #[arg(long, env = "LOADGEN_LABEL", default_value = "")]
    pub label: String,
    /// Write the report as JSON to this file.
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,
    /// Draw saga latency over time (p50 and p99 per second) to this PNG.
    #[arg(long, env = "LOADGEN_PLOT")]
    pub plot: Option<PathBuf>,
    /// TrueType font for the plot's labels (default: DejaVu Sans or
    /// Liberation Sans if installed; without one the plot has no text).
    #[arg(long, env = "LOADGEN_PLOT_FONT")]
    pub plot_font: Option<PathBuf>,
    /// Progress display: `auto` (a bar on a terminal, a line every 5 s
    /// otherwise), `bar`, `log` or `off`.
    #[arg(long, env = "LOADGEN_PROGRESS", default_value = "auto",
          value_parser = ["auto", "bar", "log", "off"])]
    pub progress: String,
    /// Watch a process's CPU and memory: NAME=PID.
    #[arg(long = "watch", env = "LOADGEN_WATCH", value_delimiter = ',')]
    pub watch: Vec<String>,
    /// Watch every `<name>.pid` file of these directories (scripts/stack.sh's
    /// run dir); a later NAME (also of --watch) replaces an earlier one.
    #[arg(long, env = "LOADGEN_WATCH_PID_DIR", value_delimiter = ',')]
    pub watch_pid_dir: Vec<PathBuf>,
    /// Watch every process of a command name as one group: NAME=COMM, e.g.
    /// postgres=postgres.
    #[arg(long = "watch-comm", env = "LOADGEN_WATCH_COMM", value_delimiter = ',')]
    pub watch_comm: Vec<String>,
    /// Target: saga latency p50, milliseconds.
    #[arg(long, env = "LOADGEN_TARGET_P50_MS")]
    pub target_p50_ms: Option<f64>,
    /// Target: saga latency p99, milliseconds.
    #[arg(long, env = "LOADGEN_TARGET_P99_MS")]
    pub target_p99_ms: Option<f64>,
    /// Target: completed sagas per second.
    #[arg(long, env = "LOADGEN_TARGET_RATE")]
    pub target_rate: Option<f64>,
    /// Target: peak RSS of each watched process, MB.
    #[arg(long, env = "LOADGEN_TARGET_RSS_MB")]
    pub target_rss_mb: Option<f64>,
    /// Watched groups the memory target does not apply to.
    #[arg(
        long,
        env = "LOADGEN_RSS_EXEMPT",
        value_delimiter = ',',
        default_value = "postgres,kafka,jaeger,loadgen"
    )]
    pub rss_exempt: Vec<String>,
    /// Exit non-zero when a target is missed.
    #[arg(long, env = "LOADGEN_FAIL_ON_MISS")]
    pub fail_on_miss: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MarkdownArgs {
    /// JSON reports written by `run --json`, one column each.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TargetsArgs {
    /// A JSON report written by `run --json`.
    pub report: PathBuf,
    /// Only the checks whose name starts with one of these (e.g. `saga p99`);
    /// every check when none is given.
    #[arg(long = "only")]
    pub only: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AddressError {
    #[error("{0:?} is not a loopback address: the load generator only targets this machine")]
    NotLoopback(String),
    #[error("cannot read a host in {0:?}")]
    NoHost(String),
}

/// Whether `host` (a name, an IPv4 address or a bracketed IPv6 address) is
/// this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of `http://host:port[/...]` or `host:port`.
fn host_of(address: &str) -> Option<&str> {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = if authority.starts_with('[') {
        authority.split_once(']').map(|(h, _)| &h[1..])?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then_some(host)
}

/// Refuses any address that is not on the loopback interface.
pub fn require_loopback(address: &str) -> Result<(), AddressError> {
    for one in address.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let host = host_of(one).ok_or_else(|| AddressError::NoHost(one.to_owned()))?;
        if !is_loopback_host(host) {
            return Err(AddressError::NotLoopback(one.to_owned()));
        }
    }
    Ok(())
}

impl Endpoints {
    pub fn check_loopback(&self) -> Result<(), AddressError> {
        require_loopback(&self.order_addr)?;
        require_loopback(&self.inventory_addr)?;
        require_loopback(&self.payment_addr)?;
        require_loopback(&self.kafka_brokers)
    }

    pub fn outcome_topic(&self) -> String {
        format!("{}{}", self.topic_prefix, proto::topics::ORDER_EVENTS)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        for ok in [
            "http://127.0.0.1:50051",
            "http://localhost:50051",
            "127.0.0.1:9092,127.0.0.2:9093",
            "http://[::1]:50051",
            "https://127.0.0.1:443/path",
        ] {
            assert_eq!(require_loopback(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:50051",
            "http://example.com:50051",
            "127.0.0.1:9092,192.168.1.1:9092",
            "http://[2001:db8::1]:50051",
        ] {
            assert!(
                matches!(require_loopback(bad), Err(AddressError::NotLoopback(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rate_and_concurrency_exclude_each_other() {
        let parsed = Cli::try_parse_from(["loadgen", "run", "--rate", "5", "--concurrency", "2"]);
        assert!(parsed.is_err());
        let Cli {
            command: Command::Run(args),
        } = Cli::try_parse_from([
            "loadgen",
            "run",
            "--rate",
            "500",
            "--mix",
            "happy=90,out_of_stock=10",
            "--topic-prefix",
            "e2e.",
        ])
        .expect("valid arguments")
        else {
            panic!("not a run");
        };
        assert_eq!(args.rate, Some(500.0));
        assert_eq!(args.endpoints.outcome_topic(), "e2e.order.events.v1");
        assert_eq!(args.mix.to_string(), "happy=90,out_of_stock=10");
    }
}
