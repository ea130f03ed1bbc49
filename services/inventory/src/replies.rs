//! The inventory's replies to the saga, built from domain types.

use outbox::OutgoingMessage;
use proto::messages::v1 as msg;

use crate::domain::{FailureReason, Money, OrderId, ReserveAnswer};

/// The reply to a ReserveStock, keyed by the order id.
pub fn reserve_reply(topic: &str, order_id: OrderId, answer: &ReserveAnswer) -> OutgoingMessage {
    let key = order_id.to_string();
    match answer {
        ReserveAnswer::Reserved { lines, total } => OutgoingMessage::new(
            topic,
            key.clone(),
            &msg::StockReserved {
                order_id: key,
                lines: lines
                    .iter()
                    .map(|line| msg::PricedLine {
                        product_id: line.product_id.as_str().to_owned(),
                        quantity: line.quantity.get(),
                        unit_price: Some(money(&line.unit_price)),
                    })
                    .collect(),
                total: Some(money(total)),
            },
        ),
        ReserveAnswer::Refused(refusal) => OutgoingMessage::new(
            topic,
            key.clone(),
            &msg::StockReservationFailed {
                order_id: key,
                reason: failure(refusal.reason).into(),
                product_id: refusal
                    .product_id
                    .as_ref()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
            },
        ),
    }
}

/// The reply to a ReleaseStock: the compensation is acknowledged.
pub fn stock_released(topic: &str, order_id: OrderId) -> OutgoingMessage {
    OutgoingMessage::new(
        topic,
        order_id.to_string(),
        &msg::StockReleased {
            order_id: order_id.to_string(),
        },
    )
}

fn money(amount: &Money) -> msg::Money {
    msg::Money {
        minor_units: amount.minor_units(),
        currency: amount.currency().as_str().to_owned(),
    }
}

fn failure(reason: FailureReason) -> msg::StockFailure {
    match reason {
        FailureReason::OutOfStock => msg::StockFailure::OutOfStock,
        FailureReason::UnknownProduct => msg::StockFailure::UnknownProduct,
        FailureReason::CurrencyMismatch => msg::StockFailure::CurrencyMismatch,
        FailureReason::OrderReleased => msg::StockFailure::OrderReleased,
    }
}
