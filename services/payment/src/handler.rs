//! The Kafka edge: parses the saga's payment commands into domain types and
//! runs them on the consumer runtime's transaction.

use consumer::{Handler, HandlerError, Incoming};
use diesel_async::AsyncPgConnection;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use proto::messages::v1 as msg;

use crate::app::{AppError, Payments};
use crate::domain::{Charge, Currency, CustomerId, Money, OrderId};

/// Handles `ProcessPayment` and `RefundPayment` from `payment.commands.v1`.
pub struct PaymentHandler {
    payments: Payments,
}

impl PaymentHandler {
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }

    async fn dispatch(
        &self,
        conn: &mut AsyncPgConnection,
        message: &Incoming,
    ) -> Result<(), HandlerError> {
        if message.is::<msg::ProcessPayment>() {
            let command: msg::ProcessPayment = message.decode()?;
            let charge = parse_charge(&command).map_err(HandlerError::Permanent)?;
            self.payments
                .charge(conn, &charge)
                .await
                .map_err(handler_error)?;
            Ok(())
        } else if message.is::<msg::RefundPayment>() {
            let command: msg::RefundPayment = message.decode()?;
            let order_id = OrderId::parse(&command.order_id)
                .map_err(|d| HandlerError::Permanent(format!("invalid order_id: {d}")))?;
            self.payments
                .refund(conn, order_id)
                .await
                .map_err(handler_error)
        } else {
            Err(message.unknown_type())
        }
    }
}

impl Handler for PaymentHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        self.dispatch(conn, message).boxed()
    }

    fn lock_batch<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        batch: &'a [Incoming],
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        async move {
            let (charging, refunding) = batch_locks(batch);
            if charging.is_empty() && refunding.is_empty() {
                return Ok(());
            }
            let charging: Vec<&str> = charging.iter().map(String::as_str).collect();
            crate::db::lock_for_batch(conn, &charging, &refunding)
                .await
                .map_err(|error| handler_error(AppError::Db(error)))?;
            Ok(())
        }
        .boxed()
    }
}

/// The customers a batch charges and the orders it refunds (whose
/// customers' accounts it credits). Unreadable messages are left out:
/// `handle` rejects them.
pub fn batch_locks(batch: &[Incoming]) -> (Vec<String>, Vec<uuid::Uuid>) {
    let mut charging = Vec::new();
    let mut refunding = Vec::new();
    for message in batch {
        if message.is::<msg::ProcessPayment>() {
            if let Ok(command) = message.decode::<msg::ProcessPayment>() {
                charging.push(command.customer_id);
            }
        } else if message.is::<msg::RefundPayment>()
            && let Ok(command) = message.decode::<msg::RefundPayment>()
            && let Ok(order_id) = OrderId::parse(&command.order_id)
        {
            refunding.push(order_id.0);
        }
    }
    charging.sort();
    charging.dedup();
    (charging, refunding)
}

/// An invalid command can never succeed: the reason it is dead-lettered with.
fn parse_charge(command: &msg::ProcessPayment) -> Result<Charge, String> {
    let order_id =
        OrderId::parse(&command.order_id).map_err(|d| format!("invalid order_id: {d}"))?;
    let customer_id =
        CustomerId::parse(&command.customer_id).map_err(|d| format!("invalid customer_id: {d}"))?;
    let amount = command
        .amount
        .as_ref()
        .ok_or_else(|| "invalid amount: is required".to_owned())?;
    let minor_units = Money::check_positive(amount.minor_units)
        .map_err(|d| format!("invalid amount.minor_units: {d}"))?;
    let currency =
        Currency::parse(&amount.currency).map_err(|d| format!("invalid amount.currency: {d}"))?;
    Ok(Charge {
        order_id,
        customer_id,
        amount: Money::new(minor_units, currency),
    })
}

fn handler_error(error: AppError) -> HandlerError {
    match error {
        AppError::Db(service_kit::db::DbError::Query(error)) => error.into(),
        AppError::Outbox(error) => error.into(),
        AppError::Unavailable(error) => HandlerError::Transient(error),
        other => HandlerError::Retryable(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(amount: Option<msg::Money>) -> msg::ProcessPayment {
        msg::ProcessPayment {
            order_id: uuid::Uuid::now_v7().to_string(),
            customer_id: "customer-1".into(),
            amount,
        }
    }

    fn eur(minor_units: i64) -> Option<msg::Money> {
        Some(msg::Money {
            minor_units,
            currency: "EUR".into(),
        })
    }

    #[test]
    fn a_charge_without_a_positive_amount_is_an_invalid_command() {
        assert!(parse_charge(&command(None)).is_err());
        assert!(parse_charge(&command(eur(0))).is_err());
        assert!(parse_charge(&command(eur(-5))).is_err());
        assert!(parse_charge(&command(eur(5))).is_ok());
    }

    #[test]
    fn a_charge_with_a_malformed_order_id_or_currency_is_an_invalid_command() {
        let mut bad_order = command(eur(5));
        bad_order.order_id = "nope".into();
        assert!(parse_charge(&bad_order).is_err());
        let mut bad_currency = command(eur(5));
        if let Some(amount) = bad_currency.amount.as_mut() {
            amount.currency = "euro".into();
        }
        assert!(parse_charge(&bad_currency).is_err());
    }
}
