//! Rows and queries of the payment database.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::db::{CorruptRow, DbError};
use uuid::Uuid;

use crate::domain::{
    Account, Currency, CustomerId, Money, NewAccount, OrderId, PageCursor, Payment, PaymentId,
    PaymentStatus,
};
use crate::schema::{accounts, payments};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = accounts, check_for_backend(diesel::pg::Pg))]
struct AccountRow {
    customer_id: String,
    balance_minor: i64,
    currency: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payments, check_for_backend(diesel::pg::Pg))]
struct PaymentRow {
    order_id: Uuid,
    payment_id: Uuid,
    customer_id: Option<String>,
    amount_minor: Option<i64>,
    currency: Option<String>,
    status: String,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Opens an account. Returns `None`, writing nothing, when the customer has
/// one already.
pub async fn insert_account(
    conn: &mut AsyncPgConnection,
    account: &NewAccount,
) -> Result<Option<Account>, DbError> {
    let row = diesel::insert_into(accounts::table)
        .values((
            accounts::customer_id.eq(account.customer_id.as_str()),
            accounts::balance_minor.eq(account.initial_balance.minor_units()),
            accounts::currency.eq(account.initial_balance.currency().as_str()),
        ))
        .on_conflict_do_nothing()
        .returning(AccountRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    row.map(account_to_domain).transpose()
}

/// The customer's account; with `lock`, its row stays locked (`FOR UPDATE`)
/// until the transaction ends.
pub async fn find_account(
    conn: &mut AsyncPgConnection,
    customer_id: &CustomerId,
    lock: bool,
) -> Result<Option<Account>, DbError> {
    let query = accounts::table
        .find(customer_id.as_str())
        .select(AccountRow::as_select());
    let row = if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    row.map(account_to_domain).transpose()
}

/// The customer's account if it holds money, locked (`FOR UPDATE`) until the
/// transaction ends; an empty or missing account is left alone (`None`).
pub async fn lock_account_with_money(
    conn: &mut AsyncPgConnection,
    customer_id: &CustomerId,
) -> Result<Option<Account>, DbError> {
    let row = accounts::table
        .find(customer_id.as_str())
        .filter(accounts::balance_minor.gt(0))
        .select(AccountRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    row.map(account_to_domain).transpose()
}

/// Sets the balance of an account whose row the caller holds locked.
pub async fn set_balance(
    conn: &mut AsyncPgConnection,
    customer_id: &CustomerId,
    balance_minor: i64,
) -> Result<Account, DbError> {
    let row = diesel::update(accounts::table.find(customer_id.as_str()))
        .set((
            accounts::balance_minor.eq(balance_minor),
            accounts::updated_at.eq(diesel::dsl::now),
        ))
        .returning(AccountRow::as_returning())
        .get_result(conn)
        .await?;
    account_to_domain(row)
}

/// Adds `amount` to the customer's balance in one statement and returns
/// the new balance. The account exists and is in `amount`'s currency.
pub async fn credit(
    conn: &mut AsyncPgConnection,
    customer_id: &CustomerId,
    amount: &Money,
) -> Result<i64, DbError> {
    Ok(diesel::update(
        accounts::table
            .find(customer_id.as_str())
            .filter(accounts::currency.eq(amount.currency().as_str())),
    )
    .set((
        accounts::balance_minor.eq(accounts::balance_minor + amount.minor_units()),
        accounts::updated_at.eq(diesel::dsl::now),
    ))
    .returning(accounts::balance_minor)
    .get_result(conn)
    .await?)
}

/// Locks, in customer id order, the accounts of `charging` that hold money
/// and those of the customers whose payments for `refunding` a batch gives
/// back: every account a batch of charges and refunds will change, taken
/// before any of them, so that two batches never wait for each other's
/// accounts in opposite orders. An empty account is left unlocked: every
/// charge on it is declined without a lock. It does not wait (`NOWAIT`): if
/// another transaction holds one of them, it fails at once, and the consumer
/// handles the batch's messages one per transaction.
pub async fn lock_for_batch(
    conn: &mut AsyncPgConnection,
    charging: &[&str],
    refunding: &[Uuid],
) -> Result<usize, DbError> {
    let refunded = payments::table
        .filter(payments::order_id.eq_any(refunding))
        .filter(payments::customer_id.is_not_null())
        .select(payments::customer_id.assume_not_null());
    let locked: Vec<String> = accounts::table
        .filter(
            accounts::customer_id
                .eq_any(charging)
                .and(accounts::balance_minor.gt(0))
                .or(accounts::customer_id.eq_any(refunded)),
        )
        .order(accounts::customer_id.asc())
        .select(accounts::customer_id)
        .for_update()
        .no_wait()
        .load(conn)
        .await?;
    Ok(locked.len())
}

/// The order's payment; with `lock`, its row stays locked until the
/// transaction ends.
pub async fn find_payment(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    lock: bool,
) -> Result<Option<Payment>, DbError> {
    let query = payments::table
        .find(order_id.0)
        .select(PaymentRow::as_select());
    let row = if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    row.map(payment_to_domain).transpose()
}

/// Stores the first outcome of an order's payment step. Returns `None`,
/// writing nothing, when the order has one already (a concurrent
/// transaction stored it first).
pub async fn insert_payment(
    conn: &mut AsyncPgConnection,
    payment_id: PaymentId,
    order_id: OrderId,
    customer_id: Option<&CustomerId>,
    amount: Option<&Money>,
    status: PaymentStatus,
) -> Result<Option<Payment>, DbError> {
    let row = diesel::insert_into(payments::table)
        .values((
            payments::order_id.eq(order_id.0),
            payments::payment_id.eq(payment_id.0),
            payments::customer_id.eq(customer_id.map(CustomerId::as_str)),
            payments::amount_minor.eq(amount.map(Money::minor_units)),
            payments::currency.eq(amount.map(|a| a.currency().as_str())),
            payments::status.eq(status.as_str()),
            payments::failure_reason.eq(status.reason().map(|r| r.as_str())),
        ))
        .on_conflict(payments::order_id)
        .do_nothing()
        .returning(PaymentRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    row.map(payment_to_domain).transpose()
}

/// Marks a charged payment, whose row the caller holds locked, refunded.
pub async fn mark_refunded(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
) -> Result<Payment, DbError> {
    let row = diesel::update(
        payments::table
            .find(order_id.0)
            .filter(payments::status.eq(PaymentStatus::Charged.as_str())),
    )
    .set((
        payments::status.eq(PaymentStatus::Refunded.as_str()),
        payments::updated_at.eq(diesel::dsl::now),
    ))
    .returning(PaymentRow::as_returning())
    .get_result(conn)
    .await?;
    payment_to_domain(row)
}

/// Up to `limit` of a customer's payments older than `after`, newest first.
pub async fn list_by_customer(
    conn: &mut AsyncPgConnection,
    customer_id: &CustomerId,
    after: Option<PageCursor>,
    limit: i64,
) -> Result<Vec<Payment>, DbError> {
    let mut query = payments::table
        .filter(payments::customer_id.eq(customer_id.as_str()))
        .select(PaymentRow::as_select())
        .order((payments::created_at.desc(), payments::payment_id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(cursor) = after {
        query = query.filter(
            payments::created_at
                .lt(cursor.created_at)
                .or(payments::created_at
                    .eq(cursor.created_at)
                    .and(payments::payment_id.lt(cursor.id.0))),
        );
    }
    query
        .load(conn)
        .await?
        .into_iter()
        .map(payment_to_domain)
        .collect()
}

fn account_to_domain(row: AccountRow) -> Result<Account, DbError> {
    let corrupt = CorruptRow::of("account", &row.customer_id);
    Ok(Account {
        customer_id: CustomerId::parse(&row.customer_id).map_err(&corrupt)?,
        balance: Money::new(
            Money::check_non_negative(row.balance_minor).map_err(&corrupt)?,
            Currency::parse(&row.currency).map_err(&corrupt)?,
        ),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn payment_to_domain(row: PaymentRow) -> Result<Payment, DbError> {
    let corrupt = CorruptRow::of("payment of order", row.order_id);
    let status =
        PaymentStatus::parse(&row.status, row.failure_reason.as_deref()).ok_or_else(|| {
            corrupt(format!(
                "unknown status {:?} with reason {:?}",
                row.status, row.failure_reason
            ))
        })?;
    let customer_id = row
        .customer_id
        .as_deref()
        .map(CustomerId::parse)
        .transpose()
        .map_err(&corrupt)?;
    let amount = match (row.amount_minor, row.currency.as_deref()) {
        (Some(minor_units), Some(currency)) => Some(Money::new(
            minor_units,
            Currency::parse(currency).map_err(&corrupt)?,
        )),
        (None, None) => None,
        _ => return Err(corrupt("amount without currency".to_owned()).into()),
    };
    Ok(Payment {
        payment_id: PaymentId(row.payment_id),
        order_id: OrderId(row.order_id),
        customer_id,
        amount,
        status,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
