//! The order service's outgoing Kafka messages, built from domain types.

use outbox::OutgoingMessage;
use proto::messages::v1 as msg;

use crate::domain::Order;

pub fn order_created(order: &Order) -> OutgoingMessage {
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
    OutgoingMessage::new(proto::topics::ORDER_EVENTS, order.id.to_string(), &event)
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
