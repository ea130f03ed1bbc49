//! The application layer: each operation opens a transaction, applies the
//! domain rules, writes rows and outbox messages, and commits.

use diesel_async::{AsyncConnection, AsyncPgConnection};
use domain_types::PageSize;
use service_kit::db::{DbError, PgPool, PooledConnection};

use crate::db;
use crate::domain::{
    self, CustomerId, NewOrder, Order, OrderId, PageCursor, RejectionReason, Transition,
    TransitionRefused, Verdict,
};
use crate::events;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("order {0} not found")]
    NotFound(OrderId),
    #[error("idempotency key already used for a different order")]
    IdempotencyKeyReused,
    #[error("order {id}: {refused}")]
    TransitionRefused {
        id: OrderId,
        refused: TransitionRefused,
    },
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
    /// The (prefixed) topic of the order events.
    events_topic: String,
}

impl Orders {
    pub fn new(pool: PgPool, events_topic: String) -> Self {
        Self { pool, events_topic }
    }

    async fn connection(&self) -> Result<PooledConnection, AppError> {
        service_kit::db::connection(&self.pool)
            .await
            .map_err(AppError::Unavailable)
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
                    outbox::enqueue(conn, &[events::order_created(&self.events_topic, &order)])
                        .await?;
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
        page_size: PageSize,
    ) -> Result<(Vec<Order>, Option<PageCursor>), AppError> {
        let mut conn = self.connection().await?;
        let orders =
            db::list_by_customer(&mut conn, customer_id, after, page_size.fetch_limit()).await?;
        Ok(page_size.split(orders, |last| PageCursor {
            created_at: last.created_at,
            id: last.id,
        }))
    }

    /// Approves the order on the caller's open transaction (the consumer
    /// runtime's): PENDING becomes APPROVED with a history entry and an
    /// `OrderApproved` event. An order already approved announces it again
    /// and changes nothing.
    #[tracing::instrument(name = "order.approve", skip_all, fields(order_id = %id))]
    pub async fn approve(
        &self,
        conn: &mut AsyncPgConnection,
        id: OrderId,
    ) -> Result<Transition, AppError> {
        self.conclude(conn, id, Verdict::Approve).await
    }

    /// Rejects the order on the caller's open transaction: PENDING becomes
    /// REJECTED with the reason, a history entry and an `OrderRejected`
    /// event. An order already rejected announces it again (with the reason
    /// first recorded) and changes nothing.
    #[tracing::instrument(name = "order.reject", skip_all, fields(order_id = %id, reason = reason.as_str()))]
    pub async fn reject(
        &self,
        conn: &mut AsyncPgConnection,
        id: OrderId,
        reason: RejectionReason,
    ) -> Result<Transition, AppError> {
        self.conclude(conn, id, Verdict::Reject(reason)).await
    }

    async fn conclude(
        &self,
        conn: &mut AsyncPgConnection,
        id: OrderId,
        verdict: Verdict,
    ) -> Result<Transition, AppError> {
        let order = db::lock_status(conn, id)
            .await?
            .ok_or(AppError::NotFound(id))?;
        let transition = domain::transition(order.status, &verdict)
            .map_err(|refused| AppError::TransitionRefused { id, refused })?;
        let reason = match (&verdict, transition) {
            (Verdict::Approve, _) => None,
            (Verdict::Reject(reason), Transition::Apply) => Some(reason.as_str().to_owned()),
            // Announce the reason recorded the first time.
            (Verdict::Reject(reason), Transition::AlreadyDone) => Some(
                order
                    .rejection_reason
                    .clone()
                    .unwrap_or_else(|| reason.as_str().to_owned()),
            ),
        };
        if transition == Transition::Apply {
            db::record_status(conn, id, verdict.target(), reason.as_deref()).await?;
        }
        let event = match &verdict {
            Verdict::Approve => events::order_approved(&self.events_topic, id, &order.customer_id),
            Verdict::Reject(_) => events::order_rejected(
                &self.events_topic,
                id,
                &order.customer_id,
                reason.as_deref().unwrap_or_default(),
            ),
        };
        outbox::enqueue(conn, &[event]).await?;
        match transition {
            Transition::Apply => {
                tracing::info!(order_id = %id, status = verdict.target().as_str(), "order concluded");
            }
            Transition::AlreadyDone => {
                tracing::info!(order_id = %id, status = verdict.target().as_str(), "order already concluded, outcome announced again");
            }
        }
        Ok(transition)
    }
}
