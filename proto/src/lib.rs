//! Protobuf contracts of the system: the gRPC API of every service and the
//! payloads of every Kafka message (commands, replies, events). Only the gRPC
//! and messaging edges of a service use these types; domain code never does.

/// gRPC API of the order service.
pub mod order {
    pub mod v1 {
        tonic::include_proto!("ordersaga.order.v1");
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

/// The fully qualified protobuf name of a message, used as the Kafka
/// `message-type` header.
pub trait MessageName {
    const FULL_NAME: &'static str;
}

macro_rules! message_names {
    ($($ty:path => $name:literal),* $(,)?) => {
        $(impl MessageName for $ty { const FULL_NAME: &'static str = $name; })*
    };
}

message_names! {
    messages::v1::OrderCreated => "ordersaga.messages.v1.OrderCreated",
}

/// Kafka topic names; the partition counts live in `config/topics.txt`.
pub mod topics {
    /// Events of the order service, keyed by order id.
    pub const ORDER_EVENTS: &str = "order.events.v1";
}
