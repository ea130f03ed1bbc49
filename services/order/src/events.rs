//! The order service's outgoing Kafka messages, built from domain types.

use outbox::OutgoingMessage;
use proto::messages::v1 as msg;
use service_kit::grpc::timestamp;

use crate::domain::{CustomerId, Order, OrderId};

/// `OrderCreated` for `topic` (the prefixed order events topic).
pub fn order_created(topic: &str, order: &Order) -> OutgoingMessage {
    let address = &order.shipping_address;
    let event = msg::OrderCreated {
        order_id: order.id.to_string(),
        customer_id: order.customer_id.as_str().to_owned(),
        items: order
            .items
            .iter()
            .map(|item| msg::OrderLine {
                product_id: item.product_id.as_str().to_owned(),
                quantity: item.quantity.get(),
            })
            .collect(),
        shipping_address: Some(msg::ShippingAddress {
            recipient: address.recipient.clone(),
            line1: address.line1.clone(),
            line2: address.line2.clone(),
            city: address.city.clone(),
            postal_code: address.postal_code.clone(),
            country_code: address.country_code.clone(),
        }),
        created_at: Some(timestamp(order.created_at)),
    };
    OutgoingMessage::new(topic, order.id.to_string(), &event)
}

/// `OrderApproved` for `topic`.
pub fn order_approved(topic: &str, id: OrderId, customer_id: &CustomerId) -> OutgoingMessage {
    let event = msg::OrderApproved {
        order_id: id.to_string(),
        customer_id: customer_id.as_str().to_owned(),
    };
    OutgoingMessage::new(topic, id.to_string(), &event)
}

/// `OrderRejected` for `topic`.
pub fn order_rejected(
    topic: &str,
    id: OrderId,
    customer_id: &CustomerId,
    reason: &str,
) -> OutgoingMessage {
    let event = msg::OrderRejected {
        order_id: id.to_string(),
        customer_id: customer_id.as_str().to_owned(),
        reason: reason.to_owned(),
    };
    OutgoingMessage::new(topic, id.to_string(), &event)
}
