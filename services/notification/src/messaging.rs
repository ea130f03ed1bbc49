//! The Kafka edge: turns order outcome events into notifications on the
//! consumer runtime's transaction. Other order events are not for us.

use consumer::{Handler, HandlerError, Incoming};
use diesel_async::AsyncPgConnection;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use proto::messages::v1 as msg;
use service_kit::db::DbError;

use crate::app::{self, AppError};
use crate::domain::{CustomerId, NewNotification, OrderId};

pub struct NotificationHandler {
    webhook_configured: bool,
}

impl NotificationHandler {
    pub fn new(webhook_configured: bool) -> Self {
        Self { webhook_configured }
    }

    async fn dispatch(
        &self,
        conn: &mut AsyncPgConnection,
        message: &Incoming,
    ) -> Result<(), HandlerError> {
        let new = if message.is::<msg::OrderApproved>() {
            let event: msg::OrderApproved = message.decode()?;
            NewNotification::approved(
                parse_order_id(&event.order_id)?,
                parse_customer_id(&event.customer_id)?,
            )
        } else if message.is::<msg::OrderRejected>() {
            let event: msg::OrderRejected = message.decode()?;
            NewNotification::rejected(
                parse_order_id(&event.order_id)?,
                parse_customer_id(&event.customer_id)?,
                &event.reason,
            )
        } else {
            // OrderCreated and any later order event: nothing to tell.
            tracing::debug!(message_type = %message.message_type, "order event ignored");
            return Ok(());
        };
        app::record(conn, &new, self.webhook_configured).await?;
        Ok(())
    }
}

impl Handler for NotificationHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        self.dispatch(conn, message).boxed()
    }
}

fn parse_order_id(raw: &str) -> Result<OrderId, HandlerError> {
    OrderId::parse(raw).map_err(|d| HandlerError::Permanent(format!("order_id {d}")))
}

fn parse_customer_id(raw: &str) -> Result<CustomerId, HandlerError> {
    CustomerId::parse(raw).map_err(|d| HandlerError::Permanent(format!("customer_id {d}")))
}

impl From<AppError> for HandlerError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Db(DbError::Query(error)) => error.into(),
            AppError::Unavailable(error) => Self::Transient(error),
            other @ AppError::Db(DbError::Corrupt(_)) => Self::Retryable(other.into()),
        }
    }
}
