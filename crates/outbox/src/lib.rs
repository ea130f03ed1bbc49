//! The transactional outbox: the one way a service sends a Kafka message.
//!
//! A service calls [`enqueue`] on the connection of its open transaction, so
//! the message is committed atomically with the state change that caused it,
//! or not at all. `enqueue` never commits or opens a transaction of its own.
//! The relay reads committed rows with [`fetch_batch`] in id order, publishes
//! them, and removes them with [`delete`] only after Kafka acknowledged them.
//!
//! A row Kafka refuses for good (too large, unknown or forbidden topic,
//! invalid record) is parked in `outbox_parked` with its error, and so is
//! every later row of its topic and key, which keeps the key's order; the
//! other keys are published as usual. Once the cause is fixed, [`requeue`]
//! puts a key's parked rows back, ahead of newer rows. See ADR 0004.
//!
//! Every message carries the W3C trace context current at `enqueue` in its
//! headers, so the relay and the consumers continue the same trace.

mod schema;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use uuid::Uuid;

pub use schema::outbox as table;
pub use schema::outbox_parked as parked_table;

/// The migrations that create the outbox and parked-rows tables; every
/// service that enqueues runs them together with its own migrations.
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

/// An outbox row as the relay fetches it: `held` when an earlier row of its
/// topic and key is parked, so this one must be parked behind it, not sent.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedRow {
    pub row: OutboxRow,
    pub held: bool,
}

#[derive(QueryableByName)]
#[diesel(table_name = schema::outbox, check_for_backend(diesel::pg::Pg))]
struct HeldRow {
    id: i64,
    message_id: Uuid,
    topic: String,
    message_key: String,
    message_type: String,
    headers: serde_json::Value,
    payload: Vec<u8>,
    created_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    held: bool,
}

/// Like [`fetch_batch`], and says of each row whether a parked row holds it
/// back. Costs a lookup per row; the relay uses it only while rows are parked.
pub async fn fetch_batch_with_holds(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<FetchedRow>, OutboxError> {
    let rows: Vec<HeldRow> = diesel::sql_query(include_str!("fetch_batch_with_holds.sql"))
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| FetchedRow {
            row: OutboxRow {
                id: r.id,
                message_id: r.message_id,
                topic: r.topic,
                message_key: r.message_key,
                message_type: r.message_type,
                headers: r.headers,
                payload: r.payload,
                created_at: r.created_at,
            },
            held: r.held,
        })
        .collect())
}

/// Parks rows in one transaction: `refused` (id and Kafka's error) as
/// refused, then those of `held` whose topic and key still has an earlier
/// parked row as held behind it. Returns how many rows were parked.
pub async fn park(
    conn: &mut AsyncPgConnection,
    refused: &[(i64, String)],
    held: &[i64],
) -> Result<usize, OutboxError> {
    if refused.is_empty() && held.is_empty() {
        return Ok(0);
    }
    let (ids, errors): (Vec<i64>, Vec<String>) = refused.iter().cloned().unzip();
    let held = held.to_vec();
    Ok(conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let mut parked = 0;
            if !ids.is_empty() {
                parked += diesel::sql_query(include_str!("park_refused.sql"))
                    .bind::<Array<BigInt>, _>(&ids)
                    .bind::<Array<Text>, _>(&errors)
                    .execute(conn)
                    .await?;
            }
            if !held.is_empty() {
                parked += diesel::sql_query(include_str!("park_held.sql"))
                    .bind::<Array<BigInt>, _>(&held)
                    .execute(conn)
                    .await?;
            }
            Ok(parked)
        })
        .await?)
}

/// A row the relay parked.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = schema::outbox_parked, check_for_backend(diesel::pg::Pg))]
pub struct ParkedRow {
    /// Its id in the outbox, which it gets back when re-queued.
    pub id: i64,
    pub message_id: Uuid,
    pub topic: String,
    pub message_key: String,
    pub message_type: String,
    pub headers: serde_json::Value,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// Kafka's error, or which parked row it is held behind.
    pub error: String,
    /// None for the row Kafka refused; else the refused row of its key.
    pub held_behind: Option<i64>,
    pub parked_at: DateTime<Utc>,
}

/// Parked rows, oldest first.
pub async fn parked(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<ParkedRow>, OutboxError> {
    Ok(schema::outbox_parked::table
        .order(schema::outbox_parked::id.asc())
        .limit(limit)
        .select(ParkedRow::as_select())
        .load(conn)
        .await?)
}

/// Puts parked row `id` and every other parked row of its topic and key
/// back into the outbox under their original ids, so the relay publishes
/// them next, in order, before newer rows of that key. Call it once the
/// cause is fixed (a row that still cannot be published is parked again).
/// Runs in its own transaction; returns how many rows were re-queued (0 if
/// `id` is not parked).
pub async fn requeue(conn: &mut AsyncPgConnection, id: i64) -> Result<usize, OutboxError> {
    let requeued = diesel::sql_query(include_str!("requeue.sql"))
        .bind::<BigInt, _>(id)
        .execute(conn)
        .await?;
    if requeued > 0 {
        tracing::info!(parked_id = id, requeued, "parked outbox rows re-queued");
    }
    Ok(requeued)
}

/// What the relay reports about one outbox.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Stats {
    /// Rows waiting to be published.
    #[diesel(sql_type = BigInt)]
    pub backlog: i64,
    /// Age of the first row in publication order, by the database's clock.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
    pub oldest_age_seconds: Option<f64>,
    /// Rows parked.
    #[diesel(sql_type = BigInt)]
    pub parked: i64,
}

/// Tells enqueuing transactions whether to wake the relay with a `NOTIFY
/// outbox`: the relay sets it before it sleeps on `LISTEN outbox` and clears
/// it once rows flow, polling on its own meanwhile, so that under load no
/// commit notifies (notifying commits are serialised server-wide).
pub async fn set_listening(
    conn: &mut AsyncPgConnection,
    listening: bool,
) -> Result<(), OutboxError> {
    diesel::sql_query("UPDATE outbox_wakeup SET listening = $1")
        .bind::<diesel::sql_types::Bool, _>(listening)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts the backlog and the parked rows; a full count, so call it
/// periodically, not per batch.
pub async fn stats(conn: &mut AsyncPgConnection) -> Result<Stats, OutboxError> {
    Ok(diesel::sql_query(include_str!("stats.sql"))
        .get_result(conn)
        .await?)
}
