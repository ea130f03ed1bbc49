//! The inbox table: which messages a consumer already took effect of.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

diesel::table! {
    inbox (consumer, message_id) {
        consumer -> Text,
        message_id -> Uuid,
        received_at -> Timestamptz,
    }
}

/// Records `message_id` as handled by `consumer` in the caller's
/// transaction. False when it already was: the message is a redelivery.
pub(crate) async fn claim(
    conn: &mut AsyncPgConnection,
    consumer: &str,
    message_id: Uuid,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(inbox::table)
        .values((
            inbox::consumer.eq(consumer),
            inbox::message_id.eq(message_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Forgets that `message_id` was handled, so a redriven copy is handled again.
pub(crate) async fn release(
    conn: &mut AsyncPgConnection,
    consumer: &str,
    message_id: Uuid,
) -> QueryResult<usize> {
    diesel::delete(
        inbox::table
            .filter(inbox::consumer.eq(consumer))
            .filter(inbox::message_id.eq(message_id)),
    )
    .execute(conn)
    .await
}

/// Deletes inbox rows older than `window`, which must exceed the time Kafka
/// may redeliver a message (its retention, plus consumer downtime).
pub async fn prune_inbox(conn: &mut AsyncPgConnection, window: Duration) -> QueryResult<usize> {
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    diesel::delete(inbox::table.filter(inbox::received_at.lt(cutoff)))
        .execute(conn)
        .await
}
