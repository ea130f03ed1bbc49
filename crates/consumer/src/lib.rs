//! The Kafka consumer runtime every consuming service uses.
//!
//! Each message is handled in one database transaction that first records its
//! message id in the `inbox` table: a redelivered message finds its row and
//! has no second effect. The handler writes its state and its outgoing
//! messages (through the outbox) in that same transaction; the Kafka offset is
//! stored only after the commit. Messages of one partition (and so of one
//! key) are handled in order, partitions concurrently. When several messages
//! of a partition are waiting, up to `max_batch` of them share one
//! transaction (still in offset order); if that transaction fails, each of
//! them is handled in its own, so one bad message never takes the others
//! down with it. Before the first message of a batch, [`Handler::lock_batch`]
//! takes the shared row locks the whole batch needs, in one global order, so
//! concurrent lanes never deadlock on them.
//!
//! Failures: a transient one (database unavailable, serialization conflict,
//! deadlock) is retried with exponential backoff and jitter, never dropped; a
//! permanent one (undecodable payload, unknown type, a handler's validation
//! error) is recorded in `dead_letters` and published to the dead-letter
//! topic with its reason, and the consumer moves on. [`deadletter::redrive`]
//! sends a dead letter back to its source topic.
//!
//! Metrics (through the `metrics` facade): `consumer_messages_total{consumer,
//! topic, outcome = handled|duplicate|dead_lettered}`,
//! `consumer_retries_total{consumer, kind = transient|retryable}`,
//! `consumer_dead_letters_total{consumer, topic}`,
//! `consumer_lag{consumer, topic, partition}` (from the Kafka client's
//! statistics every `lag_interval`) and `consumer_handle_duration_seconds{consumer}`
//! (per message, its transaction from begin to commit; the messages of a
//! batch share theirs). Every message's span carries `order_id` = its key.

pub mod deadletter;
mod inbox;
pub mod retry;
mod runtime;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;

use diesel_async::AsyncPgConnection;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use futures::future::BoxFuture;
use uuid::Uuid;

pub use inbox::prune_inbox;
pub use runtime::{ConsumerConfig, run};

/// The inbox and dead-letter tables; every consuming service runs this
/// migration together with its own.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Kafka headers added to a dead-lettered message.
pub mod headers {
    pub const REASON: &str = "dlq-reason";
    pub const CONSUMER: &str = "dlq-consumer";
    pub const SOURCE_TOPIC: &str = "dlq-source-topic";
    pub const SOURCE_PARTITION: &str = "dlq-source-partition";
    pub const SOURCE_OFFSET: &str = "dlq-source-offset";
    pub const ORIGINAL_MESSAGE_ID: &str = "dlq-original-message-id";
}

/// A received message, as handlers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    /// From the `message-id` header; for a message without a valid one, a
    /// stable id derived from its topic, partition and offset.
    pub message_id: Uuid,
    pub message_type: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Incoming {
    /// `message` as the runtime hands it to a handler when it arrives on
    /// `topic` with `key` and a fresh message id: for driving a handler
    /// without Kafka (offsets and headers are left empty).
    pub fn of<M: prost::Message + prost::Name>(topic: &str, key: &str, message: &M) -> Self {
        Self {
            topic: topic.to_owned(),
            partition: 0,
            offset: 0,
            key: key.to_owned(),
            message_id: Uuid::now_v7(),
            message_type: M::full_name(),
            headers: Vec::new(),
            payload: message.encode_to_vec(),
        }
    }

    /// Decodes the payload as `M`. A payload that is not a valid `M` is a
    /// permanent failure (the message is dead-lettered with the reason).
    pub fn decode<M>(&self) -> Result<M, HandlerError>
    where
        M: prost::Message + prost::Name + Default,
    {
        M::decode(self.payload.as_slice()).map_err(|error| {
            HandlerError::Permanent(format!("undecodable {} payload: {error}", M::full_name()))
        })
    }

    /// Whether the `message-type` header names `M`.
    pub fn is<M: prost::Name>(&self) -> bool {
        self.message_type == M::full_name()
    }

    /// The permanent failure for a message type this consumer does not handle.
    pub fn unknown_type(&self) -> HandlerError {
        HandlerError::Permanent(format!(
            "unknown message type {:?} on {}",
            self.message_type, self.topic
        ))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why a handler could not take effect of a message.
#[derive(Debug)]
pub enum HandlerError {
    /// Will succeed later (database down, conflict): retried until it does.
    Transient(anyhow::Error),
    /// Unexpected failure that may be transient: retried a bounded number of
    /// times, then dead-lettered.
    Retryable(anyhow::Error),
    /// Can never succeed: dead-lettered at once with this reason.
    Permanent(String),
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transient(error) => write!(f, "transient: {error:#}"),
            Self::Retryable(error) => write!(f, "{error:#}"),
            Self::Permanent(reason) => write!(f, "permanent: {reason}"),
        }
    }
}

impl From<diesel::result::Error> for HandlerError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match &error {
            Error::DatabaseError(
                Kind::SerializationFailure
                | Kind::ClosedConnection
                | Kind::UnableToSendCommand
                | Kind::ReadOnlyTransaction,
                _,
            ) => Self::Transient(error.into()),
            Error::DatabaseError(_, info)
                if info.message().contains("deadlock detected")
                    || info.message().contains("terminating connection") =>
            {
                Self::Transient(error.into())
            }
            _ => Self::Retryable(error.into()),
        }
    }
}

impl From<outbox::OutboxError> for HandlerError {
    fn from(error: outbox::OutboxError) -> Self {
        match error {
            outbox::OutboxError::Database(error) => error.into(),
        }
    }
}

/// Takes effect of messages. `handle` runs inside the runtime's transaction
/// on `conn`; it must not commit, and writes outgoing messages with
/// `outbox::enqueue` on the same connection. The transaction may hold
/// earlier messages of the same partition (a batch, in offset order); if any
/// of them fails, all of it is rolled back and each message is handled again
/// in a transaction of its own, so `handle` must have no effect outside the
/// transaction.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;

    /// Called once at the start of a batch's transaction, before any of its
    /// messages is handled: takes every row lock the batch's messages will
    /// take, in the one order every transaction of the service locks rows
    /// in (e.g. by id). Without it, two partition lanes whose batches lock
    /// shared rows (products, accounts) message by message lock them in
    /// different orders and deadlock; PostgreSQL breaks that only after
    /// `deadlock_timeout`, and both batches are replayed one message at a
    /// time. It should not wait for a lock (`FOR UPDATE NOWAIT`): a batch
    /// whose rows are not all free fails here at once, and the runtime
    /// handles its messages one per transaction, each holding only its own
    /// message's rows, so lanes contending for shared rows degrade to small
    /// transactions instead of queueing whole batches behind each other.
    /// Messages it cannot read are skipped (`handle` rejects them).
    /// The default takes no locks, for handlers whose messages only lock
    /// rows of their own key (one partition lane per key).
    fn lock_batch<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        batch: &'a [Incoming],
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        let _ = (conn, batch);
        Box::pin(async { Ok(()) })
    }
}
