//! The consuming loop: one lane (task) per partition, each handling its
//! messages in order; a lane whose backlog grows past its high-water mark has
//! its partition paused, so a message in retry holds up only its partition.
//! A lane with several messages waiting handles up to `max_batch` of them in
//! one transaction, and falls back to one per transaction if that fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel_async::AsyncConnection;
use metrics::{Counter, Histogram};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use service_kit::db::PgPool;
use service_kit::trace_context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::retry::RetryPolicy;
use crate::{Handler, HandlerError, Incoming, deadletter, inbox};

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Names the consumer in the inbox and is its Kafka consumer group.
    pub name: String,
    pub brokers: String,
    pub topics: Vec<String>,
    pub dead_letter_topic: String,
    pub retry: RetryPolicy,
    /// Messages a partition lane may have waiting before the partition is paused.
    pub partition_high_water: usize,
    /// How long inbox rows are kept; must exceed Kafka's redelivery horizon.
    pub inbox_retention: Duration,
    /// How often inbox rows older than `inbox_retention` are deleted.
    pub inbox_prune_interval: Duration,
    /// Most waiting messages of one partition handled in one transaction; 1
    /// handles every message in its own.
    pub max_batch: usize,
    /// How often the `consumer_lag` gauges are refreshed from the Kafka
    /// client's statistics; zero turns them off.
    pub lag_interval: Duration,
    /// How long the group waits for a silent member (a crashed process)
    /// before moving its partitions to the others. Well under the saga's
    /// step timeout (30 s), so a crash does not make sagas time out; the
    /// client heartbeats every third of it from a thread of its own.
    pub session_timeout: Duration,
}

impl ConsumerConfig {
    pub fn new(name: &str, brokers: &str, topics: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            brokers: brokers.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            dead_letter_topic: "dead-letter.v1".to_owned(),
            retry: RetryPolicy::default(),
            partition_high_water: 512,
            inbox_retention: Duration::from_secs(14 * 24 * 3600),
            inbox_prune_interval: Duration::from_secs(3600),
            max_batch: 32,
            lag_interval: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
        }
    }

    /// A service's consumer: group and topics (names from `proto::topics`)
    /// in the namespace of `kafka`'s topic prefix, dead letters to its
    /// `dead-letter.v1`.
    pub fn for_service(
        kafka: &service_kit::config::KafkaArgs,
        name: &str,
        topics: &[&str],
    ) -> Self {
        let topics: Vec<String> = topics.iter().map(|t| kafka.topic(t)).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut config = Self::new(&kafka.group(name), &kafka.kafka_brokers, &topics);
        config.dead_letter_topic = kafka.topic("dead-letter.v1");
        config
    }
}

struct Context {
    config: ConsumerConfig,
    pool: PgPool,
    handler: Arc<dyn Handler>,
    consumer: Arc<StreamConsumer<LagReporter>>,
    shutdown: CancellationToken,
}

/// Turns the Kafka client's periodic statistics into `consumer_lag` gauges:
/// per assigned partition, the high watermark minus the next offset to
/// store (the messages not yet taken effect of).
struct LagReporter {
    consumer: String,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                if *partition < 0 || !p.desired {
                    continue;
                }
                let lag = if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else {
                    p.consumer_lag
                };
                if lag >= 0 {
                    metrics::gauge!(
                        "consumer_lag",
                        "consumer" => self.consumer.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string(),
                    )
                    .set(lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

/// The metrics of one lane, registered once.
struct LaneMetrics {
    handled: Counter,
    duplicate: Counter,
    dead_lettered: Counter,
    dead_letters: Counter,
    transient_retries: Counter,
    retryable_retries: Counter,
    duration: Histogram,
}

impl LaneMetrics {
    fn new(consumer: &str, topic: &str) -> Self {
        let messages = |outcome: &'static str| {
            metrics::counter!(
                "consumer_messages_total",
                "consumer" => consumer.to_owned(),
                "topic" => topic.to_owned(),
                "outcome" => outcome,
            )
        };
        let retries = |kind: &'static str| metrics::counter!("consumer_retries_total", "consumer" => consumer.to_owned(), "kind" => kind);
        Self {
            handled: messages("handled"),
            duplicate: messages("duplicate"),
            dead_lettered: messages("dead_lettered"),
            dead_letters: metrics::counter!(
                "consumer_dead_letters_total",
                "consumer" => consumer.to_owned(),
                "topic" => topic.to_owned(),
            ),
            transient_retries: retries("transient"),
            retryable_retries: retries("retryable"),
            duration: metrics::histogram!(
                "consumer_handle_duration_seconds",
                "consumer" => consumer.to_owned(),
            ),
        }
    }

    fn took_effect(&self, outcome: &Outcome, started: Instant) {
        match outcome {
            Outcome::Handled => self.handled.increment(1),
            Outcome::Duplicate => self.duplicate.increment(1),
        }
        self.duration.record(started.elapsed());
    }
}

struct Lane {
    sender: mpsc::UnboundedSender<OwnedMessage>,
    backlog: Arc<AtomicUsize>,
    paused: bool,
}

/// Consumes until `shutdown`, then lets each lane finish the message it is
/// on and commits the stored offsets.
pub async fn run(
    config: ConsumerConfig,
    pool: PgPool,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let lag = LagReporter {
        consumer: config.name.clone(),
    };
    let consumer: Arc<StreamConsumer<LagReporter>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.name)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 3).max(1).to_string(),
            )
            .set(
                "statistics.interval.ms",
                config.lag_interval.as_millis().to_string(),
            )
            .create_with_context(lag)
            .context("cannot create the Kafka consumer")?,
    );
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(consumer = %config.name, topics = ?config.topics, "consumer started");

    let high_water = config.partition_high_water.max(1);
    let ctx = Arc::new(Context {
        config,
        pool,
        handler,
        consumer: consumer.clone(),
        shutdown: shutdown.clone(),
    });
    let mut lanes: HashMap<(String, i32), Lane> = HashMap::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(prune_periodically(ctx.clone()));
    let mut tick = tokio::time::interval(Duration::from_millis(100));

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => resume_drained(&consumer, &mut lanes, high_water),
            received = consumer.recv() => match received {
                Ok(message) => {
                    let message = message.detach();
                    let key = (message.topic().to_owned(), message.partition());
                    let lane = lanes.entry(key.clone()).or_insert_with(|| {
                        let (sender, receiver) = mpsc::unbounded_channel();
                        let backlog = Arc::new(AtomicUsize::new(0));
                        let metrics = LaneMetrics::new(&ctx.config.name, &key.0);
                        tasks.spawn(run_lane(ctx.clone(), receiver, backlog.clone(), metrics));
                        Lane { sender, backlog, paused: false }
                    });
                    let waiting = lane.backlog.fetch_add(1, Ordering::SeqCst) + 1;
                    if lane.sender.send(message).is_err() {
                        tracing::error!(topic = %key.0, partition = key.1, "partition lane stopped");
                    }
                    if waiting > high_water && !lane.paused {
                        set_paused(&consumer, &key, true);
                        lane.paused = true;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }

    drop(lanes);
    while tasks.join_next().await.is_some() {}
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "nothing to commit at shutdown");
    }
    tracing::info!(consumer = %ctx.config.name, "consumer stopped");
    Ok(())
}

fn set_paused(
    consumer: &StreamConsumer<LagReporter>,
    (topic, partition): &(String, i32),
    paused: bool,
) {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, *partition);
    let result = if paused {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    };
    match result {
        Ok(()) => tracing::debug!(%topic, partition, paused, "partition flow changed"),
        Err(error) => tracing::warn!(%topic, partition, %error, "cannot change partition flow"),
    }
}

fn resume_drained(
    consumer: &StreamConsumer<LagReporter>,
    lanes: &mut HashMap<(String, i32), Lane>,
    high_water: usize,
) {
    for (key, lane) in lanes.iter_mut() {
        if lane.paused && lane.backlog.load(Ordering::SeqCst) <= high_water / 2 {
            set_paused(consumer, key, false);
            lane.paused = false;
        }
    }
}

async fn run_lane(
    ctx: Arc<Context>,
    mut receiver: mpsc::UnboundedReceiver<OwnedMessage>,
    backlog: Arc<AtomicUsize>,
    metrics: LaneMetrics,
) {
    let max_batch = ctx.config.max_batch.max(1);
    loop {
        let first = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            message = receiver.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let mut batch = vec![to_incoming(&first)];
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(message) => batch.push(to_incoming(&message)),
                Err(_) => break,
            }
        }
        let done = if batch.len() == 1 {
            let span = consume_span(&ctx.config.name, &batch[0]);
            usize::from(process(&ctx, &batch[0], &metrics).instrument(span).await)
        } else {
            process_batch(&ctx, &batch, &metrics).await
        };
        // `store_offset` (rd_kafka_offset_store) stores `offset + 1` itself:
        // pass the last handled message's own offset, or a restarted or
        // rebalanced consumer skips the message after it.
        if let Some(last) = done.checked_sub(1).map(|i| &batch[i])
            && let Err(error) = ctx
                .consumer
                .store_offset(&last.topic, last.partition, last.offset)
        {
            // The partition moved to another member; it redelivers, the inbox deduplicates.
            tracing::debug!(%error, topic = %last.topic, partition = last.partition, "offset not stored");
        }
        backlog.fetch_sub(done, Ordering::SeqCst);
        if done < batch.len() {
            return; // shut down mid-retry: the offset stays, the messages come back
        }
    }
}

fn to_incoming(message: &OwnedMessage) -> Incoming {
    let headers: Vec<(String, String)> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let message_id = find(outbox::headers::MESSAGE_ID)
        .and_then(|id| Uuid::parse_str(&id).ok())
        .unwrap_or_else(|| {
            let coordinates = format!(
                "{}/{}/{}",
                message.topic(),
                message.partition(),
                message.offset()
            );
            Uuid::new_v5(&Uuid::NAMESPACE_OID, coordinates.as_bytes())
        });
    Incoming {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        message_id,
        message_type: find(outbox::headers::MESSAGE_TYPE).unwrap_or_default(),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
    }
}

fn consume_span(consumer: &str, message: &Incoming) -> tracing::Span {
    let span = tracing::info_span!(
        "consumer.process",
        otel.name = %format!("{} process", message.topic),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %message.topic,
        messaging.consumer.group.name = %consumer,
        messaging.message.id = %message.message_id,
        messaging.kafka.message.key = %message.key,
        messaging.kafka.offset = message.offset,
        messaging.destination.partition.id = message.partition,
        message.type = %message.message_type,
        order_id = %message.key,
    );
    let parent = trace_context::extract(
        message
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let _ = span.set_parent(parent);
    span
}

enum Outcome {
    Handled,
    Duplicate,
}

/// Handles one message until it took effect, was a duplicate, or was
/// dead-lettered (true), or shutdown interrupted a retry (false).
async fn process(ctx: &Context, message: &Incoming, metrics: &LaneMetrics) -> bool {
    let policy = &ctx.config.retry;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let started = Instant::now();
        let failure = match handle_once(ctx, message).await {
            Ok(outcome) => {
                if let Outcome::Duplicate = outcome {
                    tracing::info!(message_id = %message.message_id, "duplicate message skipped");
                }
                metrics.took_effect(&outcome, started);
                return true;
            }
            Err(HandlerError::Permanent(reason)) => Some(reason),
            Err(HandlerError::Retryable(error)) if attempt >= policy.max_attempts => {
                Some(format!("gave up after {attempt} attempts: {error:#}"))
            }
            Err(error) => {
                match error {
                    HandlerError::Transient(_) => metrics.transient_retries.increment(1),
                    _ => metrics.retryable_retries.increment(1),
                }
                tracing::warn!(message_id = %message.message_id, attempt, error = %error, "message handling failed, retrying");
                None
            }
        };
        if let Some(reason) = failure {
            return dead_letter(ctx, message, &reason, metrics).await;
        }
        tokio::select! {
            () = tokio::time::sleep(policy.delay(attempt, &mut rand::rng())) => {}
            () = ctx.shutdown.cancelled() => return false,
        }
    }
}

/// Handles several waiting messages of one partition in one transaction, in
/// offset order. If that fails, nothing of it was committed and each message
/// is handled on its own, so a poison message is dead-lettered alone.
/// Returns how many messages, from the first, are done (all of them unless
/// shutdown interrupted a retry).
async fn process_batch(ctx: &Context, batch: &[Incoming], metrics: &LaneMetrics) -> usize {
    let spans: Vec<tracing::Span> = batch
        .iter()
        .map(|message| consume_span(&ctx.config.name, message))
        .collect();
    let started = Instant::now();
    match handle_batch(ctx, batch, &spans).await {
        Ok(outcomes) => {
            for ((message, span), outcome) in batch.iter().zip(&spans).zip(&outcomes) {
                if let Outcome::Duplicate = outcome {
                    span.in_scope(|| {
                        tracing::info!(message_id = %message.message_id, "duplicate message skipped");
                    });
                }
                metrics.took_effect(outcome, started);
            }
            return batch.len();
        }
        Err(error) => {
            tracing::debug!(
                messages = batch.len(),
                topic = %batch[0].topic,
                partition = batch[0].partition,
                first_offset = batch[0].offset,
                error = %error,
                "batch failed, handling its messages one at a time"
            );
        }
    }
    for (done, (message, span)) in batch.iter().zip(spans).enumerate() {
        if !process(ctx, message, metrics).instrument(span).await {
            return done;
        }
    }
    batch.len()
}

fn has_message_id(message: &Incoming) -> bool {
    message
        .header(outbox::headers::MESSAGE_ID)
        .and_then(|id| Uuid::parse_str(id).ok())
        .is_some()
}

/// A pooled connection; none available means the database is down, which
/// is transient.
async fn connection(
    ctx: &Context,
) -> Result<
    diesel_async::pooled_connection::deadpool::Object<diesel_async::AsyncPgConnection>,
    HandlerError,
> {
    ctx.pool
        .get()
        .await
        .map_err(|error| HandlerError::Transient(error.into()))
}

async fn handle_once(ctx: &Context, message: &Incoming) -> Result<Outcome, HandlerError> {
    if !has_message_id(message) {
        return Err(HandlerError::Permanent(
            "missing or malformed message-id header".to_owned(),
        ));
    }
    let mut conn = connection(ctx).await?;
    conn.transaction::<_, HandlerError, _>(async |conn| {
        if !inbox::claim(conn, &ctx.config.name, message.message_id).await? {
            return Ok(Outcome::Duplicate);
        }
        ctx.handler.handle(conn, message).await?;
        Ok(Outcome::Handled)
    })
    .await
}

/// One transaction over every message of `batch`, each claimed in the inbox
/// and handled in its own span, in order.
async fn handle_batch(
    ctx: &Context,
    batch: &[Incoming],
    spans: &[tracing::Span],
) -> Result<Vec<Outcome>, HandlerError> {
    if !batch.iter().all(has_message_id) {
        return Err(HandlerError::Permanent(
            "a message without a valid message-id is handled alone".to_owned(),
        ));
    }
    let mut conn = connection(ctx).await?;
    conn.transaction::<_, HandlerError, _>(async |conn| {
        ctx.handler.lock_batch(conn, batch).await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (message, span) in batch.iter().zip(spans) {
            let outcome = async {
                if !inbox::claim(conn, &ctx.config.name, message.message_id).await? {
                    return Ok(Outcome::Duplicate);
                }
                ctx.handler.handle(conn, message).await?;
                Ok::<_, HandlerError>(Outcome::Handled)
            }
            .instrument(span.clone())
            .await?;
            outcomes.push(outcome);
        }
        Ok(outcomes)
    })
    .await
}

/// Records the message as dead and claims it in the inbox, retrying while
/// the database is unavailable. False only if shutdown interrupted.
async fn dead_letter(
    ctx: &Context,
    message: &Incoming,
    reason: &str,
    metrics: &LaneMetrics,
) -> bool {
    tracing::Span::current().record("otel.status_code", "ERROR");
    tracing::warn!(message_id = %message.message_id, topic = %message.topic, partition = message.partition, offset = message.offset, %reason, "message dead-lettered");
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result: Result<(), HandlerError> = async {
            let mut conn = connection(ctx).await?;
            conn.transaction::<_, HandlerError, _>(async |conn| {
                if inbox::claim(conn, &ctx.config.name, message.message_id).await? {
                    deadletter::record(
                        conn,
                        &ctx.config.name,
                        message,
                        reason,
                        &ctx.config.dead_letter_topic,
                    )
                    .await?;
                }
                Ok(())
            })
            .await
        }
        .await;
        match result {
            Ok(()) => {
                metrics.dead_lettered.increment(1);
                metrics.dead_letters.increment(1);
                return true;
            }
            Err(error) => {
                metrics.transient_retries.increment(1);
                tracing::warn!(message_id = %message.message_id, attempt, %error, "cannot record dead letter, retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.config.retry.delay(attempt, &mut rand::rng())) => {}
            () = ctx.shutdown.cancelled() => return false,
        }
    }
}

async fn prune_periodically(ctx: Arc<Context>) {
    let mut every = tokio::time::interval(
        ctx.config
            .inbox_prune_interval
            .max(Duration::from_millis(10)),
    );
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match ctx.pool.get().await {
            Ok(mut conn) => match inbox::prune_inbox(&mut conn, ctx.config.inbox_retention).await {
                Ok(pruned) => tracing::debug!(pruned, "inbox pruned"),
                Err(error) => tracing::warn!(%error, "inbox pruning failed"),
            },
            Err(error) => tracing::warn!(%error, "inbox pruning skipped: no connection"),
        }
    }
}
