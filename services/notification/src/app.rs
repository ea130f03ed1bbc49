//! The application layer: recording a notification on the consumer's
//! transaction (the runtime commits), and reads for the API.

use diesel_async::AsyncPgConnection;
use domain_types::PageSize;
use service_kit::db::{DbError, PgPool};

use crate::db;
use crate::domain::{
    CustomerId, DeliveryState, NewNotification, Notification, NotificationId, PageCursor,
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AppError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(error))
    }
}

/// Records the notification of an order's outcome once: a second event for
/// the same order (redelivered, re-sent or re-emitted) records nothing.
/// Keeps the current trace context, so the delivery joins the order's trace.
/// Returns whether it was recorded now.
#[tracing::instrument(
    name = "notification.record",
    skip_all,
    fields(order_id = %new.order_id, outcome = new.outcome.as_str())
)]
pub async fn record(
    conn: &mut AsyncPgConnection,
    new: &NewNotification,
    webhook_configured: bool,
) -> Result<bool, AppError> {
    let trace_context = serde_json::Value::Object(
        service_kit::trace_context::current_context_headers()
            .into_iter()
            .map(|(name, value)| (name, serde_json::Value::String(value)))
            .collect(),
    );
    let id = NotificationId::new();
    let state = DeliveryState::initial(webhook_configured);
    let recorded = db::insert(conn, id, new, state, trace_context).await?;
    if recorded {
        let outcome = new.outcome.as_str().to_ascii_lowercase();
        metrics::counter!("notifications_total", "outcome" => outcome).increment(1);
        tracing::info!(
            order_id = %new.order_id,
            notification_id = %id,
            delivery_state = state.as_str(),
            "notification recorded"
        );
    } else {
        metrics::counter!("notifications_total", "outcome" => "duplicate").increment(1);
        tracing::info!(order_id = %new.order_id, "notification already recorded for order");
    }
    Ok(recorded)
}

/// Reads notifications for the API.
#[derive(Clone)]
pub struct Notifications {
    pool: PgPool,
}

impl Notifications {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One page of a customer's notifications, newest first, and the cursor
    /// of the next page if there is one.
    pub async fn list(
        &self,
        customer_id: &CustomerId,
        after: Option<PageCursor>,
        page_size: PageSize,
    ) -> Result<(Vec<Notification>, Option<PageCursor>), AppError> {
        let mut conn = service_kit::db::connection(&self.pool)
            .await
            .map_err(AppError::Unavailable)?;
        let page =
            db::list_by_customer(&mut conn, customer_id, after, page_size.fetch_limit()).await?;
        Ok(page_size.split(page, |last| PageCursor {
            created_at: last.created_at,
            id: last.id,
        }))
    }
}
