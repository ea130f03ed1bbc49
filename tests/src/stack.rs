//! The whole system as child processes: seven binaries, six fresh databases,
//! one topic namespace, the relay over every database, spans to Jaeger.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use test_support::TestDatabase;
use tokio::process::{Child, Command};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::duplicator::Duplicator;
use crate::webhook::WebhookReceiver;

/// How long a process gets to report SERVING after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process gets to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn otlp_endpoint() -> String {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4317".into())
}

/// One of the system's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Order,
    Inventory,
    Payment,
    Shipment,
    Notification,
    Orchestrator,
    Relay,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Order,
        Service::Inventory,
        Service::Payment,
        Service::Shipment,
        Service::Notification,
        Service::Orchestrator,
        Service::Relay,
    ];

    /// The binary's name, which is also its `OTEL_SERVICE_NAME`.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Order => "order-service",
            Service::Inventory => "inventory-service",
            Service::Payment => "payment-service",
            Service::Shipment => "shipment-service",
            Service::Notification => "notification-service",
            Service::Orchestrator => "orchestrator",
            Service::Relay => "outbox-relay",
        }
    }

    fn database(self) -> Option<&'static str> {
        match self {
            Service::Order => Some("order"),
            Service::Inventory => Some("inventory"),
            Service::Payment => Some("payment"),
            Service::Shipment => Some("shipment"),
            Service::Notification => Some("notification"),
            Service::Orchestrator => Some("orchestrator"),
            Service::Relay => None,
        }
    }
}

/// Knobs of one stack. `Default` is what the scenarios use unless they say
/// otherwise.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// SAGA_STEP_TIMEOUT_MS: how long the orchestrator waits for a reply.
    pub step_timeout: Duration,
    /// SAGA_MAX_ATTEMPTS: sends of one command before the step times out.
    pub max_attempts: u32,
    /// SAGA_RETRY_BACKOFF_MAX_MS: longest pause between re-sends.
    pub retry_backoff_max: Duration,
    /// SAGA_DEADLINE_SCAN_INTERVAL_MS.
    pub deadline_scan_interval: Duration,
    /// PAYMENT_LIMIT_MINOR (the service's default when `None`).
    pub payment_limit_minor: Option<i64>,
    /// DELIVERABLE_COUNTRIES (the service's default when `None`).
    pub deliverable_countries: Option<String>,
    /// NOTIFICATION_WEBHOOK_URL; `None` points it at the stack's own
    /// [`WebhookReceiver`].
    pub webhook_url: Option<String>,
    /// DATABASE_POOL_SIZE of every service.
    pub pool_size: u32,
    /// RUST_LOG of every process.
    pub log_filter: String,
    /// Re-send every command and reply once more (see [`Duplicator`]).
    pub duplicate_messages: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(3),
            max_attempts: 3,
            retry_backoff_max: Duration::from_millis(1000),
            deadline_scan_interval: Duration::from_millis(200),
            payment_limit_minor: None,
            deliverable_countries: None,
            webhook_url: None,
            pool_size: 4,
            log_filter: "info".into(),
            duplicate_messages: false,
        }
    }
}

struct Process {
    env: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
}

/// A running system. Dropping it kills every process, then drops the
/// databases. If the test is panicking, the log file paths are printed.
pub struct Stack {
    /// Topic prefix of this stack's namespace (KAFKA_TOPIC_PREFIX).
    pub prefix: String,
    /// Receives the notification service's webhook calls.
    pub webhook: WebhookReceiver,
    pub duplicator: Option<Duplicator>,
    pub log_dir: PathBuf,
    urls: HashMap<Service, String>,
    processes: Mutex<HashMap<Service, Process>>,
    databases: HashMap<Service, TestDatabase>,
}

/// A built workspace binary next to the test executable (`cargo build --bins`).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .context("test executable has no target directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first",
        path.display()
    );
    Ok(path)
}

fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("test executable has no target directory")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Stack {
    /// Starts every process and waits until each reports SERVING. Fails
    /// (never skips) when PostgreSQL, Kafka or Jaeger is unreachable. A start
    /// that fails otherwise is tried once more with fresh ports, databases
    /// and topics: a free port picked for one process can be taken by a
    /// parallel test's process before it binds.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        crate::jaeger::ensure_reachable().await?;
        match Self::start_once(options.clone()).await {
            Ok(stack) => Ok(stack),
            Err(error) => {
                eprintln!("stack start failed, trying once more: {error:#}");
                Self::start_once(options).await
            }
        }
    }

    async fn start_once(options: StackOptions) -> anyhow::Result<Self> {
        let prefix = test_support::topic_namespace()
            .await
            .context("cannot create the topic namespace; is Kafka up (scripts/infra.sh up)?")?;
        wait_topics_ready(&prefix).await?;
        let log_dir = target_dir()?
            .join("e2e-logs")
            .join(prefix.trim_end_matches('.'));
        std::fs::create_dir_all(&log_dir)?;
        let webhook = WebhookReceiver::start().await?;
        let webhook_url = options.webhook_url.clone().unwrap_or_else(|| webhook.url());

        let mut databases = HashMap::new();
        for service in Service::ALL {
            if let Some(name) = service.database() {
                databases.insert(service, TestDatabase::create(&format!("e2e_{name}")).await?);
            }
        }

        let mut urls = HashMap::new();
        let mut processes = HashMap::new();
        for service in Service::ALL {
            let port = free_port()?;
            let mut env: Vec<(String, String)> = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp_endpoint()),
                ("OTEL_SERVICE_NAME".into(), service.binary().into()),
                // Export spans soon, so a SIGKILL loses little and Jaeger
                // has them quickly.
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
                ("OTEL_BSP_MAX_QUEUE_SIZE".into(), "65536".into()),
                ("RUST_LOG".into(), options.log_filter.clone()),
                ("LOG_FORMAT".into(), "text".into()),
                ("SHUTDOWN_GRACE_SECONDS".into(), "2".into()),
                ("KAFKA_BROKERS".into(), test_support::kafka_brokers()),
                (
                    "METRICS_LISTEN_ADDR".into(),
                    format!("127.0.0.1:{}", free_port()?),
                ),
            ];
            if let Some(db) = databases.get(&service) {
                env.extend([
                    ("LISTEN_ADDR".into(), format!("127.0.0.1:{port}")),
                    ("DATABASE_URL".into(), db.url.clone()),
                    ("DATABASE_POOL_SIZE".into(), options.pool_size.to_string()),
                    ("KAFKA_TOPIC_PREFIX".into(), prefix.clone()),
                ]);
            }
            match service {
                Service::Payment => {
                    if let Some(limit) = options.payment_limit_minor {
                        env.push(("PAYMENT_LIMIT_MINOR".into(), limit.to_string()));
                    }
                }
                Service::Shipment => {
                    if let Some(countries) = &options.deliverable_countries {
                        env.push(("DELIVERABLE_COUNTRIES".into(), countries.clone()));
                    }
                }
                Service::Notification => env.extend([
                    ("NOTIFICATION_WEBHOOK_URL".into(), webhook_url.clone()),
                    ("NOTIFICATION_RETRY_BASE_MS".into(), "100".into()),
                    ("NOTIFICATION_RETRY_MAX_MS".into(), "1000".into()),
                ]),
                Service::Orchestrator => env.extend([
                    (
                        "SAGA_STEP_TIMEOUT_MS".into(),
                        options.step_timeout.as_millis().to_string(),
                    ),
                    ("SAGA_MAX_ATTEMPTS".into(), options.max_attempts.to_string()),
                    (
                        "SAGA_RETRY_BACKOFF_MAX_MS".into(),
                        options.retry_backoff_max.as_millis().to_string(),
                    ),
                    (
                        "SAGA_DEADLINE_SCAN_INTERVAL_MS".into(),
                        options.deadline_scan_interval.as_millis().to_string(),
                    ),
                ]),
                Service::Relay => {
                    let all: Vec<&str> = databases.values().map(|db| db.url.as_str()).collect();
                    env.extend([
                        ("RELAY_DATABASE_URLS".into(), all.join(",")),
                        ("HEALTH_LISTEN_ADDR".into(), format!("127.0.0.1:{port}")),
                        ("RELAY_POLL_INTERVAL_MS".into(), "50".into()),
                    ]);
                }
                Service::Order | Service::Inventory => {}
            }
            let url = format!("http://127.0.0.1:{port}");
            urls.insert(service, url);
            processes.insert(
                service,
                Process {
                    env,
                    log_path: log_dir.join(format!("{}.log", service.binary())),
                    child: None,
                },
            );
        }

        let duplicator = if options.duplicate_messages {
            Some(Duplicator::start(&prefix).await?)
        } else {
            None
        };
        let stack = Self {
            prefix,
            webhook,
            duplicator,
            log_dir,
            urls,
            processes: Mutex::new(processes),
            databases,
        };
        for service in Service::ALL {
            stack.spawn(service)?;
        }
        for service in Service::ALL {
            stack.wait_serving(service).await?;
        }
        Ok(stack)
    }

    fn spawn(&self, service: Service) -> anyhow::Result<()> {
        let mut processes = self.processes.lock().expect("process table");
        let process = processes.get_mut(&service).context("unknown service")?;
        anyhow::ensure!(process.child.is_none(), "{} already runs", service.binary());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log_path)?;
        let mut command = Command::new(binary(service.binary())?);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(process.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", service.binary()))?;
        process.child = Some(child);
        Ok(())
    }

    /// Waits until `service` reports SERVING, failing early if it exits.
    async fn wait_serving(&self, service: Service) -> anyhow::Result<()> {
        let url = self.url(service).to_owned();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status(service)? {
                anyhow::bail!(
                    "{} exited with {status} during start-up; log: {}\n{}",
                    service.binary(),
                    self.log_path(service).display(),
                    tail_of(&self.log_path(service), 20)
                );
            }
            if serving(&url).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} not SERVING at {url} after {START_TIMEOUT:?}; log: {}",
                    service.binary(),
                    self.log_path(service).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn exit_status(&self, service: Service) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let mut processes = self.processes.lock().expect("process table");
        let process = processes.get_mut(&service).context("unknown service")?;
        match process.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => anyhow::bail!("{} is not running", service.binary()),
        }
    }

    /// Whether `service`'s process is running (not killed, not exited).
    pub fn is_running(&self, service: Service) -> bool {
        matches!(self.exit_status(service), Ok(None))
    }

    /// Kills `service` with SIGKILL and reaps it.
    pub async fn kill(&self, service: Service) -> anyhow::Result<()> {
        let child = self.take_child(service)?;
        if let Some(mut child) = child {
            child.start_kill().ok();
            tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .context("killed process did not exit")??;
        }
        Ok(())
    }

    /// Stops `service` with SIGTERM (graceful shutdown), killing it if it
    /// has not exited after a bounded wait.
    pub async fn stop(&self, service: Service) -> anyhow::Result<()> {
        let child = self.take_child(service)?;
        let Some(mut child) = child else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
            anyhow::ensure!(status.success(), "cannot signal pid {pid}");
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                child.start_kill().ok();
                child.wait().await?;
                anyhow::bail!("{} ignored SIGTERM for {STOP_TIMEOUT:?}", service.binary());
            }
        }
        Ok(())
    }

    /// Starts `service` again (after `kill` or `stop`) with the same
    /// environment and port, and waits until it is SERVING.
    pub async fn start_service(&self, service: Service) -> anyhow::Result<()> {
        self.spawn(service)?;
        self.wait_serving(service).await
    }

    fn take_child(&self, service: Service) -> anyhow::Result<Option<Child>> {
        let mut processes = self.processes.lock().expect("process table");
        Ok(processes
            .get_mut(&service)
            .context("unknown service")?
            .child
            .take())
    }

    /// `http://127.0.0.1:<port>` of `service`'s gRPC (for the relay: health) server.
    pub fn url(&self, service: Service) -> &str {
        self.urls.get(&service).map_or("", String::as_str)
    }

    pub fn log_path(&self, service: Service) -> PathBuf {
        self.log_dir.join(format!("{}.log", service.binary()))
    }

    /// The database of `service` (not the relay).
    pub fn database(&self, service: Service) -> &TestDatabase {
        self.databases
            .get(&service)
            .unwrap_or_else(|| panic!("{} has no database", service.binary()))
    }

    /// Every process still alive, or the first one that died.
    pub fn check_alive(&self) -> anyhow::Result<()> {
        for service in Service::ALL {
            if let Some(status) = self.exit_status(service)? {
                anyhow::bail!(
                    "{} exited unexpectedly with {status}; log: {}",
                    service.binary(),
                    self.log_path(service).display()
                );
            }
        }
        Ok(())
    }

    fn channel(&self, service: Service) -> Channel {
        Endpoint::from_shared(self.url(service).to_owned())
            .expect("valid url")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_lazy()
    }

    fn quiet(&self, service: Service) -> InterceptedService<Channel, Unsampled> {
        InterceptedService::new(self.channel(service), Unsampled)
    }

    /// A client whose calls start a sampled trace of their own (CreateOrder).
    pub fn order_traced(
        &self,
    ) -> proto::order::v1::order_service_client::OrderServiceClient<Channel> {
        proto::order::v1::order_service_client::OrderServiceClient::new(
            self.channel(Service::Order),
        )
    }

    pub fn order(&self) -> OrderClient {
        OrderClient::new(self.quiet(Service::Order))
    }

    pub fn inventory(&self) -> InventoryClient {
        InventoryClient::new(self.quiet(Service::Inventory))
    }

    pub fn payment(&self) -> PaymentClient {
        PaymentClient::new(self.quiet(Service::Payment))
    }

    pub fn shipment(&self) -> ShipmentClient {
        ShipmentClient::new(self.quiet(Service::Shipment))
    }

    pub fn notification(&self) -> NotificationClient {
        NotificationClient::new(self.quiet(Service::Notification))
    }

    pub fn orchestrator(&self) -> OrchestratorClient {
        OrchestratorClient::new(self.quiet(Service::Orchestrator))
    }

    fn print_logs(&self) {
        eprintln!(
            "e2e stack {} logs in {}:",
            self.prefix,
            self.log_dir.display()
        );
        for service in Service::ALL {
            eprintln!("  {}", self.log_path(service).display());
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if let Some(duplicator) = &self.duplicator {
            duplicator.stop();
        }
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        for process in processes.values_mut() {
            if let Some(mut child) = process.child.take() {
                let _ = child.start_kill();
                // Reap it so the database drop below does not race a live
                // connection (DROP ... WITH (FORCE) copes anyway).
                if let Some(pid) = child.id() {
                    wait_pid_gone(pid);
                }
            }
        }
        drop(processes);
        test_support::delete_namespace_blocking(&self.prefix);
    }
}

/// Waits (bounded) until every partition of the namespace's topics has a
/// leader that answers for its offsets: freshly created topics take a moment.
async fn wait_topics_ready(prefix: &str) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let prefix = prefix.to_owned();
    let expected: Vec<String> = include_str!("../../config/topics.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| format!("{prefix}{name}"))
        .collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", test_support::kafka_brokers())
            .create()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // What is not ready yet, if anything.
            let pending = (|| -> anyhow::Result<Option<String>> {
                for name in &expected {
                    let metadata = consumer.fetch_metadata(Some(name), Duration::from_secs(5))?;
                    let Some(topic) = metadata.topics().first() else {
                        return Ok(Some(format!("{name}: no metadata")));
                    };
                    if let Some(error) = topic.error() {
                        return Ok(Some(format!("{name}: {error:?}")));
                    }
                    if topic.partitions().is_empty() {
                        return Ok(Some(format!("{name}: no partitions")));
                    }
                    for partition in topic.partitions() {
                        if partition.leader() < 0 {
                            return Ok(Some(format!("{name}/{}: no leader", partition.id())));
                        }
                        consumer.fetch_watermarks(name, partition.id(), Duration::from_secs(5))?;
                    }
                }
                Ok(None)
            })();
            match pending {
                Ok(None) => return Ok(()),
                Ok(Some(what)) if Instant::now() >= deadline => {
                    anyhow::bail!("topics of {prefix} not ready after 60 s: {what}")
                }
                Err(error) if Instant::now() >= deadline => {
                    return Err(error.context(format!("topics of {prefix} not ready")));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .await?
}

/// Waits (bounded) until `/proc/<pid>` is gone or a zombie.
fn wait_pid_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat)
                if !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => return,
        }
    }
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = File::open(path)
        .and_then(|mut f| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s)?;
            Ok(s)
        })
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether grpc.health.v1 at `url` reports SERVING.
pub async fn serving(url: &str) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(url.to_owned()) else {
        return false;
    };
    let Ok(Ok(channel)) = tokio::time::timeout(
        Duration::from_secs(2),
        endpoint.connect_timeout(Duration::from_secs(1)).connect(),
    )
    .await
    else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.check(HealthCheckRequest::default())).await,
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving
    )
}

/// Marks a call as part of an unsampled trace, so the test's own queries
/// (GetOrder, GetProduct, ...) leave no spans in Jaeger and cannot be
/// mistaken for a stray saga trace.
#[derive(Debug, Clone, Copy)]
pub struct Unsampled;

impl tonic::service::Interceptor for Unsampled {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let trace = uuid::Uuid::new_v4().simple().to_string();
        let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
        let value = format!("00-{trace}-{span}-00");
        if let Ok(value) = value.parse() {
            request.metadata_mut().insert("traceparent", value);
        }
        Ok(request)
    }
}

type Quiet = InterceptedService<Channel, Unsampled>;
pub type OrderClient = proto::order::v1::order_service_client::OrderServiceClient<Quiet>;
pub type InventoryClient =
    proto::inventory::v1::inventory_service_client::InventoryServiceClient<Quiet>;
pub type PaymentClient = proto::payment::v1::payment_service_client::PaymentServiceClient<Quiet>;
pub type ShipmentClient =
    proto::shipment::v1::shipment_service_client::ShipmentServiceClient<Quiet>;
pub type NotificationClient =
    proto::notification::v1::notification_service_client::NotificationServiceClient<Quiet>;
pub type OrchestratorClient =
    proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient<Quiet>;
