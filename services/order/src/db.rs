//! Rows and queries of the order database.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::db::{CorruptRow, DbError};
use uuid::Uuid;

use crate::domain::{
    Address, CustomerId, LineItem, NewOrder, Order, OrderId, OrderStatus, PageCursor, ProductId,
    Quantity, StatusChange,
};
use crate::schema::{order_items, order_status_history, orders};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
struct OrderRow {
    id: Uuid,
    customer_id: String,
    status: String,
    rejection_reason: Option<String>,
    ship_recipient: String,
    ship_line1: String,
    ship_line2: String,
    ship_city: String,
    ship_postal_code: String,
    ship_country_code: String,
    trace_id: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = order_items, check_for_backend(diesel::pg::Pg))]
struct ItemRow {
    order_id: Uuid,
    product_id: String,
    quantity: i32,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = order_status_history, check_for_backend(diesel::pg::Pg))]
struct HistoryRow {
    order_id: Uuid,
    status: String,
    reason: Option<String>,
    at: DateTime<Utc>,
}

/// Inserts the order with its items and first history entry and returns
/// its creation time (the transaction's start, shared by the history entry).
/// Returns `None`, writing nothing, when the customer already used the
/// idempotency key.
pub async fn insert_order(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    order: &NewOrder,
    trace_id: Option<&str>,
) -> Result<Option<DateTime<Utc>>, DbError> {
    let address = &order.shipping_address;
    let inserted = diesel::insert_into(orders::table)
        .values((
            orders::id.eq(id.0),
            orders::customer_id.eq(order.customer_id.as_str()),
            orders::status.eq(OrderStatus::Pending.as_str()),
            orders::ship_recipient.eq(&address.recipient),
            orders::ship_line1.eq(&address.line1),
            orders::ship_line2.eq(&address.line2),
            orders::ship_city.eq(&address.city),
            orders::ship_postal_code.eq(&address.postal_code),
            orders::ship_country_code.eq(&address.country_code),
            orders::idempotency_key.eq(order.idempotency_key.as_ref().map(|k| k.as_str())),
            orders::trace_id.eq(trace_id),
        ))
        .on_conflict((orders::customer_id, orders::idempotency_key))
        .do_nothing()
        .returning(orders::created_at)
        .get_result::<DateTime<Utc>>(conn)
        .await
        .optional()?;
    let Some(created_at) = inserted else {
        return Ok(None);
    };
    let items: Vec<_> = order
        .items
        .iter()
        .zip(0..)
        .map(|(item, line_no)| {
            (
                order_items::order_id.eq(id.0),
                order_items::line_no.eq(line_no),
                order_items::product_id.eq(item.product_id.as_str()),
                order_items::quantity.eq(item.quantity.get()),
            )
        })
        .collect();
    diesel::insert_into(order_items::table)
        .values(&items)
        .execute(conn)
        .await?;
    diesel::insert_into(order_status_history::table)
        .values((
            order_status_history::order_id.eq(id.0),
            order_status_history::status.eq(OrderStatus::Pending.as_str()),
        ))
        .execute(conn)
        .await?;
    Ok(Some(created_at))
}

/// What deciding an order's outcome needs, read under a row lock.
#[derive(Debug, Clone)]
pub struct LockedOrder {
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub rejection_reason: Option<String>,
}

/// Reads the order's status and locks its row (`FOR UPDATE`) until the
/// transaction ends; `None` when there is no such order.
pub async fn lock_status(
    conn: &mut AsyncPgConnection,
    id: OrderId,
) -> Result<Option<LockedOrder>, DbError> {
    let row: Option<(String, String, Option<String>)> = orders::table
        .find(id.0)
        .select((
            orders::customer_id,
            orders::status,
            orders::rejection_reason,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some((customer_id, status, rejection_reason)) = row else {
        return Ok(None);
    };
    let corrupt = CorruptRow::of("order", id);
    Ok(Some(LockedOrder {
        customer_id: CustomerId::parse(&customer_id).map_err(&corrupt)?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        rejection_reason,
    }))
}

/// Sets the order's status (and rejection reason) and appends the change to
/// its history.
pub async fn record_status(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    status: OrderStatus,
    reason: Option<&str>,
) -> Result<(), DbError> {
    diesel::update(orders::table.find(id.0))
        .set((
            orders::status.eq(status.as_str()),
            orders::rejection_reason.eq(reason),
            orders::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    diesel::insert_into(order_status_history::table)
        .values((
            order_status_history::order_id.eq(id.0),
            order_status_history::status.eq(status.as_str()),
            order_status_history::reason.eq(reason),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn find_by_idempotency_key(
    conn: &mut AsyncPgConnection,
    customer_id: &CustomerId,
    key: &str,
) -> Result<Option<Order>, DbError> {
    let row = orders::table
        .filter(orders::customer_id.eq(customer_id.as_str()))
        .filter(orders::idempotency_key.eq(key))
        .select(OrderRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(assemble(conn, row.into_iter().collect()).await?.pop())
}

pub async fn find(conn: &mut AsyncPgConnection, id: OrderId) -> Result<Option<Order>, DbError> {
    let row = orders::table
        .find(id.0)
        .select(OrderRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(assemble(conn, row.into_iter().collect()).await?.pop())
}

/// Up to `limit` of a customer's orders older than `after`, newest first.
pub async fn list_by_customer(
    conn: &mut AsyncPgConnection,
    customer_id: &CustomerId,
    after: Option<PageCursor>,
    limit: i64,
) -> Result<Vec<Order>, DbError> {
    let mut query = orders::table
        .filter(orders::customer_id.eq(customer_id.as_str()))
        .select(OrderRow::as_select())
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(cursor) = after {
        query = query.filter(
            orders::created_at
                .lt(cursor.created_at)
                .or(orders::created_at
                    .eq(cursor.created_at)
                    .and(orders::id.lt(cursor.id.0))),
        );
    }
    let rows = query.load(conn).await?;
    assemble(conn, rows).await
}

/// Loads items and history of `rows` with one query each and builds orders,
/// keeping the order of `rows`.
async fn assemble(
    conn: &mut AsyncPgConnection,
    rows: Vec<OrderRow>,
) -> Result<Vec<Order>, DbError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut items: HashMap<Uuid, Vec<ItemRow>> = HashMap::new();
    for item in order_items::table
        .filter(order_items::order_id.eq_any(&ids))
        .order((order_items::order_id, order_items::line_no))
        .select(ItemRow::as_select())
        .load(conn)
        .await?
    {
        items.entry(item.order_id).or_default().push(item);
    }
    let mut history: HashMap<Uuid, Vec<HistoryRow>> = HashMap::new();
    for change in order_status_history::table
        .filter(order_status_history::order_id.eq_any(&ids))
        .order(order_status_history::id)
        .select(HistoryRow::as_select())
        .load(conn)
        .await?
    {
        history.entry(change.order_id).or_default().push(change);
    }
    rows.into_iter()
        .map(|row| {
            let id = row.id;
            to_domain(
                row,
                items.remove(&id).unwrap_or_default(),
                history.remove(&id).unwrap_or_default(),
            )
        })
        .collect()
}

fn to_domain(
    row: OrderRow,
    items: Vec<ItemRow>,
    history: Vec<HistoryRow>,
) -> Result<Order, DbError> {
    let corrupt = CorruptRow::of("order", row.id);
    let status = |raw: &str| {
        OrderStatus::parse(raw).ok_or_else(|| corrupt(format!("unknown status {raw:?}")))
    };
    Ok(Order {
        id: OrderId(row.id),
        customer_id: CustomerId::parse(&row.customer_id).map_err(&corrupt)?,
        status: status(&row.status)?,
        rejection_reason: row.rejection_reason.clone(),
        items: items
            .iter()
            .map(|item| {
                Ok(LineItem {
                    product_id: ProductId::parse(&item.product_id).map_err(&corrupt)?,
                    quantity: Quantity::parse(item.quantity).map_err(&corrupt)?,
                })
            })
            .collect::<Result<_, CorruptRow>>()?,
        shipping_address: Address {
            recipient: row.ship_recipient.clone(),
            line1: row.ship_line1.clone(),
            line2: row.ship_line2.clone(),
            city: row.ship_city.clone(),
            postal_code: row.ship_postal_code.clone(),
            country_code: row.ship_country_code.clone(),
        },
        history: history
            .iter()
            .map(|change| {
                Ok(StatusChange {
                    status: status(&change.status)?,
                    reason: change.reason.clone(),
                    at: change.at,
                })
            })
            .collect::<Result<_, CorruptRow>>()?,
        created_at: row.created_at,
        trace_id: row.trace_id.clone(),
    })
}
