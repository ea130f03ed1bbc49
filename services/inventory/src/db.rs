//! Rows and queries of the inventory database.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::db::{CorruptRow, DbError};
use uuid::Uuid;

use crate::domain::{
    self, Currency, FailureReason, LockedProduct, Money, NewProduct, OrderId, PageCursor, Product,
    ProductId, Quantity, Refusal, Reservation, ReservationStatus, ReservedLine, Stock,
};
use crate::schema::{products, reservation_lines, reservations};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
struct ProductRow {
    id: String,
    name: String,
    description: String,
    unit_price_minor: i64,
    currency: String,
    stock: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = reservations, check_for_backend(diesel::pg::Pg))]
struct ReservationRow {
    order_id: Uuid,
    status: String,
    failure_reason: Option<String>,
    failed_product_id: Option<String>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = reservation_lines, check_for_backend(diesel::pg::Pg))]
struct LineRow {
    product_id: String,
    quantity: i32,
    unit_price_minor: i64,
    currency: String,
}

/// Inserts the product; `None`, writing nothing, when the id is taken.
pub async fn insert_product(
    conn: &mut AsyncPgConnection,
    product: &NewProduct,
) -> Result<Option<Product>, DbError> {
    let row = diesel::insert_into(products::table)
        .values((
            products::id.eq(product.id.as_str()),
            products::name.eq(&product.name),
            products::description.eq(&product.description),
            products::unit_price_minor.eq(product.unit_price.minor_units()),
            products::currency.eq(product.unit_price.currency().as_str()),
            products::stock.eq(product.stock.get()),
        ))
        .on_conflict(products::id)
        .do_nothing()
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    row.map(product_to_domain).transpose()
}

pub async fn find_product(
    conn: &mut AsyncPgConnection,
    id: &ProductId,
) -> Result<Option<Product>, DbError> {
    let row = products::table
        .find(id.as_str())
        .select(ProductRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(product_to_domain).transpose()
}

/// The product, locked until the transaction ends.
pub async fn lock_product(
    conn: &mut AsyncPgConnection,
    id: &ProductId,
) -> Result<Option<Product>, DbError> {
    let row = products::table
        .find(id.as_str())
        .select(ProductRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    row.map(product_to_domain).transpose()
}

/// Sets the stock of a product and returns it as stored.
pub async fn set_stock(
    conn: &mut AsyncPgConnection,
    id: &ProductId,
    stock: Stock,
) -> Result<Product, DbError> {
    let row = diesel::update(products::table.find(id.as_str()))
        .set((
            products::stock.eq(stock.get()),
            products::updated_at.eq(diesel::dsl::now),
        ))
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await?;
    product_to_domain(row)
}

/// Up to `limit` products with ids after the cursor, by id.
pub async fn list_products(
    conn: &mut AsyncPgConnection,
    after: Option<&PageCursor>,
    limit: i64,
) -> Result<Vec<Product>, DbError> {
    let mut query = products::table
        .select(ProductRow::as_select())
        .order(products::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(cursor) = after {
        query = query.filter(products::id.gt(cursor.after.as_str().to_owned()));
    }
    query
        .load(conn)
        .await?
        .into_iter()
        .map(product_to_domain)
        .collect()
}

/// Those of `ids` that exist, in id order. With `lock`, their rows stay
/// locked (`SELECT ... FOR UPDATE ORDER BY id`) until the transaction ends:
/// id order is the one order in which every transaction locks products.
/// Without it, they are read as last committed.
pub async fn find_products(
    conn: &mut AsyncPgConnection,
    ids: &[ProductId],
    lock: bool,
) -> Result<Vec<LockedProduct>, DbError> {
    let ids: Vec<&str> = ids.iter().map(ProductId::as_str).collect();
    let query = products::table
        .filter(products::id.eq_any(&ids))
        .order(products::id.asc())
        .select(ProductRow::as_select());
    let rows = if lock {
        query.for_update().load(conn).await?
    } else {
        query.load(conn).await?
    };
    rows.into_iter().map(to_locked).collect()
}

/// Locks those of `ids` that exist and have stock, in id order (the one
/// lock order of products); sold-out products are left out, unlocked.
pub async fn lock_products_in_stock(
    conn: &mut AsyncPgConnection,
    ids: &[ProductId],
) -> Result<Vec<LockedProduct>, DbError> {
    let ids: Vec<&str> = ids.iter().map(ProductId::as_str).collect();
    let rows = products::table
        .filter(products::id.eq_any(&ids).and(products::stock.gt(0)))
        .order(products::id.asc())
        .select(ProductRow::as_select())
        .for_update()
        .load(conn)
        .await?;
    rows.into_iter().map(to_locked).collect()
}

fn to_locked(row: ProductRow) -> Result<LockedProduct, DbError> {
    let product = product_to_domain(row)?;
    Ok(LockedProduct {
        id: product.id,
        unit_price: product.unit_price,
        stock: product.stock,
    })
}

/// Locks, in id order, the products of `ids` that have stock and those
/// reserved by the orders of `releasing`: every product a batch of
/// reservations and releases will change, taken before any of them, so that
/// two batches never wait for each other's products in opposite orders. A
/// sold-out product is left unlocked: no reservation can take from it, and
/// locking it would queue every batch that names it behind the others. It
/// does not wait (`NOWAIT`): if another transaction holds one of them, it
/// fails at once, and the consumer handles the batch's messages one per
/// transaction, each locking only its own order's products.
pub async fn lock_for_batch(
    conn: &mut AsyncPgConnection,
    ids: &[&str],
    releasing: &[Uuid],
) -> Result<usize, DbError> {
    let reserved = reservation_lines::table
        .filter(reservation_lines::order_id.eq_any(releasing))
        .select(reservation_lines::product_id);
    let locked: Vec<String> = products::table
        .filter(
            products::id
                .eq_any(ids)
                .and(products::stock.gt(0))
                .or(products::id.eq_any(reserved)),
        )
        .order(products::id.asc())
        .select(products::id)
        .for_update()
        .no_wait()
        .load(conn)
        .await?;
    Ok(locked.len())
}

/// Adds `change` (negative to take) to the stock of each product, in id
/// order. The stock CHECK refuses a result below zero.
pub async fn change_stock(
    conn: &mut AsyncPgConnection,
    changes: &[(ProductId, i32)],
) -> Result<(), DbError> {
    let mut changes: Vec<&(ProductId, i32)> = changes.iter().collect();
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, change) in changes {
        diesel::update(products::table.find(id.as_str()))
            .set((
                products::stock.eq(products::stock + *change),
                products::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The order's reservation, locked until the transaction ends.
pub async fn lock_reservation(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
) -> Result<Option<Reservation>, DbError> {
    let row = reservations::table
        .find(order_id.0)
        .select(ReservationRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    assemble(conn, row).await
}

pub async fn find_reservation(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
) -> Result<Option<Reservation>, DbError> {
    let row = reservations::table
        .find(order_id.0)
        .select(ReservationRow::as_select())
        .first(conn)
        .await
        .optional()?;
    assemble(conn, row).await
}

/// Records a RESERVED reservation with its lines in the given order.
pub async fn insert_reserved(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    lines: &[ReservedLine],
) -> Result<(), DbError> {
    diesel::insert_into(reservations::table)
        .values((
            reservations::order_id.eq(order_id.0),
            reservations::status.eq(ReservationStatus::Reserved.as_str()),
        ))
        .execute(conn)
        .await?;
    let rows: Vec<_> = lines
        .iter()
        .zip(0..)
        .map(|(line, line_no)| {
            (
                reservation_lines::order_id.eq(order_id.0),
                reservation_lines::line_no.eq(line_no),
                reservation_lines::product_id.eq(line.product_id.as_str()),
                reservation_lines::quantity.eq(line.quantity.get()),
                reservation_lines::unit_price_minor.eq(line.unit_price.minor_units()),
                reservation_lines::currency.eq(line.unit_price.currency().as_str()),
            )
        })
        .collect();
    diesel::insert_into(reservation_lines::table)
        .values(&rows)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a refused reservation, so a re-sent command gets the same answer.
pub async fn insert_failed(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    refusal: &Refusal,
) -> Result<(), DbError> {
    diesel::insert_into(reservations::table)
        .values((
            reservations::order_id.eq(order_id.0),
            reservations::status.eq(ReservationStatus::Failed.as_str()),
            reservations::failure_reason.eq(refusal.reason.as_str()),
            reservations::failed_product_id.eq(refusal.product_id.as_ref().map(ProductId::as_str)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that a release came before any reservation.
pub async fn insert_tombstone(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
) -> Result<(), DbError> {
    diesel::insert_into(reservations::table)
        .values((
            reservations::order_id.eq(order_id.0),
            reservations::status.eq(ReservationStatus::Tombstone.as_str()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_status(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    status: ReservationStatus,
) -> Result<(), DbError> {
    diesel::update(reservations::table.find(order_id.0))
        .set((
            reservations::status.eq(status.as_str()),
            reservations::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn assemble(
    conn: &mut AsyncPgConnection,
    row: Option<ReservationRow>,
) -> Result<Option<Reservation>, DbError> {
    let Some(row) = row else {
        return Ok(None);
    };
    let lines = reservation_lines::table
        .filter(reservation_lines::order_id.eq(row.order_id))
        .order(reservation_lines::line_no)
        .select(LineRow::as_select())
        .load(conn)
        .await?;
    reservation_to_domain(row, lines).map(Some)
}

fn product_to_domain(row: ProductRow) -> Result<Product, DbError> {
    let corrupt = CorruptRow::of("product", &row.id);
    Ok(Product {
        id: ProductId::parse(&row.id).map_err(&corrupt)?,
        name: row.name.clone(),
        description: row.description.clone(),
        unit_price: money(row.unit_price_minor, &row.currency).map_err(&corrupt)?,
        stock: Stock::parse(row.stock).map_err(&corrupt)?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn money(minor_units: i64, currency: &str) -> Result<Money, String> {
    domain::unit_price(minor_units, Currency::parse(currency)?)
}

fn reservation_to_domain(row: ReservationRow, lines: Vec<LineRow>) -> Result<Reservation, DbError> {
    let corrupt = CorruptRow::of("reservation", row.order_id);
    let status = ReservationStatus::parse(&row.status)
        .ok_or_else(|| corrupt(format!("unknown status {:?}", row.status)))?;
    let failure = match &row.failure_reason {
        None => None,
        Some(raw) => Some(Refusal {
            reason: FailureReason::parse(raw)
                .ok_or_else(|| corrupt(format!("unknown failure reason {raw:?}")))?,
            product_id: row
                .failed_product_id
                .as_deref()
                .map(ProductId::parse)
                .transpose()
                .map_err(&corrupt)?,
        }),
    };
    let lines = lines
        .into_iter()
        .map(|line| {
            Ok(ReservedLine {
                product_id: ProductId::parse(&line.product_id).map_err(&corrupt)?,
                quantity: Quantity::parse(line.quantity).map_err(&corrupt)?,
                unit_price: money(line.unit_price_minor, &line.currency).map_err(&corrupt)?,
            })
        })
        .collect::<Result<_, CorruptRow>>()?;
    Ok(Reservation {
        order_id: OrderId(row.order_id),
        status,
        lines,
        failure,
        updated_at: row.updated_at,
    })
}
