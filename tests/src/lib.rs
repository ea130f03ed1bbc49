//! End-to-end harness: starts the system's real binaries as child processes
//! against fresh databases, one Kafka topic namespace and the real Jaeger,
//! drives them over gRPC, and reads traces back from Jaeger's HTTP API.
//!
//! - [`Stack`]: the seven processes (kill, stop, start again), typed gRPC
//!   clients, seeding and read helpers ([`ops`]).
//! - [`WebhookReceiver`]: records the notification service's webhook calls.
//! - [`Duplicator`]: re-sends every command and reply with a fresh message id.
//! - [`jaeger`]: traces, spans, references and events from Jaeger.

pub mod checks;
pub mod duplicator;
pub mod jaeger;
pub mod ops;
pub mod stack;
pub mod webhook;

pub use duplicator::Duplicator;
pub use jaeger::{Span, Trace, fetch_trace, find_traces, jaeger_get, wait_trace};
pub use stack::{Service, Stack, StackOptions};
pub use webhook::{WebhookCall, WebhookReceiver};

/// The service names spans are reported under, one per binary.
pub const ALL_SERVICE_NAMES: [&str; 7] = [
    "order-service",
    "orchestrator",
    "inventory-service",
    "payment-service",
    "shipment-service",
    "notification-service",
    "outbox-relay",
];

/// The names of the services that contributed spans to trace `trace_id`,
/// with each span's operation name.
pub async fn trace_spans(trace_id: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(fetch_trace(trace_id)
        .await?
        .spans
        .into_iter()
        .map(|s| (s.service, s.operation))
        .collect())
}
