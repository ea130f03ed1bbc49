//! The application layer: each operation opens a transaction, applies the
//! domain rules, writes rows and outbox messages, and commits.

use diesel_async::AsyncConnection;
use service_kit::db::PgPool;

use crate::db::{self, DbError};
use crate::domain::{CustomerId, NewOrder, Order, OrderId, PageCursor};
use crate::events;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("order {0} not found")]
    NotFound(OrderId),
    #[error("idempotency key already used for a different order")]
    IdempotencyKeyReused,
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}

impl From<diesel::result::Error> for AppError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(error))
    }
}

/// The result of placing an order.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: Order,
    /// True when an earlier request with the same idempotency key created it.
    pub replayed: bool,
}

#[derive(Clone)]
pub struct Orders {
    pool: PgPool,
}

impl Orders {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn connection(
        &self,
    ) -> Result<
        diesel_async::pooled_connection::deadpool::Object<diesel_async::AsyncPgConnection>,
        AppError,
    > {
        self.pool
            .get()
            .await
            .map_err(|error| AppError::Unavailable(error.into()))
    }

    /// Commits the order (PENDING) and its `OrderCreated` event in one
    /// transaction. A repeated idempotency key returns the first order.
    #[tracing::instrument(name = "order.place", skip_all, fields(db.system = "postgresql", order_id))]
    pub async fn place(&self, new: NewOrder) -> Result<Placed, AppError> {
        let mut conn = self.connection().await?;
        let trace_id = service_kit::trace_context::current_trace_id();
        let id = OrderId::new();
        let placed = conn
            .transaction::<_, AppError, _>(async |conn| {
                if let Some(created_at) =
                    db::insert_order(conn, id, &new, trace_id.as_deref()).await?
                {
                    let order = new.clone().into_order(id, created_at, trace_id.clone());
                    outbox::enqueue(conn, &[events::order_created(&order)]).await?;
                    return Ok(Placed {
                        order,
                        replayed: false,
                    });
                }
                // The key was used before: answer with that order, if it
                // is the same request.
                let key = new
                    .idempotency_key
                    .as_ref()
                    .map(|k| k.as_str())
                    .unwrap_or_default();
                let existing = db::find_by_idempotency_key(conn, &new.customer_id, key)
                    .await?
                    .ok_or(AppError::NotFound(id))?;
                if !new.matches(&existing) {
                    return Err(AppError::IdempotencyKeyReused);
                }
                Ok(Placed {
                    order: existing,
                    replayed: true,
                })
            })
            .await?;
        tracing::Span::current().record("order_id", tracing::field::display(placed.order.id));
        if placed.replayed {
            tracing::info!(order_id = %placed.order.id, "order replayed for repeated idempotency key");
        } else {
            tracing::info!(order_id = %placed.order.id, items = placed.order.items.len(), "order placed");
        }
        Ok(placed)
    }

    pub async fn get(&self, id: OrderId) -> Result<Order, AppError> {
        let mut conn = self.connection().await?;
        db::find(&mut conn, id).await?.ok_or(AppError::NotFound(id))
    }

    /// One page of a customer's orders, newest first, and the cursor of the
    /// next page if there is one.
    pub async fn list(
        &self,
        customer_id: &CustomerId,
        after: Option<PageCursor>,
        page_size: usize,
    ) -> Result<(Vec<Order>, Option<PageCursor>), AppError> {
        let mut conn = self.connection().await?;
        let limit = i64::try_from(page_size + 1).unwrap_or(i64::MAX);
        let mut orders = db::list_by_customer(&mut conn, customer_id, after, limit).await?;
        let next = if orders.len() > page_size {
            orders.truncate(page_size);
            orders.last().map(|last| PageCursor {
                created_at: last.created_at,
                order_id: last.id,
            })
        } else {
            None
        };
        Ok((orders, next))
    }
}
