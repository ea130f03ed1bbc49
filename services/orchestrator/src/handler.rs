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
}
