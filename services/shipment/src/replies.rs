//! The shipment service's replies to the saga, built from domain types.

use outbox::OutgoingMessage;
use proto::messages::v1 as msg;

use crate::domain::{CreateReply, FailureReason, OrderId};

pub fn to_create(topic: &str, order_id: OrderId, reply: &CreateReply) -> OutgoingMessage {
    let key = order_id.to_string();
    match reply {
        CreateReply::Created(booking) => OutgoingMessage::new(
            topic,
            key.clone(),
            &msg::ShipmentCreated {
                order_id: key,
                shipment_id: booking.shipment_id.to_string(),
                tracking_number: booking.tracking_number.as_str().to_owned(),
            },
        ),
        CreateReply::Failed(reason) => OutgoingMessage::new(
            topic,
            key.clone(),
            &msg::ShipmentFailed {
                order_id: key,
                reason: failure_to_proto(*reason).into(),
            },
        ),
    }
}

pub fn cancelled(topic: &str, order_id: OrderId) -> OutgoingMessage {
    let key = order_id.to_string();
    OutgoingMessage::new(
        topic,
        key.clone(),
        &msg::ShipmentCancelled { order_id: key },
    )
}

pub fn failure_to_proto(reason: FailureReason) -> msg::ShipmentFailure {
    match reason {
        FailureReason::Undeliverable => msg::ShipmentFailure::Undeliverable,
        FailureReason::OrderCancelled => msg::ShipmentFailure::OrderCancelled,
    }
}
