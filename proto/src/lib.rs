//! Protobuf contracts of the system: the gRPC API of every service and the
//! payloads of every Kafka message (commands, replies, events). Only the gRPC
//! and messaging edges of a service use these types; domain code never does.

/// gRPC API of the order service.
pub mod order {
    pub mod v1 {
        tonic::include_proto!("ordersaga.order.v1");
    }
}

/// gRPC API of the inventory service.
pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("ordersaga.inventory.v1");
    }
}

/// gRPC API of the payment service.
pub mod payment {
    pub mod v1 {
        tonic::include_proto!("ordersaga.payment.v1");
    }
}

/// gRPC API of the shipment service.
pub mod shipment {
    pub mod v1 {
        tonic::include_proto!("ordersaga.shipment.v1");
    }
}

/// gRPC API of the notification service.
pub mod notification {
    pub mod v1 {
        tonic::include_proto!("ordersaga.notification.v1");
    }
}

/// gRPC introspection and operator API of the saga orchestrator.
pub mod orchestrator {
    pub mod v1 {
        tonic::include_proto!("ordersaga.orchestrator.v1");
    }
}

/// Payloads carried on Kafka topics.
pub mod messages {
    pub mod v1 {
        tonic::include_proto!("ordersaga.messages.v1");
    }
}

/// Encoded `FileDescriptorSet` of every contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");

/// Kafka topic names; the partition counts live in `config/topics.txt`.
pub mod topics {
    /// Events of the order service, keyed by order id.
    pub const ORDER_EVENTS: &str = "order.events.v1";
    /// Commands to the order service (approve, reject).
    pub const ORDER_COMMANDS: &str = "order.commands.v1";
    pub const INVENTORY_COMMANDS: &str = "inventory.commands.v1";
    pub const PAYMENT_COMMANDS: &str = "payment.commands.v1";
    pub const SHIPMENT_COMMANDS: &str = "shipment.commands.v1";
    /// Every participant's replies to the orchestrator.
    pub const SAGA_REPLIES: &str = "saga.replies.v1";
    /// Messages no consumer could handle, with the reason in their headers.
    pub const DEAD_LETTER: &str = "dead-letter.v1";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_constants_are_the_topics_the_infrastructure_creates() {
        let listed = include_str!("../../config/topics.txt");
        for topic in [
            topics::ORDER_EVENTS,
            topics::ORDER_COMMANDS,
            topics::INVENTORY_COMMANDS,
            topics::PAYMENT_COMMANDS,
            topics::SHIPMENT_COMMANDS,
            topics::SAGA_REPLIES,
            topics::DEAD_LETTER,
        ] {
            assert!(
                listed
                    .lines()
                    .any(|line| line.split_whitespace().next() == Some(topic)),
                "{topic} missing from config/topics.txt"
            );
        }
    }
}
