//! The duplicator: re-sends every command and reply of a namespace once more,
//! as a retrying sender would, with a fresh `message-id`. The inbox cannot
//! recognise such a copy; only the services' per-order idempotency can
//! absorb it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinHandle;

/// Header marking a copy, so copies are not copied again; its value is the
/// original's message id.
pub const COPY_HEADER: &str = "e2e-duplicate-of";

/// The topics whose messages are duplicated: every command topic and the
/// replies.
pub const DUPLICATED_TOPICS: [&str; 5] = [
    proto::topics::INVENTORY_COMMANDS,
    proto::topics::PAYMENT_COMMANDS,
    proto::topics::SHIPMENT_COMMANDS,
    proto::topics::ORDER_COMMANDS,
    proto::topics::SAGA_REPLIES,
];

pub struct Duplicator {
    copies: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Duplicator {
    /// Starts copying every message of the namespace `prefix`'s duplicated
    /// topics, from their beginning.
    pub async fn start(prefix: &str) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", test_support::kafka_brokers())
            .set("group.id", test_support::unique("e2e-duplicator"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let topics: Vec<String> = DUPLICATED_TOPICS
            .iter()
            .map(|t| format!("{prefix}{t}"))
            .collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let producer = test_support::producer()?;
        let copies = Arc::new(AtomicUsize::new(0));
        let counter = copies.clone();
        let task = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(message) => {
                        if let Err(error) = copy(&producer, &message).await {
                            eprintln!("duplicator: {error:#}");
                        } else if !is_copy(&message) {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(error) => {
                        eprintln!("duplicator: consumer error: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self { copies, task })
    }

    /// How many messages were copied so far.
    pub fn copies(&self) -> usize {
        self.copies.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Duplicator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_copy(message: &rdkafka::message::BorrowedMessage<'_>) -> bool {
    message
        .headers()
        .is_some_and(|headers| headers.iter().any(|h| h.key == COPY_HEADER))
}

/// Produces `message` again to its topic and partition, with its key,
/// payload and headers, but a fresh `message-id` and the copy marker.
async fn copy(
    producer: &FutureProducer,
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> anyhow::Result<()> {
    if is_copy(message) {
        return Ok(());
    }
    let mut original_id = String::new();
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            if header.key == "message-id" {
                original_id =
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned();
                continue;
            }
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    let fresh = uuid::Uuid::now_v7().to_string();
    headers = headers
        .insert(Header {
            key: "message-id",
            value: Some(fresh.as_str()),
        })
        .insert(Header {
            key: COPY_HEADER,
            value: Some(original_id.as_str()),
        });
    let mut record = FutureRecord::<[u8], [u8]>::to(message.topic())
        .partition(message.partition())
        .headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(error, _)| anyhow::anyhow!("{error}"))
        .with_context(|| format!("cannot copy a message of {}", message.topic()))?;
    Ok(())
}
