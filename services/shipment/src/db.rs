//! Rows and queries of the shipment database.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::db::{CorruptRow, DbError};
use uuid::Uuid;

use crate::domain::{
    Address, Booking, FailureReason, OrderId, Shipment, ShipmentId, ShipmentState, TrackingNumber,
};
use crate::schema::shipments;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = shipments, check_for_backend(diesel::pg::Pg))]
struct ShipmentRow {
    order_id: Uuid,
    status: String,
    shipment_id: Option<Uuid>,
    tracking_number: Option<String>,
    failure_reason: Option<String>,
    ship_recipient: Option<String>,
    ship_line1: Option<String>,
    ship_line2: Option<String>,
    ship_city: Option<String>,
    ship_postal_code: Option<String>,
    ship_country_code: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub async fn find(conn: &mut AsyncPgConnection, id: OrderId) -> Result<Option<Shipment>, DbError> {
    let row = shipments::table
        .find(id.0)
        .select(ShipmentRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(to_domain).transpose()
}

/// The order's shipment, locked until the transaction ends.
pub async fn find_for_update(
    conn: &mut AsyncPgConnection,
    id: OrderId,
) -> Result<Option<Shipment>, DbError> {
    let row = shipments::table
        .find(id.0)
        .select(ShipmentRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    row.map(to_domain).transpose()
}

/// The next tracking serial; never handed out twice.
pub async fn next_tracking_serial(conn: &mut AsyncPgConnection) -> Result<i64, DbError> {
    #[derive(QueryableByName)]
    struct Serial {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        serial: i64,
    }
    let row: Serial = diesel::sql_query("SELECT nextval('tracking_serial') AS serial")
        .get_result(conn)
        .await?;
    Ok(row.serial)
}

/// Inserts the order's first shipment row. Returns false, writing nothing,
/// when the order has one already.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    state: &ShipmentState,
    address: Option<&Address>,
) -> Result<bool, DbError> {
    let booking = state.booking();
    let inserted = diesel::insert_into(shipments::table)
        .values((
            shipments::order_id.eq(id.0),
            shipments::status.eq(state.status()),
            shipments::shipment_id.eq(booking.map(|b| b.shipment_id.0)),
            shipments::tracking_number.eq(booking.map(|b| b.tracking_number.as_str())),
            shipments::failure_reason.eq(state.failure_reason().map(FailureReason::as_str)),
            shipments::ship_recipient.eq(address.map(|a| a.recipient.as_str())),
            shipments::ship_line1.eq(address.map(|a| a.line1.as_str())),
            shipments::ship_line2.eq(address.map(|a| a.line2.as_str())),
            shipments::ship_city.eq(address.map(|a| a.city.as_str())),
            shipments::ship_postal_code.eq(address.map(|a| a.postal_code.as_str())),
            shipments::ship_country_code.eq(address.map(|a| a.country_code.as_str())),
        ))
        .on_conflict(shipments::order_id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Marks the order's booked shipment cancelled.
pub async fn mark_cancelled(conn: &mut AsyncPgConnection, id: OrderId) -> Result<(), DbError> {
    diesel::update(shipments::table.find(id.0))
        .filter(shipments::status.eq("CREATED"))
        .set((
            shipments::status.eq("CANCELLED"),
            shipments::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

fn to_domain(row: ShipmentRow) -> Result<Shipment, DbError> {
    let corrupt = CorruptRow::of("shipment of order", row.order_id);
    let booking = || -> Result<Booking, CorruptRow> {
        match (row.shipment_id, row.tracking_number.as_deref()) {
            (Some(id), Some(number)) => Ok(Booking {
                shipment_id: ShipmentId(id),
                tracking_number: TrackingNumber::parse(number).map_err(&corrupt)?,
            }),
            _ => Err(corrupt("a booked shipment without ids".to_owned())),
        }
    };
    let state = match row.status.as_str() {
        "CREATED" => ShipmentState::Created(booking()?),
        "CANCELLED" => ShipmentState::Cancelled(booking()?),
        "FAILED" => {
            let raw = row.failure_reason.as_deref().unwrap_or_default();
            ShipmentState::Failed(
                FailureReason::parse(raw)
                    .ok_or_else(|| corrupt(format!("unknown failure reason {raw:?}")))?,
            )
        }
        "TOMBSTONE" => ShipmentState::Tombstone,
        other => return Err(corrupt(format!("unknown status {other:?}")).into()),
    };
    let address = match (
        &row.ship_recipient,
        &row.ship_line1,
        &row.ship_line2,
        &row.ship_city,
        &row.ship_postal_code,
        &row.ship_country_code,
    ) {
        (
            Some(recipient),
            Some(line1),
            Some(line2),
            Some(city),
            Some(postal_code),
            Some(country_code),
        ) => Some(Address {
            recipient: recipient.clone(),
            line1: line1.clone(),
            line2: line2.clone(),
            city: city.clone(),
            postal_code: postal_code.clone(),
            country_code: country_code.clone(),
        }),
        _ => None,
    };
    Ok(Shipment {
        order_id: OrderId(row.order_id),
        state,
        address,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
