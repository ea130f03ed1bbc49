//! The application layer. The catalogue operations open a transaction,
//! apply the domain rules, write rows and commit; the saga's commands run
//! on the consumer runtime's transaction, write their outcome and reply
//! through the outbox, and never commit themselves.

use diesel_async::{AsyncConnection, AsyncPgConnection};
use domain_types::PageSize;
use service_kit::db::{DbError, PgPool, PooledConnection};

use crate::db;
use crate::domain::{
    self, AdjustError, NewProduct, OrderId, PageCursor, Product, ProductId, ReleasePlan,
    Reservation, ReserveAnswer, ReserveRequest, StockDelta, TotalOverflow,
};
use crate::replies;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("product {0} already exists")]
    ProductExists(ProductId),
    #[error("cannot adjust the stock of {product_id}: {error}")]
    Adjust {
        product_id: ProductId,
        error: AdjustError,
    },
    #[error(transparent)]
    TotalOverflow(#[from] TotalOverflow),
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

/// The product catalogue and its stock, as the gRPC API uses them.
#[derive(Clone)]
pub struct Catalogue {
    pool: PgPool,
}

impl Catalogue {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn connection(&self) -> Result<PooledConnection, AppError> {
        service_kit::db::connection(&self.pool)
            .await
            .map_err(AppError::Unavailable)
    }

    #[tracing::instrument(name = "inventory.create_product", skip_all, fields(product_id = %new.id))]
    pub async fn create(&self, new: NewProduct) -> Result<Product, AppError> {
        let mut conn = self.connection().await?;
        let product = db::insert_product(&mut conn, &new)
            .await?
            .ok_or_else(|| AppError::ProductExists(new.id.clone()))?;
        tracing::info!(product_id = %product.id, stock = product.stock.get(), "product created");
        Ok(product)
    }

    pub async fn get(&self, id: &ProductId) -> Result<Product, AppError> {
        let mut conn = self.connection().await?;
        db::find_product(&mut conn, id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("product {id}")))
    }

    /// One page of products by id, and the cursor of the next page if there
    /// is one.
    pub async fn list(
        &self,
        after: Option<PageCursor>,
        page_size: PageSize,
    ) -> Result<(Vec<Product>, Option<PageCursor>), AppError> {
        let mut conn = self.connection().await?;
        let products =
            db::list_products(&mut conn, after.as_ref(), page_size.fetch_limit()).await?;
        Ok(page_size.split(products, |last| PageCursor {
            after: last.id.clone(),
        }))
    }

    /// Adds `delta` to the stock under the product's row lock.
    #[tracing::instrument(name = "inventory.adjust_stock", skip_all, fields(product_id = %id, delta = delta.get()))]
    pub async fn adjust(&self, id: &ProductId, delta: StockDelta) -> Result<Product, AppError> {
        let mut conn = self.connection().await?;
        let product = conn
            .transaction::<_, AppError, _>(async |conn| {
                let product = db::lock_product(conn, id)
                    .await?
                    .ok_or_else(|| AppError::NotFound(format!("product {id}")))?;
                let stock = product
                    .stock
                    .adjusted(delta)
                    .map_err(|error| AppError::Adjust {
                        product_id: id.clone(),
                        error,
                    })?;
                Ok(db::set_stock(conn, id, stock).await?)
            })
            .await?;
        tracing::info!(product_id = %id, delta = delta.get(), stock = product.stock.get(), "stock adjusted");
        Ok(product)
    }

    pub async fn reservation(&self, order_id: OrderId) -> Result<Reservation, AppError> {
        let mut conn = self.connection().await?;
        db::find_reservation(&mut conn, order_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("reservation of order {order_id}")))
    }
}

/// The saga's stock commands. Each runs on the caller's open transaction.
#[derive(Debug, Clone)]
pub struct Reservations {
    replies_topic: String,
}

impl Reservations {
    /// Replies go to `replies_topic` (the prefixed saga replies topic).
    pub fn new(replies_topic: String) -> Self {
        Self { replies_topic }
    }

    /// Reserves every line of the order or none, and replies. An order
    /// answered before gets exactly that answer again and changes nothing.
    #[tracing::instrument(name = "inventory.reserve", skip_all, fields(order_id = %request.order_id, outcome))]
    pub async fn reserve(
        &self,
        conn: &mut AsyncPgConnection,
        request: &ReserveRequest,
    ) -> Result<ReserveAnswer, AppError> {
        let order_id = request.order_id;
        if let Some(existing) = db::lock_reservation(conn, order_id).await? {
            let answer = existing.repeated_answer()?;
            outbox::enqueue(
                conn,
                &[replies::reserve_reply(
                    &self.replies_topic,
                    order_id,
                    &answer,
                )],
            )
            .await?;
            record_reservation("repeated");
            tracing::info!(
                order_id = %order_id,
                status = existing.status.as_str(),
                "reservation answered again"
            );
            return Ok(answer);
        }
        // Products with stock are locked, in id order; a sold-out product is
        // not: no reservation can take from it, and orders for it must not
        // queue behind each other on its row. Locking every product at once
        // (the common case) decides on what is locked. Otherwise a product
        // is unknown or sold out, a refusal that is valid on the last
        // committed state; only if that state says the order can be served
        // after all (stock arrived meanwhile) are all its products locked
        // and the order decided again.
        let ids = request.product_ids();
        let in_stock = db::lock_products_in_stock(conn, &ids).await?;
        let answer = if in_stock.len() == ids.len() {
            domain::decide(request, &in_stock)?
        } else {
            match domain::decide(request, &db::find_products(conn, &ids, false).await?)? {
                refused @ ReserveAnswer::Refused(_) => refused,
                ReserveAnswer::Reserved { .. } => {
                    domain::decide(request, &db::find_products(conn, &ids, true).await?)?
                }
            }
        };
        match &answer {
            ReserveAnswer::Reserved { lines, .. } => {
                let taken: Vec<(ProductId, i32)> = lines
                    .iter()
                    .map(|l| (l.product_id.clone(), -l.quantity.get()))
                    .collect();
                db::change_stock(conn, &taken).await?;
                db::insert_reserved(conn, order_id, lines).await?;
            }
            ReserveAnswer::Refused(refusal) => db::insert_failed(conn, order_id, refusal).await?,
        }
        outbox::enqueue(
            conn,
            &[replies::reserve_reply(
                &self.replies_topic,
                order_id,
                &answer,
            )],
        )
        .await?;
        match &answer {
            ReserveAnswer::Reserved { lines, total } => {
                record_reservation("reserved");
                tracing::info!(
                    order_id = %order_id,
                    lines = lines.len(),
                    total_minor = total.minor_units(),
                    currency = total.currency().as_str(),
                    "stock reserved"
                );
            }
            ReserveAnswer::Refused(refusal) => {
                record_reservation(refusal.reason.metric_label());
                tracing::info!(
                    order_id = %order_id,
                    reason = refusal.reason.as_str(),
                    product_id = refusal.product_id.as_ref().map(ProductId::as_str).unwrap_or_default(),
                    "stock reservation refused"
                );
            }
        }
        Ok(answer)
    }

    /// Gives back exactly what the order holds, at most once; leaves a
    /// tombstone for an order never reserved. Always acknowledged.
    #[tracing::instrument(name = "inventory.release", skip_all, fields(order_id = %order_id, outcome))]
    pub async fn release(
        &self,
        conn: &mut AsyncPgConnection,
        order_id: OrderId,
    ) -> Result<ReleasePlan, AppError> {
        let existing = db::lock_reservation(conn, order_id).await?;
        let plan = domain::plan_release(existing.as_ref());
        match &plan {
            ReleasePlan::GiveBack(lines) => {
                // change_stock updates in id order, the same order every
                // reservation locks in.
                let returned: Vec<(ProductId, i32)> = lines
                    .iter()
                    .map(|l| (l.product_id.clone(), l.quantity.get()))
                    .collect();
                db::change_stock(conn, &returned).await?;
                db::set_status(conn, order_id, domain::ReservationStatus::Released).await?;
            }
            ReleasePlan::NothingToDo(_) => {}
            ReleasePlan::Tombstone => db::insert_tombstone(conn, order_id).await?,
        }
        outbox::enqueue(
            conn,
            &[replies::stock_released(&self.replies_topic, order_id)],
        )
        .await?;
        let outcome = plan.metric_label();
        tracing::Span::current().record("outcome", outcome);
        metrics::counter!("inventory_releases_total", "outcome" => outcome).increment(1);
        tracing::info!(order_id = %order_id, outcome, "stock release acknowledged");
        Ok(plan)
    }
}

fn record_reservation(outcome: &'static str) {
    tracing::Span::current().record("outcome", outcome);
    metrics::counter!("inventory_reservations_total", "outcome" => outcome).increment(1);
}
