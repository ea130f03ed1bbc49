//! Rows and queries of the notification database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::db::{CorruptRow, DbError};
use uuid::Uuid;

use crate::domain::{
    CustomerId, DeliveryState, NewNotification, Notification, NotificationId, OrderId, Outcome,
    PageCursor,
};
use crate::schema::notifications;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg))]
struct NotificationRow {
    id: Uuid,
    order_id: Uuid,
    customer_id: String,
    outcome: String,
    reason: String,
    delivery_state: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

/// A notification a worker claimed for one delivery attempt.
#[derive(Debug, Clone, QueryableByName)]
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg))]
pub struct Claimed {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub outcome: String,
    pub reason: String,
    /// Attempts made before this one.
    pub attempts: i32,
    pub trace_context: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl Claimed {
    /// The stored trace context as header pairs.
    pub fn trace_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.trace_context
            .as_object()
            .into_iter()
            .flat_map(|map| map.iter())
            .filter_map(|(name, value)| value.as_str().map(|value| (name.as_str(), value)))
    }
}

/// Records the notification. Returns false, writing nothing, when the order
/// has one already.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    id: NotificationId,
    new: &NewNotification,
    state: DeliveryState,
    trace_context: serde_json::Value,
) -> Result<bool, DbError> {
    let inserted = diesel::insert_into(notifications::table)
        .values((
            notifications::id.eq(id.0),
            notifications::order_id.eq(new.order_id.0),
            notifications::customer_id.eq(new.customer_id.as_str()),
            notifications::outcome.eq(new.outcome.as_str()),
            notifications::reason.eq(&new.reason),
            notifications::delivery_state.eq(state.as_str()),
            notifications::trace_context.eq(trace_context),
        ))
        .on_conflict(notifications::order_id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Up to `limit` of a customer's notifications older than `after`, newest first.
pub async fn list_by_customer(
    conn: &mut AsyncPgConnection,
    customer_id: &CustomerId,
    after: Option<PageCursor>,
    limit: i64,
) -> Result<Vec<Notification>, DbError> {
    let mut query = notifications::table
        .filter(notifications::customer_id.eq(customer_id.as_str()))
        .select(NotificationRow::as_select())
        .order((notifications::created_at.desc(), notifications::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(cursor) = after {
        query = query.filter(
            notifications::created_at
                .lt(cursor.created_at)
                .or(notifications::created_at
                    .eq(cursor.created_at)
                    .and(notifications::id.lt(cursor.id.0))),
        );
    }
    query.load(conn).await?.into_iter().map(to_domain).collect()
}

/// Claims up to `limit` due notifications under `token`, leased for `lease`.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease: Duration,
    token: Uuid,
) -> Result<Vec<Claimed>, DbError> {
    Ok(diesel::sql_query(include_str!("claim.sql"))
        .bind::<BigInt, _>(limit)
        .bind::<Double, _>(lease.as_secs_f64())
        .bind::<SqlUuid, _>(token)
        .load(conn)
        .await?)
}

/// How a claimed attempt ended, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded<'a> {
    Delivered,
    Retry {
        error: &'a str,
        next_attempt_at: DateTime<Utc>,
    },
    Failed {
        error: &'a str,
    },
}

/// Stores one attempt's outcome on a row claimed under `token`. Returns false
/// when the claim was lost (the lease ran out and another worker took it).
pub async fn record_attempt(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    token: Uuid,
    recorded: Recorded<'_>,
) -> Result<bool, DbError> {
    let row = notifications::table
        .filter(notifications::id.eq(id))
        .filter(notifications::claim_token.eq(token))
        .filter(notifications::delivery_state.eq(DeliveryState::Pending.as_str()));
    let attempts = notifications::attempts.eq(notifications::attempts + 1);
    let released = notifications::claim_token.eq(None::<Uuid>);
    let updated = match recorded {
        Recorded::Delivered => {
            diesel::update(row)
                .set((
                    attempts,
                    released,
                    notifications::delivery_state.eq(DeliveryState::Delivered.as_str()),
                    notifications::delivered_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?
        }
        Recorded::Retry {
            error,
            next_attempt_at,
        } => {
            diesel::update(row)
                .set((
                    attempts,
                    released,
                    notifications::last_error.eq(error),
                    notifications::next_attempt_at.eq(next_attempt_at),
                ))
                .execute(conn)
                .await?
        }
        Recorded::Failed { error } => {
            diesel::update(row)
                .set((
                    attempts,
                    released,
                    notifications::delivery_state.eq(DeliveryState::Failed.as_str()),
                    notifications::last_error.eq(error),
                ))
                .execute(conn)
                .await?
        }
    };
    Ok(updated == 1)
}

fn to_domain(row: NotificationRow) -> Result<Notification, DbError> {
    let corrupt = CorruptRow::of("notification", row.id);
    Ok(Notification {
        id: NotificationId(row.id),
        order_id: OrderId(row.order_id),
        customer_id: CustomerId::parse(&row.customer_id).map_err(&corrupt)?,
        outcome: Outcome::parse(&row.outcome)
            .ok_or_else(|| corrupt(format!("unknown outcome {:?}", row.outcome)))?,
        reason: row.reason.clone(),
        delivery_state: DeliveryState::parse(&row.delivery_state)
            .ok_or_else(|| corrupt(format!("unknown state {:?}", row.delivery_state)))?,
        attempts: u32::try_from(row.attempts)
            .map_err(|_| corrupt(format!("negative attempts {}", row.attempts)))?,
        last_error: row.last_error.clone(),
        created_at: row.created_at,
        delivered_at: row.delivered_at,
    })
}
