//! The consumer handler: order events and participants' replies, each
//! applied to its saga in the consumer runtime's transaction.

use consumer::{Handler, HandlerError, Incoming};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use service_kit::db::DbError;

use crate::app::{AppError, Sagas};
use crate::messages::{self, Received};

pub struct SagaHandler {
    sagas: Sagas,
}

impl SagaHandler {
    pub fn new(sagas: Sagas) -> Self {
        Self { sagas }
    }
}

impl From<AppError> for HandlerError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Db(DbError::Query(error)) => error.into(),
            AppError::Outbox(error) => error.into(),
            AppError::Unavailable(error) => HandlerError::Transient(error),
            AppError::Db(DbError::Corrupt(corrupt)) => HandlerError::Permanent(corrupt.to_string()),
            other @ (AppError::NotFound(_) | AppError::NotApplicable { .. }) => {
                HandlerError::Permanent(other.to_string())
            }
        }
    }
}

impl Handler for SagaHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            match messages::decode(message)? {
                Received::Started(new) => {
                    self.sagas.start(conn, new).await?;
                }
                Received::Input {
                    order_id,
                    input,
                    reserved_total,
                } => {
                    let applied = self
                        .sagas
                        .apply(conn, order_id, &input, reserved_total)
                        .await?;
                    if applied.is_none() {
                        // It may belong to a saga that never started here.
                        tracing::warn!(
                            order_id = %order_id,
                            message_type = %message.message_type,
                            "message for an unknown saga ignored"
                        );
                    }
                }
            }
            Ok(())
        })
    }

    /// The sagas of the batch's keys (order ids), in order id order: order
    /// events and replies arrive on lanes of two topics, whose batches
    /// would otherwise lock the same sagas in different orders.
    fn lock_batch<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        batch: &'a [Incoming],
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let orders = batch_orders(batch);
            if orders.len() > 1 {
                crate::db::lock_for_batch(conn, &orders)
                    .await
                    .map_err(AppError::Db)?;
            }
            Ok(())
        })
    }
}

/// The distinct order ids a batch's messages are keyed by, sorted; keys that
/// are not order ids are left out (`handle` rejects those messages).
pub fn batch_orders(batch: &[Incoming]) -> Vec<uuid::Uuid> {
    let mut orders: Vec<uuid::Uuid> = batch
        .iter()
        .filter_map(|message| uuid::Uuid::parse_str(&message.key).ok())
        .collect();
    orders.sort();
    orders.dedup();
    orders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_locks_each_order_it_is_keyed_by_once_in_order() {
        let [a, b] = {
            let mut ids = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
            ids.sort();
            ids
        };
        let message = |key: &str| Incoming {
            topic: "saga.replies.v1".into(),
            partition: 0,
            offset: 0,
            key: key.into(),
            message_id: uuid::Uuid::now_v7(),
            message_type: String::new(),
            headers: Vec::new(),
            payload: Vec::new(),
        };
        let batch = [
            message(&b.to_string()),
            message("not-an-order"),
            message(&a.to_string()),
            message(&b.to_string()),
        ];
        assert_eq!(batch_orders(&batch), vec![a, b]);
    }
}
