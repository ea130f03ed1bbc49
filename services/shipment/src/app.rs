//! The application layer: reads for the API, and the effect of each saga
//! command on the consumer's transaction (rows and the reply in the outbox;
//! the consumer runtime commits).

use diesel_async::AsyncPgConnection;
use service_kit::db::{DbError, PgPool};

use crate::db;
use crate::domain::{
    Address, Booking, CancelDecision, CreateDecision, CreateReply, CreateShipment,
    DeliverableCountries, FailureReason, OrderId, Shipment, ShipmentId, ShipmentState,
    TrackingExhausted, TrackingNumber, decide_cancel, decide_create,
};
use crate::replies;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no shipment for order {0}")]
    NotFound(OrderId),
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Tracking(#[from] TrackingExhausted),
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

/// Reads shipments for the API.
#[derive(Clone)]
pub struct Shipments {
    pool: PgPool,
}

impl Shipments {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn get(&self, id: OrderId) -> Result<Shipment, AppError> {
        let mut conn = service_kit::db::connection(&self.pool)
            .await
            .map_err(AppError::Unavailable)?;
        db::find(&mut conn, id).await?.ok_or(AppError::NotFound(id))
    }
}

/// Answers a create command: books (or refuses) a shipment the first time,
/// answers a repeated command from the stored state with no second effect,
/// and enqueues the reply.
#[tracing::instrument(name = "shipment.create", skip_all, fields(order_id = %command.order_id))]
pub async fn create_shipment(
    conn: &mut AsyncPgConnection,
    replies_topic: &str,
    command: &CreateShipment,
    countries: &DeliverableCountries,
) -> Result<CreateReply, AppError> {
    let id = command.order_id;
    let existing = db::find_for_update(conn, id).await?.map(|s| s.state);
    let decision = decide_create(existing.as_ref(), &command.address, countries);
    let reply = match &decision {
        CreateDecision::Answer(reply) => reply.clone(),
        CreateDecision::Book => {
            let serial = db::next_tracking_serial(conn).await?;
            let serial = u64::try_from(serial).map_err(|_| TrackingExhausted(0))?;
            let state = ShipmentState::Created(Booking {
                shipment_id: ShipmentId::new(),
                tracking_number: TrackingNumber::from_serial(serial)?,
            });
            store_first(conn, id, state, Some(&command.address))
                .await?
                .create_reply()
        }
        CreateDecision::Refuse(reason) => store_first(
            conn,
            id,
            ShipmentState::Failed(*reason),
            Some(&command.address),
        )
        .await?
        .create_reply(),
    };
    outbox::enqueue(conn, &[replies::to_create(replies_topic, id, &reply)]).await?;
    let outcome = match (&decision, &reply) {
        (CreateDecision::Book, CreateReply::Created(_)) => "created",
        (_, CreateReply::Failed(FailureReason::Undeliverable)) => "undeliverable",
        (_, CreateReply::Failed(FailureReason::OrderCancelled)) => "order_cancelled",
        (_, CreateReply::Created(_)) => "repeated",
    };
    metrics::counter!("shipments_total", "outcome" => outcome).increment(1);
    match &reply {
        CreateReply::Created(booking) => tracing::info!(
            order_id = %id,
            shipment_id = %booking.shipment_id,
            tracking_number = booking.tracking_number.as_str(),
            outcome,
            "shipment created"
        ),
        CreateReply::Failed(reason) => tracing::info!(
            order_id = %id,
            reason = reason.as_str(),
            outcome,
            "shipment refused"
        ),
    }
    Ok(reply)
}

/// Applies a cancel command at most once (a tombstone when nothing was
/// booked yet) and always enqueues `ShipmentCancelled`.
#[tracing::instrument(name = "shipment.cancel", skip_all, fields(order_id = %id))]
pub async fn cancel_shipment(
    conn: &mut AsyncPgConnection,
    replies_topic: &str,
    id: OrderId,
) -> Result<CancelDecision, AppError> {
    let existing = db::find_for_update(conn, id).await?.map(|s| s.state);
    let mut decision = decide_cancel(existing.as_ref());
    if decision == CancelDecision::LeaveTombstone {
        let stored = store_first(conn, id, ShipmentState::Tombstone, None).await?;
        if stored != ShipmentState::Tombstone {
            // A create committed in between: cancel what it stored.
            decision = decide_cancel(Some(&stored));
        }
    }
    if decision == CancelDecision::Cancel {
        db::mark_cancelled(conn, id).await?;
    }
    outbox::enqueue(conn, &[replies::cancelled(replies_topic, id)]).await?;
    let outcome = match decision {
        CancelDecision::Cancel => "cancelled",
        CancelDecision::LeaveTombstone => "tombstone",
        CancelDecision::Nothing => "no_effect",
    };
    metrics::counter!("shipment_cancellations_total", "outcome" => outcome).increment(1);
    tracing::info!(order_id = %id, outcome, "shipment cancellation acknowledged");
    Ok(decision)
}

/// Stores `state` as the order's first row, or, if another transaction
/// stored one first, returns that one (locked).
async fn store_first(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    state: ShipmentState,
    address: Option<&Address>,
) -> Result<ShipmentState, AppError> {
    if db::insert(conn, id, &state, address).await? {
        return Ok(state);
    }
    db::find_for_update(conn, id)
        .await?
        .map(|s| s.state)
        .ok_or(AppError::NotFound(id))
}
