//! Dead letters: messages a consumer could never handle. Each is kept in the
//! `dead_letters` table and published, through the outbox, to the
//! dead-letter topic with its reason and source coordinates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use outbox::OutgoingMessage;
use uuid::Uuid;

use crate::{Incoming, headers, inbox};

diesel::table! {
    dead_letters (id) {
        id -> Int8,
        consumer -> Text,
        message_id -> Uuid,
        message_type -> Text,
        source_topic -> Text,
        source_partition -> Int4,
        source_offset -> Int8,
        message_key -> Text,
        headers -> Jsonb,
        payload -> Bytea,
        reason -> Text,
        dead_lettered_at -> Timestamptz,
        redriven_at -> Nullable<Timestamptz>,
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = dead_letters, check_for_backend(diesel::pg::Pg))]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub message_id: Uuid,
    pub message_type: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub message_key: String,
    pub headers: serde_json::Value,
    pub payload: Vec<u8>,
    pub reason: String,
    pub dead_lettered_at: DateTime<Utc>,
    pub redriven_at: Option<DateTime<Utc>>,
}

fn headers_json(pairs: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

/// Headers worth carrying over when a message is re-sent: everything but
/// what the relay sets itself.
fn carried_headers<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    pairs
        .filter(|(k, _)| *k != outbox::headers::MESSAGE_ID && *k != outbox::headers::MESSAGE_TYPE)
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Records `message` as dead in the caller's transaction and enqueues its
/// copy for the dead-letter topic.
pub(crate) async fn record(
    conn: &mut AsyncPgConnection,
    consumer: &str,
    message: &Incoming,
    reason: &str,
    dead_letter_topic: &str,
) -> QueryResult<()> {
    diesel::insert_into(dead_letters::table)
        .values((
            dead_letters::consumer.eq(consumer),
            dead_letters::message_id.eq(message.message_id),
            dead_letters::message_type.eq(&message.message_type),
            dead_letters::source_topic.eq(&message.topic),
            dead_letters::source_partition.eq(message.partition),
            dead_letters::source_offset.eq(message.offset),
            dead_letters::message_key.eq(&message.key),
            dead_letters::headers.eq(headers_json(&message.headers)),
            dead_letters::payload.eq(&message.payload),
            dead_letters::reason.eq(reason),
        ))
        .execute(conn)
        .await?;
    let mut copy_headers = carried_headers(
        message
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    copy_headers.extend([
        (headers::REASON.to_owned(), reason.to_owned()),
        (headers::CONSUMER.to_owned(), consumer.to_owned()),
        (headers::SOURCE_TOPIC.to_owned(), message.topic.clone()),
        (
            headers::SOURCE_PARTITION.to_owned(),
            message.partition.to_string(),
        ),
        (
            headers::SOURCE_OFFSET.to_owned(),
            message.offset.to_string(),
        ),
        (
            headers::ORIGINAL_MESSAGE_ID.to_owned(),
            message.message_id.to_string(),
        ),
    ]);
    let copy = OutgoingMessage {
        message_id: Uuid::now_v7(),
        topic: dead_letter_topic.to_owned(),
        key: message.key.clone(),
        message_type: message.message_type.clone(),
        headers: copy_headers,
        payload: message.payload.clone(),
    };
    outbox::enqueue(conn, &[copy]).await.map_err(|e| match e {
        outbox::OutboxError::Database(error) => error,
    })
}

/// Dead letters not yet redriven, oldest first.
pub async fn pending(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<DeadLetter>> {
    dead_letters::table
        .filter(dead_letters::redriven_at.is_null())
        .order(dead_letters::id)
        .limit(limit)
        .select(DeadLetter::as_select())
        .load(conn)
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("dead letter {0} does not exist or was already redriven")]
    NotPending(i64),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Sends dead letter `id` back to its source topic with its original message
/// id, headers and payload, and forgets it in the inbox so it is handled
/// again. Runs in its own transaction; a dead letter is redriven once.
pub async fn redrive(conn: &mut AsyncPgConnection, id: i64) -> Result<(), RedriveError> {
    conn.transaction::<_, RedriveError, _>(async |conn| {
        let letter: DeadLetter = dead_letters::table
            .find(id)
            .filter(dead_letters::redriven_at.is_null())
            .select(DeadLetter::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?
            .ok_or(RedriveError::NotPending(id))?;
        inbox::release(conn, &letter.consumer, letter.message_id).await?;
        let pairs = letter
            .headers
            .as_object()
            .into_iter()
            .flat_map(|m| m.iter())
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)));
        let message = OutgoingMessage {
            message_id: letter.message_id,
            topic: letter.source_topic.clone(),
            key: letter.message_key.clone(),
            message_type: letter.message_type.clone(),
            headers: carried_headers(pairs),
            payload: letter.payload.clone(),
        };
        outbox::enqueue(conn, &[message]).await.map_err(|e| match e {
            outbox::OutboxError::Database(error) => RedriveError::Database(error),
        })?;
        diesel::update(dead_letters::table.find(id))
            .set(dead_letters::redriven_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        tracing::info!(dead_letter = id, message_id = %letter.message_id, topic = %letter.source_topic, "dead letter redriven");
        Ok(())
    })
    .await
}
