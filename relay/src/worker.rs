//! One database's publishing loop: take the lease, then publish committed
//! outbox rows in id order, deleting each only after Kafka acknowledged it.

use std::pin::pin;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::publisher::Publisher;

/// Advisory lock key of the relay lease; one per database, held by the
/// active relay's session and released by Postgres when that session ends.
pub const LEASE_KEY: i64 = 0x6f75_7462_6f78_5f72; // "outbox_r"

/// How often a standby relay tries to take the lease.
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// Pause after a failed batch or a lost connection, doubling up to the maximum.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub batch_size: i64,
    pub poll_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect")]
    Connect(#[from] diesel::ConnectionError),
    #[error("query failed")]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}

/// The name of the database in `url`, for logs (never the URL itself, which
/// may hold a password).
pub fn database_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .filter(|name| !name.is_empty())
        .unwrap_or("database")
        .to_owned()
}

/// Publishes `url`'s outbox until `shutdown`, reconnecting after failures.
pub async fn run(
    url: String,
    publisher: Publisher,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) {
    let database = database_name(&url);
    let mut backoff = MIN_BACKOFF;
    while !shutdown.is_cancelled() {
        match session(&url, &database, &publisher, &settings, &shutdown).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%database, error = %format!("{error:#}"), backoff_ms = backoff.as_millis(), "relay session ended, reconnecting");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::info!(%database, "relay stopped");
}

/// One connection's life: wait for the lease, then publish until shutdown or
/// an error. The lease dies with the connection.
async fn session(
    url: &str,
    database: &str,
    publisher: &Publisher,
    settings: &WorkerSettings,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    // A relay that dies mid-query must not keep its statement (or the lease)
    // alive: the server checks the client socket while the query waits.
    diesel::sql_query("SET application_name = 'outbox-relay'")
        .execute(&mut conn)
        .await?;
    diesel::sql_query("SET client_connection_check_interval = '1s'")
        .execute(&mut conn)
        .await?;
    // The session's only writes are deletes of acknowledged rows. One lost in
    // a server crash republishes its rows, which at-least-once delivery
    // already allows, so they need not wait for the WAL flush.
    diesel::sql_query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    let mut standby_logged = false;
    loop {
        if try_lease(&mut conn).await? {
            break;
        }
        if !standby_logged {
            tracing::info!(%database, "another relay holds the lease, standing by");
            standby_logged = true;
        }
        tokio::select! {
            () = tokio::time::sleep(LEASE_RETRY) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
    tracing::info!(%database, "lease acquired, publishing");
    diesel::sql_query("LISTEN outbox")
        .execute(&mut conn)
        .await?;

    let mut backoff = MIN_BACKOFF;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        drain_notifications(&mut conn);
        let started = Instant::now();
        let rows = outbox::fetch_batch(&mut conn, settings.batch_size).await?;
        if rows.is_empty() {
            wait_for_rows(&mut conn, settings.poll_interval, shutdown).await?;
            continue;
        }
        let fetched = Instant::now();
        let acked = publisher.publish(&rows).await;
        let published = Instant::now();
        outbox::delete(&mut conn, &acked).await?;
        tracing::debug!(
            %database,
            published = acked.len(),
            batch = rows.len(),
            fetch_us = (fetched - started).as_micros(),
            publish_us = (published - fetched).as_micros(),
            delete_us = published.elapsed().as_micros(),
            "outbox batch published"
        );
        if acked.len() == rows.len() {
            backoff = MIN_BACKOFF;
        } else {
            // Kafka refused some rows; they stay and are retried after a pause.
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

async fn try_lease(conn: &mut AsyncPgConnection) -> Result<bool, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Lease {
        #[diesel(sql_type = Bool)]
        acquired: bool,
    }
    let lease: Lease = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS acquired")
        .bind::<BigInt, _>(LEASE_KEY)
        .get_result(conn)
        .await?;
    Ok(lease.acquired)
}

/// Discards notifications already received: the next fetch sees their rows.
fn drain_notifications(conn: &mut AsyncPgConnection) {
    let mut notifications = pin!(conn.notifications_stream());
    while let Some(Some(_)) = notifications.next().now_or_never() {}
}

/// Waits for an insert notification, the poll interval, or shutdown.
async fn wait_for_rows(
    conn: &mut AsyncPgConnection,
    poll_interval: Duration,
    shutdown: &CancellationToken,
) -> Result<(), diesel::result::Error> {
    let mut notifications = pin!(conn.notifications_stream());
    tokio::select! {
        notification = notifications.next() => match notification {
            Some(Err(error)) => Err(error),
            _ => Ok(()),
        },
        () = tokio::time::sleep(poll_interval) => Ok(()),
        () = shutdown.cancelled() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_hides_credentials_and_options() {
        assert_eq!(
            database_name("postgres://user:secret@db:5432/order_db?sslmode=require"),
            "order_db"
        );
        assert_eq!(database_name("postgres://db/"), "database");
    }
}
