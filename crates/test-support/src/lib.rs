//! Test harness shared by every integration and end-to-end test. Tests run
//! against the real PostgreSQL and Kafka started by `scripts/infra.sh`; the
//! addresses come from the environment that `scripts/infra.sh env` prints,
//! with the same defaults. [`ServiceHarness`] is the world of one service
//! test: its database, its topics, and the other services' part on Kafka.

mod harness;
mod kafka;
mod postgres;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub use harness::{OutboxMessage, ServiceHarness};
pub use kafka::PrivateKafka;
pub use postgres::PrivatePostgres;

/// Base URL of the test PostgreSQL server, without a database name.
pub fn pg_base_url() -> String {
    std::env::var("ORDERSAGA_PG_URL_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432".to_owned())
}

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A short unique suffix for names of databases, topics and groups.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A database created for one test and dropped when the value is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let name = unique(&format!("test_{prefix}"));
        let mut admin = AsyncPgConnection::establish(&format!("{}/postgres", pg_base_url()))
            .await
            .context("cannot reach the test PostgreSQL; run `scripts/infra.sh up`")?;
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        Ok(Self {
            url: format!("{}/{name}", pg_base_url()),
            name,
        })
    }

    pub async fn connect(&self) -> anyhow::Result<AsyncPgConnection> {
        Ok(AsyncPgConnection::establish(&self.url).await?)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime, so the cleanup gets its own thread and runtime.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(mut admin) =
                        AsyncPgConnection::establish(&format!("{}/postgres", pg_base_url())).await
                    {
                        let _ = diesel::sql_query(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        ))
                        .execute(&mut admin)
                        .await;
                    }
                });
            }
        });
        let _ = cleanup.join();
    }
}

/// Row count of `table` in `conn`'s database.
pub async fn count_rows(conn: &mut AsyncPgConnection, table: &str) -> anyhow::Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
        .get_result(conn)
        .await?;
    Ok(count.n)
}

/// Creates a topic with a unique name for one test.
pub async fn create_topic(prefix: &str, partitions: i32) -> anyhow::Result<String> {
    create_topic_on(&kafka_brokers(), prefix, partitions).await
}

/// Creates a topic with a unique name on the broker at `brokers`.
pub async fn create_topic_on(
    brokers: &str,
    prefix: &str,
    partitions: i32,
) -> anyhow::Result<String> {
    let name = unique(prefix).replace('_', "-");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        result.map_err(|(topic, error)| anyhow::anyhow!("cannot create topic {topic}: {error}"))?;
    }
    Ok(name)
}

/// A consumer positioned at the current end of every partition of `topic`,
/// so it sees exactly the messages produced from now on.
pub async fn tail(topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("test-tail"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .with_context(|| format!("topic {topic} has no partitions"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..i32::try_from(partitions)? {
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// A message as the tests look at it.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
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
        Self {
            partition: message.partition(),
            offset: message.offset(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            headers,
            payload: message.payload().unwrap_or_default().to_vec(),
        }
    }
}

/// Collects messages until `done` holds for what was received, or fails
/// after `timeout`.
pub async fn receive_until(
    consumer: &StreamConsumer,
    timeout: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> anyhow::Result<Vec<Received>> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    while !done(&received) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!(
                "gave up after {timeout:?} with {} messages received",
                received.len()
            );
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => received.push(Received::from_message(&message)),
            Ok(Err(error)) => anyhow::bail!("consumer error: {error}"),
            Err(_) => {}
        }
    }
    Ok(received)
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every topic of `config/topics.txt`, created under a unique prefix (e.g.
/// `t-1a2b3c4d5e6f.`) so that one test's services, consumer groups and
/// messages never meet another's. Pass the prefix as `KAFKA_TOPIC_PREFIX`.
pub async fn topic_namespace() -> anyhow::Result<String> {
    let prefix = format!("{}.", unique("t").replace('_', "-"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()?;
    let listed = include_str!("../../../config/topics.txt");
    let names: Vec<(String, i32)> = listed
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            let partitions = fields.next()?.parse().ok()?;
            Some((format!("{prefix}{name}"), partitions))
        })
        .collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        result.map_err(|(topic, error)| anyhow::anyhow!("cannot create topic {topic}: {error}"))?;
    }
    Ok(prefix)
}

/// A topic namespace ([`topic_namespace`]) that deletes its topics when
/// dropped, for tests that set their services up without a
/// [`ServiceHarness`].
pub struct TopicNamespace {
    prefix: String,
}

impl TopicNamespace {
    pub async fn create() -> anyhow::Result<Self> {
        Ok(Self {
            prefix: topic_namespace().await?,
        })
    }

    /// The prefix to pass as `KAFKA_TOPIC_PREFIX`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for TopicNamespace {
    fn drop(&mut self) {
        delete_namespace_blocking(&self.prefix);
    }
}

/// [`delete_namespace`] from a `Drop`, which may run inside a runtime: on a
/// thread and runtime of its own, reporting a failure on stderr.
pub fn delete_namespace_blocking(prefix: &str) {
    let prefix = prefix.to_owned();
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime
            && let Err(error) = runtime.block_on(delete_namespace(&prefix))
        {
            eprintln!("cannot delete the topics of {prefix}: {error:#}");
        }
    });
    let _ = cleanup.join();
}

/// Deletes every topic of the namespace `prefix` (a shared broker would
/// otherwise keep every test's topics, and run out of memory).
pub async fn delete_namespace(prefix: &str) -> anyhow::Result<usize> {
    anyhow::ensure!(
        prefix.ends_with('.') && prefix.len() > 2,
        "not a namespace prefix: {prefix:?}"
    );
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    if topics.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    Ok(results.iter().filter(|r| r.is_ok()).count())
}

/// A producer for tests that play another service's part on Kafka.
pub fn producer() -> anyhow::Result<rdkafka::producer::FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()?)
}

/// Sends one message as the relay would: keyed, with `message-id` and
/// `message-type` headers. Returns the message id.
pub async fn send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    message_type: &str,
    message_id: uuid::Uuid,
    payload: &[u8],
) -> anyhow::Result<uuid::Uuid> {
    use rdkafka::message::{Header, OwnedHeaders};
    let id = message_id.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "message-id",
            value: Some(id.as_str()),
        })
        .insert(Header {
            key: "message-type",
            value: Some(message_type),
        });
    producer
        .send(
            rdkafka::producer::FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| anyhow::anyhow!("cannot send to {topic}: {error}"))?;
    Ok(message_id)
}
