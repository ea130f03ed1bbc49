//! Accounts and payments as the business sees them: identifiers, money, and
//! the rules that decide a charge, a refund and a top-up. No IO, no SQL, no
//! proto.

use chrono::{DateTime, Utc};

pub use domain_types::{Currency, CustomerId, Money, OrderId};

domain_types::uuid_id! {
    /// A payment: one per order that reached the payment step.
    pub struct PaymentId;
}

/// An account as opened by a client, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub customer_id: CustomerId,
    pub initial_balance: Money,
}

/// A top-up as requested by a client: a positive amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    pub customer_id: CustomerId,
    pub amount: Money,
}

/// A customer's account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub customer_id: CustomerId,
    pub balance: Money,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopUpError {
    #[error("the account holds {account}, not {requested}")]
    CurrencyMismatch { account: String, requested: String },
    #[error("the balance would exceed the largest amount an account can hold")]
    Overflow,
}

impl Account {
    /// The balance after adding `amount`.
    pub fn top_up(&self, amount: &Money) -> Result<i64, TopUpError> {
        if amount.currency() != self.balance.currency() {
            return Err(TopUpError::CurrencyMismatch {
                account: self.balance.currency().as_str().to_owned(),
                requested: amount.currency().as_str().to_owned(),
            });
        }
        self.balance
            .minor_units()
            .checked_add(amount.minor_units())
            .ok_or(TopUpError::Overflow)
    }
}

/// Why a charge was refused; nothing was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    AccountNotFound,
    LimitExceeded,
    CurrencyMismatch,
    InsufficientFunds,
    /// A refund for the order came first, or the charge was refunded.
    OrderRefunded,
}

impl Decline {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::LimitExceeded => "LIMIT_EXCEEDED",
            Self::CurrencyMismatch => "CURRENCY_MISMATCH",
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::OrderRefunded => "ORDER_REFUNDED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::AccountNotFound,
            Self::LimitExceeded,
            Self::CurrencyMismatch,
            Self::InsufficientFunds,
            Self::OrderRefunded,
        ]
        .into_iter()
        .find(|d| d.as_str() == raw)
    }
}

/// The saga's request to charge an order, already validated: the amount is
/// positive and comes from the stock reservation, never from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub amount: Money,
}

/// Decides a first charge against the customer's account: the balance
/// after taking the amount, or why it is declined. The checks run in a
/// fixed order: account, limit, currency, funds.
pub fn decide_charge(
    account: Option<&Account>,
    amount: &Money,
    limit_minor: i64,
) -> Result<i64, Decline> {
    let account = account.ok_or(Decline::AccountNotFound)?;
    if amount.minor_units() > limit_minor {
        return Err(Decline::LimitExceeded);
    }
    if amount.currency() != account.balance.currency() {
        return Err(Decline::CurrencyMismatch);
    }
    account
        .balance
        .minor_units()
        .checked_sub(amount.minor_units())
        .filter(|left| *left >= 0)
        .ok_or(Decline::InsufficientFunds)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// The amount was taken from the balance and is kept.
    Charged,
    /// The charge was given back.
    Refunded,
    /// The charge was refused; nothing was taken.
    Declined(Decline),
    /// A refund came before any charge: a later charge is refused.
    Tombstone,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charged => "CHARGED",
            Self::Refunded => "REFUNDED",
            Self::Declined(_) => "DECLINED",
            Self::Tombstone => "TOMBSTONE",
        }
    }

    pub fn reason(self) -> Option<Decline> {
        match self {
            Self::Declined(reason) => Some(reason),
            _ => None,
        }
    }

    /// The status stored as `status` and `failure_reason`.
    pub fn parse(status: &str, reason: Option<&str>) -> Option<Self> {
        match (status, reason) {
            ("CHARGED", None) => Some(Self::Charged),
            ("REFUNDED", None) => Some(Self::Refunded),
            ("TOMBSTONE", None) => Some(Self::Tombstone),
            ("DECLINED", Some(reason)) => Decline::parse(reason).map(Self::Declined),
            _ => None,
        }
    }
}

/// An order's payment as stored: the outcome of its payment step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    /// `None` for a tombstone: the refund does not name the customer.
    pub customer_id: Option<CustomerId>,
    /// What was charged or asked for; `None` for a tombstone.
    pub amount: Option<Money>,
    pub status: PaymentStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeReply {
    Processed {
        order_id: OrderId,
        payment_id: PaymentId,
        amount: Money,
    },
    Failed {
        order_id: OrderId,
        reason: Decline,
    },
}

impl Payment {
    /// The first outcome of a charge, as stored.
    pub fn from_charge(
        payment_id: PaymentId,
        charge: &Charge,
        outcome: Result<i64, Decline>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            payment_id,
            order_id: charge.order_id,
            customer_id: Some(charge.customer_id.clone()),
            amount: Some(charge.amount.clone()),
            status: match outcome {
                Ok(_) => PaymentStatus::Charged,
                Err(reason) => PaymentStatus::Declined(reason),
            },
            created_at: at,
            updated_at: at,
        }
    }

    /// How a charge for this order is answered, the first time and every
    /// time it is sent again: the same way, whatever the balance is now.
    pub fn charge_reply(&self) -> ChargeReply {
        let failed = |reason| ChargeReply::Failed {
            order_id: self.order_id,
            reason,
        };
        match (self.status, &self.amount) {
            (PaymentStatus::Charged, Some(amount)) => ChargeReply::Processed {
                order_id: self.order_id,
                payment_id: self.payment_id,
                amount: amount.clone(),
            },
            (PaymentStatus::Declined(reason), _) => failed(reason),
            // A charged payment always has its amount; without it nothing
            // can be answered but a refusal.
            (PaymentStatus::Charged | PaymentStatus::Refunded | PaymentStatus::Tombstone, _) => {
                failed(Decline::OrderRefunded)
            }
        }
    }

    /// What a refund does to this payment.
    pub fn refund_action(&self) -> RefundAction {
        match (self.status, &self.customer_id, &self.amount) {
            (PaymentStatus::Charged, Some(customer_id), Some(amount)) => RefundAction::GiveBack {
                customer_id: customer_id.clone(),
                amount: amount.clone(),
            },
            _ => RefundAction::Nothing,
        }
    }
}

/// The effect of a refund on an order's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAction {
    /// Return exactly the charge to the customer's balance; mark it refunded.
    GiveBack {
        customer_id: CustomerId,
        amount: Money,
    },
    /// Already refunded, declined or tombstoned: nothing to do.
    Nothing,
}

/// Position in a customer's payment list, newest first: the creation time
/// and id of the last payment seen (tokens of `ListPayments`).
pub type PageCursor = domain_types::NewestFirst<PaymentId>;

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor_units: i64) -> Money {
        Money::new(minor_units, Currency::parse("EUR").expect("currency"))
    }

    fn account(balance: Money) -> Account {
        Account {
            customer_id: CustomerId::parse("customer-1").expect("id"),
            balance,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn payment(status: PaymentStatus) -> Payment {
        let charge = Charge {
            order_id: OrderId::new(),
            customer_id: CustomerId::parse("customer-1").expect("id"),
            amount: eur(250),
        };
        let mut payment = Payment::from_charge(PaymentId::new(), &charge, Ok(0), Utc::now());
        payment.status = status;
        payment
    }

    #[test]
    fn a_charge_takes_the_amount_from_the_balance() {
        assert_eq!(
            decide_charge(Some(&account(eur(1000))), &eur(300), 500),
            Ok(700)
        );
        assert_eq!(
            decide_charge(Some(&account(eur(300))), &eur(300), 500),
            Ok(0)
        );
    }

    #[test]
    fn a_charge_without_an_account_is_declined_before_anything_else() {
        assert_eq!(
            decide_charge(None, &eur(i64::MAX), 10),
            Err(Decline::AccountNotFound)
        );
    }

    #[test]
    fn the_limit_is_checked_before_the_currency_and_the_funds() {
        let usd = Money::new(501, Currency::parse("USD").expect("currency"));
        assert_eq!(
            decide_charge(Some(&account(eur(0))), &usd, 500),
            Err(Decline::LimitExceeded)
        );
        assert_eq!(
            decide_charge(Some(&account(eur(1000))), &eur(500), 500),
            Ok(500),
            "the limit itself is allowed"
        );
    }

    #[test]
    fn the_currency_is_checked_before_the_funds() {
        let usd = Money::new(10, Currency::parse("USD").expect("currency"));
        assert_eq!(
            decide_charge(Some(&account(eur(0))), &usd, 500),
            Err(Decline::CurrencyMismatch)
        );
    }

    #[test]
    fn a_charge_never_overdraws() {
        assert_eq!(
            decide_charge(Some(&account(eur(299))), &eur(300), 500),
            Err(Decline::InsufficientFunds)
        );
    }

    #[test]
    fn a_top_up_must_be_in_the_accounts_currency_and_never_overflows() {
        let usd = Money::new(10, Currency::parse("USD").expect("currency"));
        assert!(matches!(
            account(eur(5)).top_up(&usd),
            Err(TopUpError::CurrencyMismatch { .. })
        ));
        assert_eq!(account(eur(5)).top_up(&eur(10)), Ok(15));
        assert_eq!(
            account(eur(i64::MAX - 1)).top_up(&eur(2)),
            Err(TopUpError::Overflow)
        );
    }

    #[test]
    fn an_answered_charge_is_answered_the_same_way_again() {
        let charged = payment(PaymentStatus::Charged);
        assert_eq!(
            charged.charge_reply(),
            ChargeReply::Processed {
                order_id: charged.order_id,
                payment_id: charged.payment_id,
                amount: eur(250),
            }
        );
        let declined = payment(PaymentStatus::Declined(Decline::InsufficientFunds));
        assert_eq!(
            declined.charge_reply(),
            ChargeReply::Failed {
                order_id: declined.order_id,
                reason: Decline::InsufficientFunds
            }
        );
    }

    #[test]
    fn a_refunded_or_tombstoned_order_refuses_a_charge() {
        for status in [PaymentStatus::Refunded, PaymentStatus::Tombstone] {
            let refused = payment(status);
            assert_eq!(
                refused.charge_reply(),
                ChargeReply::Failed {
                    order_id: refused.order_id,
                    reason: Decline::OrderRefunded
                }
            );
        }
    }

    #[test]
    fn only_a_kept_charge_is_given_back() {
        assert_eq!(
            payment(PaymentStatus::Charged).refund_action(),
            RefundAction::GiveBack {
                customer_id: CustomerId::parse("customer-1").expect("id"),
                amount: eur(250),
            }
        );
        for status in [
            PaymentStatus::Refunded,
            PaymentStatus::Tombstone,
            PaymentStatus::Declined(Decline::LimitExceeded),
        ] {
            assert_eq!(payment(status).refund_action(), RefundAction::Nothing);
        }
    }

    #[test]
    fn statuses_round_trip_through_their_stored_form() {
        for status in [
            PaymentStatus::Charged,
            PaymentStatus::Refunded,
            PaymentStatus::Tombstone,
            PaymentStatus::Declined(Decline::CurrencyMismatch),
        ] {
            let reason = status.reason().map(Decline::as_str);
            assert_eq!(PaymentStatus::parse(status.as_str(), reason), Some(status));
        }
        assert_eq!(PaymentStatus::parse("DECLINED", None), None);
        assert_eq!(
            PaymentStatus::parse("CHARGED", Some("LIMIT_EXCEEDED")),
            None
        );
    }
}
