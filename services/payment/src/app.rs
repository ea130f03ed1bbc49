//! The application layer: each operation applies the domain rules in one
//! transaction, writes rows and outbox messages, and commits. The saga's
//! charges and refunds run on the consumer runtime's transaction (they never
//! commit themselves); the client operations open their own.

use diesel_async::{AsyncConnection, AsyncPgConnection};
use domain_types::PageSize;
use service_kit::config::KafkaArgs;
use service_kit::db::{DbError, PgPool, PooledConnection};

use crate::db;
use crate::domain::{
    self, Account, Charge, ChargeReply, CustomerId, NewAccount, OrderId, PageCursor, Payment,
    PaymentId, PaymentStatus, RefundAction, TopUp, TopUpError,
};
use crate::replies;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("customer {0} has no account")]
    AccountNotFound(CustomerId),
    #[error("customer {0} has an account already")]
    AccountExists(CustomerId),
    #[error("order {0} has no payment")]
    PaymentNotFound(OrderId),
    #[error(transparent)]
    TopUp(#[from] TopUpError),
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

#[derive(Clone)]
pub struct Payments {
    pool: PgPool,
    kafka: KafkaArgs,
    limit_minor: i64,
}

impl Payments {
    /// `limit_minor` is the largest single payment; replies go to `kafka`'s
    /// `saga.replies.v1`.
    pub fn new(pool: PgPool, kafka: KafkaArgs, limit_minor: i64) -> Self {
        Self {
            pool,
            kafka,
            limit_minor,
        }
    }

    async fn connection(&self) -> Result<PooledConnection, AppError> {
        service_kit::db::connection(&self.pool)
            .await
            .map_err(AppError::Unavailable)
    }

    /// Charges an order once, on the caller's transaction: the first time
    /// takes the amount from the balance (or declines), stores the outcome
    /// and replies; a re-sent charge is answered from the stored outcome and
    /// takes nothing.
    #[tracing::instrument(
        name = "payment.charge",
        skip_all,
        fields(order_id = %charge.order_id, customer_id = %charge.customer_id)
    )]
    pub async fn charge(
        &self,
        conn: &mut AsyncPgConnection,
        charge: &Charge,
    ) -> Result<ChargeReply, AppError> {
        let (reply, outcome) = self.charge_once(conn, charge).await?;
        outbox::enqueue(conn, &[replies::charge_reply(&self.kafka, &reply)]).await?;
        metrics::counter!("payments_total", "outcome" => outcome).increment(1);
        match &reply {
            ChargeReply::Processed {
                payment_id, amount, ..
            } => tracing::info!(
                order_id = %charge.order_id,
                payment_id = %payment_id,
                amount = %amount,
                outcome,
                "payment charged"
            ),
            ChargeReply::Failed { reason, .. } => tracing::info!(
                order_id = %charge.order_id,
                reason = reason.as_str(),
                outcome,
                "payment declined"
            ),
        }
        Ok(reply)
    }

    async fn charge_once(
        &self,
        conn: &mut AsyncPgConnection,
        charge: &Charge,
    ) -> Result<(ChargeReply, &'static str), AppError> {
        if let Some(existing) = db::find_payment(conn, charge.order_id, false).await? {
            return Ok((existing.charge_reply(), "replayed"));
        }
        // An account that holds money is locked until the commit, so
        // concurrent charges of one customer decide one after the other on
        // the current balance. An empty or missing one is not: the decline is
        // valid on the last committed state, and declined charges of one
        // customer must not queue on its row; only if that state says the
        // charge can go through after all (money arrived meanwhile) is the
        // account locked and the charge decided again.
        let decide = |account: Option<&Account>| {
            domain::decide_charge(account, &charge.amount, self.limit_minor)
        };
        let decision = match db::lock_account_with_money(conn, &charge.customer_id).await? {
            Some(account) => decide(Some(&account)),
            None => match decide(
                db::find_account(conn, &charge.customer_id, false)
                    .await?
                    .as_ref(),
            ) {
                Ok(_) => decide(
                    db::find_account(conn, &charge.customer_id, true)
                        .await?
                        .as_ref(),
                ),
                declined => declined,
            },
        };
        let status = match decision {
            Ok(_) => PaymentStatus::Charged,
            Err(reason) => PaymentStatus::Declined(reason),
        };
        let Some(payment) = db::insert_payment(
            conn,
            PaymentId::new(),
            charge.order_id,
            Some(&charge.customer_id),
            Some(&charge.amount),
            status,
        )
        .await?
        else {
            // A concurrent transaction answered this order first.
            let existing = db::find_payment(conn, charge.order_id, false)
                .await?
                .ok_or(AppError::PaymentNotFound(charge.order_id))?;
            return Ok((existing.charge_reply(), "replayed"));
        };
        let outcome = match decision {
            Ok(balance) => {
                db::set_balance(conn, &charge.customer_id, balance).await?;
                "charged"
            }
            Err(domain::Decline::AccountNotFound) => "account_not_found",
            Err(domain::Decline::LimitExceeded) => "limit_exceeded",
            Err(domain::Decline::CurrencyMismatch) => "currency_mismatch",
            Err(domain::Decline::InsufficientFunds) => "insufficient_funds",
            Err(domain::Decline::OrderRefunded) => "order_refunded",
        };
        Ok((payment.charge_reply(), outcome))
    }

    /// Refunds an order at most once, on the caller's transaction, and
    /// always acknowledges: a kept charge is given back exactly; a refunded,
    /// declined or tombstoned order is left alone; an order never charged
    /// gets a tombstone that refuses a late charge.
    #[tracing::instrument(
        name = "payment.refund",
        skip_all,
        fields(order_id = %order_id, customer_id = tracing::field::Empty)
    )]
    pub async fn refund(
        &self,
        conn: &mut AsyncPgConnection,
        order_id: OrderId,
    ) -> Result<(), AppError> {
        let outcome = self.refund_once(conn, order_id).await?;
        outbox::enqueue(conn, &[replies::payment_refunded(&self.kafka, order_id)]).await?;
        metrics::counter!("refunds_total", "outcome" => outcome).increment(1);
        tracing::info!(order_id = %order_id, outcome, "refund acknowledged");
        Ok(())
    }

    async fn refund_once(
        &self,
        conn: &mut AsyncPgConnection,
        order_id: OrderId,
    ) -> Result<&'static str, AppError> {
        let existing = match db::find_payment(conn, order_id, true).await? {
            Some(payment) => payment,
            None => {
                if db::insert_payment(
                    conn,
                    PaymentId::new(),
                    order_id,
                    None,
                    None,
                    PaymentStatus::Tombstone,
                )
                .await?
                .is_some()
                {
                    return Ok("tombstoned");
                }
                // A concurrent charge stored the order's payment first.
                db::find_payment(conn, order_id, true)
                    .await?
                    .ok_or(AppError::PaymentNotFound(order_id))?
            }
        };
        if let Some(customer_id) = &existing.customer_id {
            tracing::Span::current().record("customer_id", tracing::field::display(customer_id));
        }
        match existing.refund_action() {
            RefundAction::GiveBack {
                customer_id,
                amount,
            } => {
                db::mark_refunded(conn, order_id).await?;
                let balance = db::credit(conn, &customer_id, &amount).await?;
                tracing::info!(order_id = %order_id, amount = %amount, balance, "charge refunded");
                Ok("refunded")
            }
            RefundAction::Nothing => Ok(match existing.status {
                PaymentStatus::Declined(_) => "not_charged",
                PaymentStatus::Tombstone => "already_tombstoned",
                PaymentStatus::Refunded | PaymentStatus::Charged => "already_refunded",
            }),
        }
    }

    /// Opens an account with its initial balance.
    #[tracing::instrument(name = "payment.create_account", skip_all, fields(customer_id = %new.customer_id))]
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, AppError> {
        let mut conn = self.connection().await?;
        let account = db::insert_account(&mut conn, &new)
            .await?
            .ok_or_else(|| AppError::AccountExists(new.customer_id.clone()))?;
        tracing::info!(customer_id = %account.customer_id, balance = %account.balance, "account opened");
        Ok(account)
    }

    /// Adds funds atomically: the account row is locked, the domain checks
    /// currency and overflow, the new balance is written.
    #[tracing::instrument(name = "payment.top_up", skip_all, fields(customer_id = %top_up.customer_id))]
    pub async fn top_up(&self, top_up: TopUp) -> Result<Account, AppError> {
        let mut conn = self.connection().await?;
        let account = conn
            .transaction::<_, AppError, _>(async |conn| {
                let account = db::find_account(conn, &top_up.customer_id, true)
                    .await?
                    .ok_or_else(|| AppError::AccountNotFound(top_up.customer_id.clone()))?;
                let balance = account.top_up(&top_up.amount)?;
                Ok(db::set_balance(conn, &top_up.customer_id, balance).await?)
            })
            .await?;
        tracing::info!(
            customer_id = %account.customer_id,
            amount = %top_up.amount,
            balance = %account.balance,
            "account topped up"
        );
        Ok(account)
    }

    pub async fn get_account(&self, customer_id: &CustomerId) -> Result<Account, AppError> {
        let mut conn = self.connection().await?;
        db::find_account(&mut conn, customer_id, false)
            .await?
            .ok_or_else(|| AppError::AccountNotFound(customer_id.clone()))
    }

    pub async fn get_payment(&self, order_id: OrderId) -> Result<Payment, AppError> {
        let mut conn = self.connection().await?;
        db::find_payment(&mut conn, order_id, false)
            .await?
            .ok_or(AppError::PaymentNotFound(order_id))
    }

    /// One page of a customer's payments, newest first, and the cursor of
    /// the next page if there is one.
    pub async fn list_payments(
        &self,
        customer_id: &CustomerId,
        after: Option<PageCursor>,
        page_size: PageSize,
    ) -> Result<(Vec<Payment>, Option<PageCursor>), AppError> {
        let mut conn = self.connection().await?;
        let payments =
            db::list_by_customer(&mut conn, customer_id, after, page_size.fetch_limit()).await?;
        Ok(page_size.split(payments, |last| PageCursor {
            created_at: last.created_at,
            id: last.payment_id,
        }))
    }
}
