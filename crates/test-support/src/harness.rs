//! The harness of one service under test: a fresh database, every topic
//! under a fresh prefix, the service running in a task until the harness is
//! dropped, commands or events sent as the other services would send them,
//! and what the service wrote to its outbox (no relay runs in a service
//! test).

use std::future::Future;
use std::net::SocketAddr;

use rdkafka::producer::FutureProducer;
use service_kit::config::{DatabaseArgs, KafkaArgs, ShutdownArgs};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::TestDatabase;

/// Where a service under test listens: a free loopback port.
const LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// One service test's database, topic namespace and producer. Dropping it
/// stops every service it spawned, then drops the database.
pub struct ServiceHarness {
    pub db: TestDatabase,
    kafka: KafkaArgs,
    producer: FutureProducer,
    shutdown: CancellationToken,
}

impl Drop for ServiceHarness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // A shared broker would otherwise keep every test's topics.
        crate::delete_namespace_blocking(&self.kafka.kafka_topic_prefix);
    }
}

impl ServiceHarness {
    /// A fresh database named after `service` and every topic of
    /// `config/topics.txt` under a fresh prefix.
    pub async fn create(service: &str) -> anyhow::Result<Self> {
        let db = TestDatabase::create(service).await?;
        let prefix = crate::topic_namespace().await?;
        Ok(Self {
            db,
            kafka: KafkaArgs::new(crate::kafka_brokers(), prefix),
            producer: crate::producer()?,
            shutdown: CancellationToken::new(),
        })
    }

    /// A free loopback port: the service's `LISTEN_ADDR` in a test.
    pub fn listen_addr(&self) -> SocketAddr {
        LISTEN_ADDR
    }

    /// The service's database settings: the test database, `pool_size`
    /// connections.
    pub fn database(&self, pool_size: usize) -> DatabaseArgs {
        DatabaseArgs {
            database_url: self.db.url.clone(),
            database_pool_size: pool_size,
        }
    }

    /// The service's Kafka settings: the test broker and this test's prefix.
    pub fn kafka(&self) -> KafkaArgs {
        self.kafka.clone()
    }

    /// The topic prefix of this test's namespace.
    pub fn prefix(&self) -> &str {
        &self.kafka.kafka_topic_prefix
    }

    /// The full name of topic `name` (one of `proto::topics`) in this test.
    pub fn topic(&self, name: &str) -> String {
        self.kafka.topic(name)
    }

    /// A one-second drain after shutdown, so tests end quickly.
    pub fn shutdown_args(&self) -> ShutdownArgs {
        ShutdownArgs {
            shutdown_grace_seconds: 1,
        }
    }

    /// Runs a built service (`|shutdown| app.run_until_stopped(shutdown)`)
    /// in a task until the harness is dropped. Call it again for a replica.
    pub fn spawn<F, Fut>(&self, run: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        tokio::spawn(run(self.shutdown.clone()));
    }

    /// Sends `message` to topic `name` (one of `proto::topics`) keyed by
    /// `key` with a new message id, as the relay publishes another
    /// service's message: a re-sent command is a new message. Returns the
    /// message id.
    pub async fn send<M: prost::Message + prost::Name>(
        &self,
        name: &str,
        key: &str,
        message: &M,
    ) -> anyhow::Result<Uuid> {
        self.send_raw(name, key, &M::full_name(), &message.encode_to_vec())
            .await
    }

    /// Sends any bytes as a message of type `message_type`, e.g. to see
    /// what the service makes of a payload it cannot decode.
    pub async fn send_raw(
        &self,
        name: &str,
        key: &str,
        message_type: &str,
        payload: &[u8],
    ) -> anyhow::Result<Uuid> {
        crate::send(
            &self.producer,
            &self.topic(name),
            key,
            message_type,
            Uuid::now_v7(),
            payload,
        )
        .await
    }

    /// Every message the service wrote to its outbox for topic `name` (one
    /// of `proto::topics`), in the order written.
    pub async fn outbox(&self, name: &str) -> anyhow::Result<Vec<OutboxMessage>> {
        let topic = self.topic(name);
        let mut conn = self.db.connect().await?;
        Ok(outbox::fetch_batch(&mut conn, 100_000)
            .await?
            .into_iter()
            .filter(|row| row.topic == topic)
            .map(|row| OutboxMessage {
                key: row.message_key,
                message_type: row.message_type,
                payload: row.payload,
            })
            .collect())
    }

    /// Row count of `table` in the service's database.
    pub async fn rows(&self, table: &str) -> anyhow::Result<i64> {
        let mut conn = self.db.connect().await?;
        crate::count_rows(&mut conn, table).await
    }
}

/// A message a service wrote to its outbox.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// The Kafka key: the order id.
    pub key: String,
    /// The full proto name of the payload.
    pub message_type: String,
    pub payload: Vec<u8>,
}

impl OutboxMessage {
    /// Whether the payload is an `M`.
    pub fn is<M: prost::Name>(&self) -> bool {
        self.message_type == M::full_name()
    }

    /// The payload decoded as an `M`; an error when it is of another type
    /// or does not decode.
    pub fn decode<M: prost::Message + prost::Name + Default>(&self) -> anyhow::Result<M> {
        anyhow::ensure!(
            self.is::<M>(),
            "expected {}, found {}",
            M::full_name(),
            self.message_type
        );
        Ok(M::decode(self.payload.as_slice())?)
    }
}
