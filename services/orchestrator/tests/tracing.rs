//! The saga's trace as Jaeger receives it: the orchestrator continues the
//! order's trace, sends every command inside a `saga <step>` span, and a
//! deadline is handled in a `saga.deadline` span of that same trace with a
//! `saga.step.timeout` event and the compensation spans inside it. Needs
//! Jaeger (OTLP on 127.0.0.1:4317, query API on 127.0.0.1:16686).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use prost::{Message as _, Name as _};
use proto::messages::v1 as msg;
use proto::orchestrator::v1 as api;
use proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use service_kit::config::{DatabaseArgs, KafkaArgs, ShutdownArgs, TelemetryArgs};
use service_kit::telemetry::Telemetry;
use test_support::{TestDatabase, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn jaeger_query_addr() -> String {
    std::env::var("JAEGER_QUERY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:16686".into())
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// `GET /api/traces/<id>` on Jaeger's query API; `None` while unknown.
async fn jaeger_trace(trace_id: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let addr = jaeger_query_addr();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .with_context(|| format!("Jaeger query API at {addr} is unreachable"))?;
    let request = format!(
        "GET /api/traces/{trace_id} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8(response)?;
    let (head, body) = text.split_once("\r\n\r\n").context("malformed response")?;
    if !head.lines().next().unwrap_or_default().contains(" 200 ") {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(body)?;
    Ok(value["data"].get(0).cloned())
}

#[derive(Debug)]
struct Span {
    id: String,
    parent: Option<String>,
    operation: String,
    events: Vec<String>,
}

fn spans(trace: &serde_json::Value) -> Vec<Span> {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|span| Span {
            id: span["spanID"].as_str().unwrap_or_default().to_owned(),
            parent: span["references"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["refType"] == "CHILD_OF"))
                .and_then(|r| r["spanID"].as_str())
                .map(str::to_owned),
            operation: span["operationName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            events: span["logs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|log| {
                    log["fields"]
                        .as_array()?
                        .iter()
                        .find(|f| f["key"] == "event")
                        .and_then(|f| f["value"].as_str())
                        .map(str::to_owned)
                })
                .collect(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_saga_stays_in_the_order_trace_with_a_span_per_command() {
    let mut telemetry_args = TelemetryArgs::quiet();
    telemetry_args.otlp_endpoint = "http://127.0.0.1:4317".into();
    telemetry_args.service_name = Some(test_support::unique("orchestrator-test"));
    let telemetry = Telemetry::init(&telemetry_args, "orchestrator").expect("telemetry");

    let db = TestDatabase::create("orchestrator_trace")
        .await
        .expect("database");
    let namespace = test_support::TopicNamespace::create()
        .await
        .expect("topics");
    let prefix = namespace.prefix().to_owned();
    let config = orchestrator::Config {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database: DatabaseArgs {
            database_url: db.url.clone(),
            database_pool_size: 4,
        },
        kafka: KafkaArgs::new(test_support::kafka_brokers(), &prefix),
        telemetry: TelemetryArgs::quiet(),
        grpc: service_kit::config::GrpcArgs::default(),
        shutdown: ShutdownArgs {
            shutdown_grace_seconds: 1,
        },
        saga_step_timeout_ms: 300,
        saga_max_attempts: 1,
        saga_retry_backoff_max_ms: 300,
        saga_deadline_scan_interval_ms: 50,
        saga_deadline_scan_batch: 10,
    };
    let app = orchestrator::Application::build(config)
        .await
        .expect("builds");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let mut client = OrchestratorServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client");

    // OrderCreated as the relay publishes it: inside the order's trace.
    let trace_id = Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let order_id = Uuid::now_v7();
    let created = msg::OrderCreated {
        order_id: order_id.to_string(),
        customer_id: "customer-1".into(),
        items: vec![msg::OrderLine {
            product_id: "sku-1".into(),
            quantity: 1,
        }],
        shipping_address: Some(msg::ShippingAddress::default()),
        created_at: None,
    };
    let message_id = Uuid::now_v7().to_string();
    let message_type = msg::OrderCreated::full_name();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "message-id",
            value: Some(message_id.as_str()),
        })
        .insert(Header {
            key: "message-type",
            value: Some(message_type.as_str()),
        })
        .insert(Header {
            key: "traceparent",
            value: Some(traceparent.as_str()),
        });
    let payload = created.encode_to_vec();
    let key = order_id.to_string();
    let topic = format!("{prefix}{}", proto::topics::ORDER_EVENTS);
    test_support::producer()
        .expect("producer")
        .send(
            FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("sent");

    // Nobody answers: the reservation times out, its release too.
    let saga = eventually(Duration::from_secs(20), "the saga to give up", async || {
        let saga = client
            .get_saga(api::GetSagaRequest {
                order_id: order_id.to_string(),
            })
            .await
            .ok()
            .map(tonic::Response::into_inner);
        Ok(saga.filter(|s| s.state() == api::SagaState::NeedsAttention))
    })
    .await
    .expect("needs attention");
    assert_eq!(
        saga.trace_id, trace_id,
        "the saga records the order's trace"
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    telemetry.shutdown();

    let wanted = [
        "saga reserve_stock",
        "saga.deadline",
        "saga compensate reserve_stock",
    ];
    let trace = eventually(
        Duration::from_secs(20),
        "the saga's spans in Jaeger",
        async || {
            let trace = jaeger_trace(&trace_id).await?;
            Ok(trace.filter(|t| {
                let spans = spans(t);
                wanted
                    .iter()
                    .all(|w| spans.iter().any(|s| s.operation == *w))
            }))
        },
    )
    .await
    .expect("trace in Jaeger");
    let spans = spans(&trace);
    let summary: Vec<&str> = spans.iter().map(|s| s.operation.as_str()).collect();
    let by_operation = |operation: &str| {
        spans
            .iter()
            .filter(|s| s.operation == operation)
            .collect::<Vec<_>>()
    };
    let deadlines = by_operation("saga.deadline");
    let timed_out: Vec<_> = deadlines
        .iter()
        .filter(|s| s.events.iter().any(|e| e == "saga.step.timeout"))
        .collect();
    assert_eq!(timed_out.len(), 1, "one forward step timed out: {spans:?}");
    let compensation = by_operation("saga compensate reserve_stock");
    assert_eq!(compensation.len(), 1, "{summary:?}");
    assert_eq!(
        compensation[0].parent.as_deref(),
        Some(timed_out[0].id.as_str()),
        "the compensation is sent inside the deadline span"
    );
    // The reservation is sent while handling OrderCreated, inside the
    // consumer span that continues the order's trace.
    let reserve = by_operation("saga reserve_stock");
    assert_eq!(reserve.len(), 1, "{summary:?}");
    let mut parent = reserve[0].parent.clone();
    let mut chain = Vec::new();
    while let Some(id) = parent {
        let Some(span) = spans.iter().find(|s| s.id == id) else {
            chain.push(id);
            break;
        };
        chain.push(span.operation.clone());
        parent = span.parent.clone();
    }
    assert_eq!(
        chain.last().map(String::as_str),
        Some("00f067aa0ba902b7"),
        "the step span descends from the order's span: {chain:?}"
    );
    assert!(
        chain
            .iter()
            .any(|op| op.ends_with("order.events.v1 process")),
        "through the consumer span: {chain:?}"
    );
}
