//! End-to-end harness: starts the system's real binaries as child processes
//! against a fresh database and the real Kafka and Jaeger, and reads traces
//! back from Jaeger's HTTP API.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use test_support::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub fn otlp_endpoint() -> String {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4317".into())
}

pub fn jaeger_query_url() -> String {
    std::env::var("JAEGER_QUERY_URL").unwrap_or_else(|_| "http://127.0.0.1:16686".into())
}

/// A built workspace binary next to the test executable (`cargo build --bins`).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let deps = std::env::current_exe()?;
    let dir = deps
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

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The order service and the relay running as processes on a fresh database.
pub struct Stack {
    pub order_addr: String,
    pub db: TestDatabase,
    children: Vec<Child>,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        let db = TestDatabase::create("e2e_order").await?;
        let order_port = free_port()?;
        let relay_health_port = free_port()?;
        let order = spawn(
            "order-service",
            &[
                ("LISTEN_ADDR", format!("127.0.0.1:{order_port}")),
                ("DATABASE_URL", db.url.clone()),
            ],
        )?;
        let relay = spawn(
            "outbox-relay",
            &[
                ("RELAY_DATABASE_URLS", db.url.clone()),
                ("KAFKA_BROKERS", test_support::kafka_brokers()),
                (
                    "HEALTH_LISTEN_ADDR",
                    format!("127.0.0.1:{relay_health_port}"),
                ),
                ("RELAY_POLL_INTERVAL_MS", "200".into()),
            ],
        )?;
        let stack = Self {
            order_addr: format!("http://127.0.0.1:{order_port}"),
            db,
            children: vec![order, relay],
        };
        wait_serving(&stack.order_addr).await?;
        wait_serving(&format!("http://127.0.0.1:{relay_health_port}")).await?;
        Ok(stack)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

fn spawn(name: &str, env: &[(&str, String)]) -> anyhow::Result<Child> {
    let mut command = Command::new(binary(name)?);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint())
        .env("OTEL_SERVICE_NAME", name)
        .env("RUST_LOG", "warn")
        .env("SHUTDOWN_GRACE_SECONDS", "2")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .spawn()
        .with_context(|| format!("cannot start {name}"))
}

/// Waits until grpc.health.v1 at `addr` reports SERVING.
async fn wait_serving(addr: &str) -> anyhow::Result<()> {
    test_support::eventually(
        Duration::from_secs(30),
        &format!("{addr} serving"),
        async || {
            let Ok(channel) = tonic::transport::Endpoint::from_shared(addr.to_owned())?
                .connect()
                .await
            else {
                return Ok(None);
            };
            let mut client = HealthClient::new(channel);
            let serving = client
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving);
            Ok(serving.then_some(()))
        },
    )
    .await
}

/// `GET` on Jaeger's query API, decoded as JSON.
pub async fn jaeger_get(path: &str) -> anyhow::Result<serde_json::Value> {
    let base = jaeger_query_url();
    let authority = base
        .strip_prefix("http://")
        .context("JAEGER_QUERY_URL must be http://host:port")?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("Jaeger query API at {base} is unreachable"))?;
    // HTTP/1.0 keeps the response unchunked and closes the connection.
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8(response)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response from Jaeger")?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.contains(" 404 ") {
        return Ok(serde_json::Value::Null);
    }
    anyhow::ensure!(
        status_line.contains(" 200 "),
        "Jaeger answered {status_line}"
    );
    Ok(serde_json::from_str(body)?)
}

/// The names of the services that contributed spans to trace `trace_id`,
/// with each span's operation name.
pub async fn trace_spans(trace_id: &str) -> anyhow::Result<Vec<(String, String)>> {
    let trace = jaeger_get(&format!("/api/traces/{trace_id}")).await?;
    let Some(data) = trace
        .get("data")
        .and_then(|d| d.as_array())
        .and_then(|d| d.first())
    else {
        return Ok(Vec::new());
    };
    let processes = &data["processes"];
    let spans = data["spans"].as_array().cloned().unwrap_or_default();
    Ok(spans
        .iter()
        .map(|span| {
            let process = span["processID"].as_str().unwrap_or_default();
            (
                processes[process]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                span["operationName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect())
}
