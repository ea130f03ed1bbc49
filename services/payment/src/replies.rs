//! The payment service's replies to the saga, built from domain types.

use outbox::OutgoingMessage;
use proto::messages::v1 as msg;
use service_kit::config::KafkaArgs;

use crate::domain::{ChargeReply, Decline, Money, OrderId};

/// The reply to a charge, keyed by the order id, for `saga.replies.v1`.
pub fn charge_reply(kafka: &KafkaArgs, reply: &ChargeReply) -> OutgoingMessage {
    let topic = kafka.topic(proto::topics::SAGA_REPLIES);
    match reply {
        ChargeReply::Processed {
            order_id,
            payment_id,
            amount,
        } => OutgoingMessage::new(
            topic,
            order_id.to_string(),
            &msg::PaymentProcessed {
                order_id: order_id.to_string(),
                payment_id: payment_id.to_string(),
                amount: Some(money(amount)),
            },
        ),
        ChargeReply::Failed { order_id, reason } => OutgoingMessage::new(
            topic,
            order_id.to_string(),
            &msg::PaymentFailed {
                order_id: order_id.to_string(),
                reason: failure(*reason).into(),
            },
        ),
    }
}

/// The acknowledgement of a refund, whatever it had to do.
pub fn payment_refunded(kafka: &KafkaArgs, order_id: OrderId) -> OutgoingMessage {
    OutgoingMessage::new(
        kafka.topic(proto::topics::SAGA_REPLIES),
        order_id.to_string(),
        &msg::PaymentRefunded {
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

fn failure(reason: Decline) -> msg::PaymentFailure {
    match reason {
        Decline::AccountNotFound => msg::PaymentFailure::AccountNotFound,
        Decline::LimitExceeded => msg::PaymentFailure::LimitExceeded,
        Decline::CurrencyMismatch => msg::PaymentFailure::CurrencyMismatch,
        Decline::InsufficientFunds => msg::PaymentFailure::InsufficientFunds,
        Decline::OrderRefunded => msg::PaymentFailure::OrderRefunded,
    }
}
