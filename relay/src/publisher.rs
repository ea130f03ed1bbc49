//! Publishes outbox rows to Kafka with an idempotent producer and reports
//! which rows the broker acknowledged.

use std::time::Duration;

use futures::future::join_all;
use outbox::{OutboxRow, headers};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use service_kit::trace_context;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long the producer waits to fill a batch before sending it. None: the
/// relay hands over a whole fetched batch at once, so batches fill without
/// waiting, and a lone message leaves at once.
pub const LINGER_MS: u32 = 0;

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    /// An idempotent producer (acks=all, ordered retries) with the Java
    /// client's key partitioner, so a key maps to the same partition from any client.
    pub fn new(brokers: &str) -> anyhow::Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", LINGER_MS.to_string())
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self { producer })
    }

    /// Sends every row and waits for the broker's answer to each. Returns the
    /// ids of the acknowledged rows; the others stay in the outbox.
    pub async fn publish(&self, rows: &[OutboxRow]) -> Vec<i64> {
        let sends = rows.iter().map(|row| {
            let span = publish_span(row);
            let record_headers = kafka_headers(row, &span);
            let send = async move {
                let record = FutureRecord::to(&row.topic)
                    .key(&row.message_key)
                    .payload(&row.payload)
                    .headers(record_headers);
                match self.producer.send_result(record) {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => Some(row.id),
                        Ok(Err((error, _))) => {
                            failed(row, &error);
                            None
                        }
                        Err(_canceled) => {
                            failed(row, &"producer dropped the message");
                            None
                        }
                    },
                    Err((error, _)) => {
                        failed(row, &error);
                        None
                    }
                }
            };
            send.instrument(span)
        });
        join_all(sends).await.into_iter().flatten().collect()
    }

    /// Waits for queued messages to be delivered, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "producer flush incomplete");
        }
    }
}

fn failed(row: &OutboxRow, error: &dyn std::fmt::Display) {
    tracing::Span::current().record("otel.status_code", "ERROR");
    tracing::warn!(
        message_id = %row.message_id,
        topic = %row.topic,
        %error,
        "outbox publish failed"
    );
}

/// A producer span continuing the trace stored with the row.
fn publish_span(row: &OutboxRow) -> tracing::Span {
    let span = tracing::info_span!(
        "outbox.publish",
        otel.name = %format!("{} publish", row.topic),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %row.topic,
        messaging.message.id = %row.message_id,
        messaging.kafka.message.key = %row.message_key,
        message.type = %row.message_type,
    );
    let _ = span.set_parent(trace_context::extract(row.header_pairs()));
    span
}

/// The row's own headers, the message id and type, and the trace context of
/// the publish span (replacing the enqueuing span's).
fn kafka_headers(row: &OutboxRow, span: &tracing::Span) -> OwnedHeaders {
    let trace = trace_context::inject(&span.context());
    let message_id = row.message_id.to_string();
    let mut out = OwnedHeaders::new()
        .insert(Header {
            key: headers::MESSAGE_ID,
            value: Some(&message_id),
        })
        .insert(Header {
            key: headers::MESSAGE_TYPE,
            value: Some(&row.message_type),
        });
    for (key, value) in row.header_pairs() {
        if !trace.contains_key(key) && key != headers::MESSAGE_ID && key != headers::MESSAGE_TYPE {
            out = out.insert(Header {
                key,
                value: Some(value),
            });
        }
    }
    for (key, value) in &trace {
        out = out.insert(Header {
            key,
            value: Some(value),
        });
    }
    out
}
