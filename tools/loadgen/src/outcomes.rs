//! The outcome consumer: reads `order.events.v1` under its own, unique
//! consumer group, assigned at the end offsets of every partition before the
//! run starts (so it sees exactly the events from then on and commits
//! nothing), and hands each OrderApproved / OrderRejected to a callback.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use tokio_util::sync::CancellationToken;

use crate::tracker::{Outcome, decode_outcome};

/// A consumer positioned at the current end of `topic`.
pub fn subscribe_at_end(brokers: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let group = format!("loadgen-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "20")
        .set("socket.nagle.disable", "true")
        .create()
        .context("cannot create the Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .with_context(|| format!("topic {topic} does not exist or has no partitions"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..i32::try_from(partitions)? {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("cannot read the end offset of {topic}/{partition}"))?;
        assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Consumes until `stop`, calling `on_outcome(order_id, outcome)` for every
/// outcome event. Returns the number of messages read and of receive errors.
pub async fn consume(
    consumer: StreamConsumer,
    stop: CancellationToken,
    mut on_outcome: impl FnMut(String, Outcome),
) -> (u64, u64) {
    let (mut messages, mut errors) = (0, 0);
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            received = consumer.recv() => received,
        };
        match received {
            Ok(message) => {
                messages += 1;
                let message_type = message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == "message-type")
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                });
                if let Some((order_id, outcome)) = decode_outcome(
                    message.key(),
                    message_type,
                    message.payload().unwrap_or(&[]),
                ) {
                    on_outcome(order_id, outcome);
                }
            }
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (messages, errors)
}
