//! The Kafka edge: the saga's verdicts on `order.commands.v1` (`ApproveOrder`,
//! `RejectOrder`), parsed into domain types and applied on the consumer
//! runtime's transaction.

use consumer::{Handler, HandlerError, Incoming};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use proto::messages::v1 as msg;
use service_kit::db::DbError;

use crate::app::{AppError, Orders};
use crate::domain::{OrderId, RejectionReason};

/// The order service's consumer: name of its group and inbox entries.
pub const CONSUMER_NAME: &str = "order";

pub struct VerdictHandler {
    orders: Orders,
}

impl VerdictHandler {
    pub fn new(orders: Orders) -> Self {
        Self { orders }
    }

    async fn take(
        &self,
        conn: &mut AsyncPgConnection,
        message: &Incoming,
    ) -> Result<(), HandlerError> {
        if message.is::<msg::ApproveOrder>() {
            let command: msg::ApproveOrder = message.decode()?;
            let id = order_id(&command.order_id)?;
            self.orders.approve(conn, id).await.map_err(handler_error)?;
        } else if message.is::<msg::RejectOrder>() {
            let command: msg::RejectOrder = message.decode()?;
            let id = order_id(&command.order_id)?;
            let reason = RejectionReason::parse(&command.reason).map_err(|problem| {
                HandlerError::Permanent(format!("RejectOrder for {id}: {problem}"))
            })?;
            self.orders
                .reject(conn, id, reason)
                .await
                .map_err(handler_error)?;
        } else {
            return Err(message.unknown_type());
        }
        Ok(())
    }
}

impl Handler for VerdictHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.take(conn, message))
    }
}

fn order_id(raw: &str) -> Result<OrderId, HandlerError> {
    OrderId::parse(raw)
        .map_err(|problem| HandlerError::Permanent(format!("order_id {raw:?} {problem}")))
}

/// A verdict about an unknown order or against its final status can never
/// take effect: it is dead-lettered with the reason. Database trouble is
/// retried.
fn handler_error(error: AppError) -> HandlerError {
    match error {
        error @ (AppError::NotFound(_) | AppError::TransitionRefused { .. }) => {
            HandlerError::Permanent(error.to_string())
        }
        AppError::Db(DbError::Query(error)) => error.into(),
        error @ AppError::Db(DbError::Corrupt(_)) => HandlerError::Permanent(error.to_string()),
        AppError::Outbox(error) => error.into(),
        AppError::Unavailable(cause) => HandlerError::Transient(cause),
        error @ AppError::IdempotencyKeyReused => HandlerError::Retryable(error.into()),
    }
}
