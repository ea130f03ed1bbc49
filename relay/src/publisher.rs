//! Publishes outbox rows to Kafka with an idempotent producer and reports
//! what became of each: acknowledged, refused for good (to be parked), held
//! behind a parked row of its key, or failed for now (to be retried).

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use outbox::{FetchedRow, OutboxRow, headers};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use service_kit::trace_context;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long the producer waits to fill a batch before sending it. None: the
/// relay hands over a whole fetched batch at once, so batches fill without
/// waiting, and a lone message leaves at once.
pub const LINGER_MS: u32 = 0;

/// How long a topic may be missing from the broker's metadata before its
/// messages fail as unknown (and are parked). Topics are created before the
/// services start, so a topic still unknown after this is missing, not new;
/// librdkafka's default (30 s, the message timeout) would make such rows
/// time out, which is retried forever, instead.
pub const TOPIC_PROPAGATION_MS: u32 = 10_000;

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
            .set(
                "topic.metadata.propagation.max.ms",
                TOPIC_PROPAGATION_MS.to_string(),
            )
            .create()?;
        Ok(Self { producer })
    }

    /// Sends every row that is not held, in order, and waits for the
    /// broker's answer to each; returns what became of each row (same order
    /// as `rows`). Once a row of a topic and key fails to be sent, the later
    /// rows of that key in the batch are not sent, so a key's order holds.
    pub async fn publish(&self, rows: &[FetchedRow]) -> Vec<Delivery> {
        let mut deliveries: Vec<Option<Delivery>> = vec![None; rows.len()];
        // Keys whose row failed at hand-over in this batch: true if refused for good.
        let mut stopped: HashMap<(&str, &str), bool> = HashMap::new();
        let mut sent = Vec::with_capacity(rows.len());
        for (index, fetched) in rows.iter().enumerate() {
            let row = &fetched.row;
            if fetched.held {
                deliveries[index] = Some(Delivery::Held);
                continue;
            }
            let key = (row.topic.as_str(), row.message_key.as_str());
            if let Some(refused) = stopped.get(&key) {
                deliveries[index] = Some(if *refused {
                    Delivery::Held
                } else {
                    Delivery::Failed { reason: None }
                });
                continue;
            }
            let span = publish_span(row);
            let record = FutureRecord::to(&row.topic)
                .key(&row.message_key)
                .payload(&row.payload)
                .headers(kafka_headers(row, &span));
            match self.producer.send_result(record) {
                Ok(delivery) => sent.push((index, delivery, span)),
                Err((error, _)) => {
                    let delivery = span.in_scope(|| failed(row, &error));
                    stopped.insert(key, matches!(delivery, Delivery::Refused { .. }));
                    deliveries[index] = Some(delivery);
                }
            }
        }
        let answers = sent.into_iter().map(|(index, delivery, span)| {
            let row = &rows[index].row;
            async move {
                let outcome = match delivery.await {
                    Ok(Ok(_)) => Delivery::Acked,
                    Ok(Err((error, _))) => failed(row, &error),
                    Err(_canceled) => {
                        tracing::Span::current().record("otel.status_code", "ERROR");
                        tracing::warn!(message_id = %row.message_id, topic = %row.topic, "producer dropped the message");
                        Delivery::Failed {
                            reason: Some("other"),
                        }
                    }
                };
                (index, outcome)
            }
            .instrument(span)
        });
        for (index, outcome) in join_all(answers).await {
            deliveries[index] = Some(outcome);
        }
        deliveries
            .into_iter()
            .map(|d| d.unwrap_or(Delivery::Failed { reason: None }))
            .collect()
    }

    /// Waits for queued messages to be delivered, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "producer flush incomplete");
        }
    }
}

/// What became of one row handed to [`Publisher::publish`].
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The broker acknowledged it: delete it.
    Acked,
    /// Kafka refuses it for good: park it with this error.
    Refused { error: String, reason: &'static str },
    /// Not sent, because an earlier row of its topic and key is (or is
    /// being) parked: park it behind that row.
    Held,
    /// Not published for now (`reason` None: not sent because an earlier row
    /// of its key failed); it stays in the outbox and is retried.
    Failed { reason: Option<&'static str> },
}

/// Whether Kafka will never take this message as it is, and a short reason
/// for metrics. Everything not known to be permanent is retried.
pub fn classify(error: &KafkaError) -> (bool, &'static str) {
    use RDKafkaErrorCode as Code;
    match error.rdkafka_error_code() {
        Some(Code::MessageSizeTooLarge | Code::MessageBatchTooLarge) => (true, "message_too_large"),
        // The broker's answer once the topic stayed missing for
        // TOPIC_PROPAGATION_MS. (The local UnknownTopic is librdkafka's
        // cached view at hand-over; a retry asks the broker again, so a topic
        // created meanwhile is found.)
        Some(Code::UnknownTopicOrPartition | Code::InvalidTopic) => (true, "unknown_topic"),
        Some(Code::UnknownTopic) => (false, "unknown_topic"),
        Some(Code::TopicAuthorizationFailed | Code::ClusterAuthorizationFailed) => {
            (true, "unauthorized")
        }
        Some(
            Code::InvalidRecord
            | Code::BadMessage
            | Code::InvalidTimestamp
            | Code::UnsupportedForMessageFormat
            | Code::PolicyViolation,
        ) => (true, "invalid_record"),
        Some(Code::MessageTimedOut | Code::OperationTimedOut | Code::RequestTimedOut) => {
            (false, "timeout")
        }
        Some(Code::QueueFull) => (false, "queue_full"),
        Some(Code::AllBrokersDown | Code::BrokerTransportFailure | Code::Resolve) => {
            (false, "broker_unavailable")
        }
        _ => (false, "other"),
    }
}

fn failed(row: &OutboxRow, error: &KafkaError) -> Delivery {
    tracing::Span::current().record("otel.status_code", "ERROR");
    let (permanent, reason) = classify(error);
    if permanent {
        tracing::error!(
            message_id = %row.message_id,
            topic = %row.topic,
            key = %row.message_key,
            %error,
            "kafka refuses outbox row, parking it"
        );
        Delivery::Refused {
            error: error.to_string(),
            reason,
        }
    } else {
        tracing::warn!(
            message_id = %row.message_id,
            topic = %row.topic,
            %error,
            "outbox publish failed"
        );
        Delivery::Failed {
            reason: Some(reason),
        }
    }
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
