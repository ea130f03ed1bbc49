//! The transactional outbox: the one way a service sends a Kafka message.
//!
//! A service calls [`enqueue`] on the connection of its open transaction, so
//! the message is committed atomically with the state change that caused it,
//! or not at all. `enqueue` never commits or opens a transaction of its own.
//! The relay reads committed rows with [`fetch_batch`] in id order, publishes
//! them, and removes them with [`delete`] only after Kafka acknowledged them.
//!
//! Every message carries the W3C trace context current at `enqueue` in its
//! headers, so the relay and the consumers continue the same trace.

mod schema;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use uuid::Uuid;

pub use schema::outbox as table;

/// The migration that creates the outbox table; every service that enqueues
/// runs it together with its own migrations.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Kafka header names set on every published message.
pub mod headers {
    pub const MESSAGE_ID: &str = "message-id";
    pub const MESSAGE_TYPE: &str = "message-type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// A message to send: where it goes and what it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub message_id: Uuid,
    pub topic: String,
    pub key: String,
    pub message_type: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl OutgoingMessage {
    /// Encodes a protobuf payload and stamps it with a fresh message id and the
    /// trace context of the current span.
    pub fn new<M>(topic: impl Into<String>, key: impl Into<String>, payload: &M) -> Self
    where
        M: prost::Message + prost::Name,
    {
        Self {
            message_id: Uuid::now_v7(),
            topic: topic.into(),
            key: key.into(),
            message_type: M::full_name(),
            headers: service_kit::trace_context::current_context_headers(),
            payload: payload.encode_to_vec(),
        }
    }
}

/// A committed, not yet published outbox row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = schema::outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub topic: String,
    pub message_key: String,
    pub message_type: String,
    pub headers: serde_json::Value,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

impl OutboxRow {
    /// The stored extra headers as name/value pairs; non-string values are skipped.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .as_object()
            .into_iter()
            .flat_map(|map| map.iter())
            .filter_map(|(name, value)| value.as_str().map(|value| (name.as_str(), value)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox query failed")]
    Database(#[from] diesel::result::Error),
}

#[derive(Insertable)]
#[diesel(table_name = schema::outbox)]
struct NewRow<'a> {
    message_id: Uuid,
    topic: &'a str,
    message_key: &'a str,
    message_type: &'a str,
    headers: serde_json::Value,
    payload: &'a [u8],
}

/// Writes messages into the outbox on `conn`, which must be inside the
/// caller's transaction: they become visible to the relay when, and only if,
/// that transaction commits.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    messages: &[OutgoingMessage],
) -> Result<(), OutboxError> {
    if messages.is_empty() {
        return Ok(());
    }
    let rows: Vec<NewRow<'_>> = messages
        .iter()
        .map(|m| NewRow {
            message_id: m.message_id,
            topic: &m.topic,
            message_key: &m.key,
            message_type: &m.message_type,
            headers: serde_json::Value::Object(
                m.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            ),
            payload: &m.payload,
        })
        .collect();
    diesel::insert_into(schema::outbox::table)
        .values(&rows)
        .execute(conn)
        .await?;
    Ok(())
}

/// The oldest `limit` committed rows, in publication order.
pub async fn fetch_batch(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<OutboxRow>, OutboxError> {
    Ok(schema::outbox::table
        .order(schema::outbox::id.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(conn)
        .await?)
}

/// Removes published rows. Returns how many were removed.
pub async fn delete(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<usize, OutboxError> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(
        diesel::delete(schema::outbox::table.filter(schema::outbox::id.eq_any(ids)))
            .execute(conn)
            .await?,
    )
}

/// Number of rows waiting to be published.
pub async fn backlog(conn: &mut AsyncPgConnection) -> Result<i64, OutboxError> {
    Ok(schema::outbox::table.count().get_result(conn).await?)
}
