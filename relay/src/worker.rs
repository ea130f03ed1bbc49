//! One database's publishing loop: take the lease, then publish committed
//! outbox rows in id order, deleting each only after Kafka acknowledged it
//! and parking each that Kafka refuses for good (with the later rows of its
//! key). Reports the outbox's gauges every few seconds.

use std::collections::BTreeMap;
use std::pin::pin;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::publisher::{Delivery, Publisher};

/// Advisory lock key of the relay lease; one per database, held by the
/// active relay's session and released by Postgres when that session ends.
pub const LEASE_KEY: i64 = 0x6f75_7462_6f78_5f72; // "outbox_r"

/// How often a standby relay tries to take the lease.
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// Pause after a failed batch or a lost connection, doubling up to the maximum.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the backlog, its oldest row's age and the parked rows are
/// counted for the gauges.
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// While rows keep coming the relay polls on its own, so that enqueuing
/// transactions need not notify (notifying commits are serialised
/// server-wide): after an empty fetch it waits `IDLE_POLL_MIN`, doubling up
/// to `IDLE_POLL_MAX`, and after `SLEEP_AFTER` without rows it asks to be
/// notified and sleeps on `LISTEN outbox` (at most the poll interval).
const IDLE_POLL_MIN: Duration = Duration::from_millis(1);
const IDLE_POLL_MAX: Duration = Duration::from_millis(8);
const SLEEP_AFTER: Duration = Duration::from_millis(100);

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
    let gauges = Gauges::new(&database);
    let mut backoff = MIN_BACKOFF;
    while !shutdown.is_cancelled() {
        let result = session(&url, &database, &publisher, &settings, &gauges, &shutdown).await;
        gauges.lease_held.set(0.0);
        match result {
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

/// The gauges of one database's outbox.
struct Gauges {
    database: String,
    backlog: metrics::Gauge,
    oldest_age: metrics::Gauge,
    parked: metrics::Gauge,
    lease_held: metrics::Gauge,
    batch_size: metrics::Histogram,
}

impl Gauges {
    fn new(database: &str) -> Self {
        let label = || ("database", database.to_owned());
        Self {
            database: database.to_owned(),
            backlog: metrics::gauge!("outbox_backlog", &[label()]),
            oldest_age: metrics::gauge!("outbox_oldest_age_seconds", &[label()]),
            parked: metrics::gauge!("outbox_parked", &[label()]),
            lease_held: metrics::gauge!("relay_lease_held", &[label()]),
            batch_size: metrics::histogram!("relay_batch_size", &[label()]),
        }
    }

    fn report(&self, stats: &outbox::Stats) {
        self.backlog.set(stats.backlog as f64);
        self.oldest_age.set(stats.oldest_age_seconds.unwrap_or(0.0));
        self.parked.set(stats.parked as f64);
    }

    /// Counts a batch's outcomes: published per topic, errors per reason.
    fn count(&self, rows: &[outbox::FetchedRow], deliveries: &[Delivery]) {
        let mut published: BTreeMap<&str, u64> = BTreeMap::new();
        let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (fetched, delivery) in rows.iter().zip(deliveries) {
            match delivery {
                Delivery::Acked => *published.entry(fetched.row.topic.as_str()).or_default() += 1,
                Delivery::Refused { reason, .. }
                | Delivery::Failed {
                    reason: Some(reason),
                } => *errors.entry(reason).or_default() += 1,
                Delivery::Held | Delivery::Failed { reason: None } => {}
            }
        }
        for (topic, n) in published {
            metrics::counter!(
                "relay_published_total",
                "database" => self.database.clone(),
                "topic" => topic.to_owned(),
            )
            .increment(n);
        }
        for (reason, n) in errors {
            metrics::counter!(
                "relay_publish_errors_total",
                "database" => self.database.clone(),
                "reason" => reason,
            )
            .increment(n);
        }
    }
}

/// One connection's life: wait for the lease, then publish until shutdown or
/// an error. The lease dies with the connection.
async fn session(
    url: &str,
    database: &str,
    publisher: &Publisher,
    settings: &WorkerSettings,
    gauges: &Gauges,
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
    gauges.lease_held.set(0.0);
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
    gauges.lease_held.set(1.0);
    diesel::sql_query("LISTEN outbox")
        .execute(&mut conn)
        .await?;

    // Whether rows are parked; only the lease holder parks, so between two
    // counts this only grows by what this session parks.
    let mut parked = 0;
    let mut stats_due = Instant::now();
    let mut backoff = MIN_BACKOFF;
    // The wake-up flag as this session last set it, and how long no rows came.
    let mut listening: Option<bool> = None;
    let mut idle_since: Option<Instant> = None;
    let mut idle_wait = IDLE_POLL_MIN;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if Instant::now() >= stats_due {
            let stats = outbox::stats(&mut conn).await?;
            gauges.report(&stats);
            parked = stats.parked;
            stats_due = Instant::now() + STATS_INTERVAL;
        }
        drain_notifications(&mut conn);
        let started = Instant::now();
        let rows: Vec<outbox::FetchedRow> = if parked > 0 {
            outbox::fetch_batch_with_holds(&mut conn, settings.batch_size).await?
        } else {
            outbox::fetch_batch(&mut conn, settings.batch_size)
                .await?
                .into_iter()
                .map(|row| outbox::FetchedRow { row, held: false })
                .collect()
        };
        if rows.is_empty() {
            let idle_for = idle_since.get_or_insert_with(Instant::now).elapsed();
            if idle_for < SLEEP_AFTER {
                tokio::select! {
                    () = tokio::time::sleep(idle_wait) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
                idle_wait = (idle_wait * 2).min(IDLE_POLL_MAX);
            } else if listening != Some(true) {
                // Fetch once more after setting it: a transaction that read
                // the flag before did not notify, but has committed by then
                // or commits within a poll interval.
                outbox::set_listening(&mut conn, true).await?;
                listening = Some(true);
            } else {
                wait_for_rows(&mut conn, settings.poll_interval, shutdown).await?;
            }
            continue;
        }
        idle_since = None;
        idle_wait = IDLE_POLL_MIN;
        if listening != Some(false) {
            outbox::set_listening(&mut conn, false).await?;
            listening = Some(false);
        }
        gauges.batch_size.record(rows.len() as f64);
        let fetched = Instant::now();
        let deliveries = publisher.publish(&rows).await;
        let published = Instant::now();
        let mut acked = Vec::with_capacity(rows.len());
        let mut refused = Vec::new();
        let mut held = Vec::new();
        let mut failed = 0;
        for (fetched, delivery) in rows.iter().zip(&deliveries) {
            match delivery {
                Delivery::Acked => acked.push(fetched.row.id),
                Delivery::Refused { error, .. } => refused.push((fetched.row.id, error.clone())),
                Delivery::Held => held.push(fetched.row.id),
                Delivery::Failed { .. } => failed += 1,
            }
        }
        outbox::delete(&mut conn, &acked).await?;
        let newly_parked = outbox::park(&mut conn, &refused, &held).await?;
        if newly_parked > 0 {
            parked += i64::try_from(newly_parked).unwrap_or(i64::MAX);
            tracing::warn!(%database, refused = refused.len(), held_behind = newly_parked - refused.len().min(newly_parked), "outbox rows parked");
        }
        gauges.count(&rows, &deliveries);
        tracing::debug!(
            %database,
            published = acked.len(),
            batch = rows.len(),
            fetch_us = (fetched - started).as_micros(),
            publish_us = (published - fetched).as_micros(),
            delete_us = published.elapsed().as_micros(),
            "outbox batch published"
        );
        if failed == 0 {
            backoff = MIN_BACKOFF;
        } else {
            // Kafka did not take some rows for now; they stay and are retried after a pause.
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
