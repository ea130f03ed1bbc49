//! The messaging edge: Kafka payloads to saga inputs, saga commands to
//! payloads. The only module that knows the message types.

use consumer::{HandlerError, Incoming};
use outbox::OutgoingMessage;
use proto::messages::v1 as msg;
use service_kit::config::KafkaArgs;
use uuid::Uuid;

use crate::record::{Address, LineItem, Money, NewSaga, SagaRecord};
use crate::saga::{Command, Input, Step};

/// What a received message means to the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A new order: start its saga.
    Started(NewSaga),
    /// Something happened to an order's saga.
    Input {
        order_id: Uuid,
        input: Input,
        /// The reservation's total, carried by `StockReserved`.
        reserved_total: Option<Money>,
    },
}

fn order_id(raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw).map_err(|_| HandlerError::Permanent(format!("invalid order id {raw:?}")))
}

fn input(raw_id: &str, input: Input) -> Result<Received, HandlerError> {
    Ok(Received::Input {
        order_id: order_id(raw_id)?,
        input,
        reserved_total: None,
    })
}

/// An enum value's name without its type prefix (`STOCK_FAILURE_OUT_OF_STOCK`
/// becomes `OUT_OF_STOCK`); an unknown value is `UNSPECIFIED`.
fn code(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.strip_prefix(prefix).unwrap_or(n))
        .unwrap_or("UNSPECIFIED")
        .to_owned()
}

/// Decodes a message of `order.events.v1` or `saga.replies.v1`. An unknown
/// type or undecodable payload is a permanent failure.
pub fn decode(message: &Incoming) -> Result<Received, HandlerError> {
    if message.is::<msg::OrderCreated>() {
        let m: msg::OrderCreated = message.decode()?;
        let address = m.shipping_address.unwrap_or_default();
        return Ok(Received::Started(NewSaga {
            order_id: order_id(&m.order_id)?,
            customer_id: m.customer_id,
            items: m
                .items
                .into_iter()
                .map(|line| LineItem {
                    product_id: line.product_id,
                    quantity: line.quantity,
                })
                .collect(),
            shipping_address: Address {
                recipient: address.recipient,
                line1: address.line1,
                line2: address.line2,
                city: address.city,
                postal_code: address.postal_code,
                country_code: address.country_code,
            },
        }));
    }
    if message.is::<msg::OrderApproved>() {
        let m: msg::OrderApproved = message.decode()?;
        return input(&m.order_id, Input::OrderApproved);
    }
    if message.is::<msg::OrderRejected>() {
        let m: msg::OrderRejected = message.decode()?;
        return input(&m.order_id, Input::OrderRejected);
    }
    if message.is::<msg::StockReserved>() {
        let m: msg::StockReserved = message.decode()?;
        return Ok(Received::Input {
            order_id: order_id(&m.order_id)?,
            input: Input::StepSucceeded(Step::ReserveStock),
            reserved_total: m.total.map(|t| Money {
                minor_units: t.minor_units,
                currency: t.currency,
            }),
        });
    }
    if message.is::<msg::StockReservationFailed>() {
        let m: msg::StockReservationFailed = message.decode()?;
        let name = msg::StockFailure::try_from(m.reason)
            .ok()
            .map(|r| r.as_str_name());
        let mut reason = code(name, "STOCK_FAILURE_");
        if !m.product_id.is_empty() {
            reason = format!("{reason} (product {})", m.product_id);
        }
        return input(
            &m.order_id,
            Input::StepFailed {
                step: Step::ReserveStock,
                reason,
            },
        );
    }
    if message.is::<msg::StockReleased>() {
        let m: msg::StockReleased = message.decode()?;
        return input(&m.order_id, Input::Compensated(Step::ReserveStock));
    }
    if message.is::<msg::PaymentProcessed>() {
        let m: msg::PaymentProcessed = message.decode()?;
        return input(&m.order_id, Input::StepSucceeded(Step::ChargePayment));
    }
    if message.is::<msg::PaymentFailed>() {
        let m: msg::PaymentFailed = message.decode()?;
        let name = msg::PaymentFailure::try_from(m.reason)
            .ok()
            .map(|r| r.as_str_name());
        return input(
            &m.order_id,
            Input::StepFailed {
                step: Step::ChargePayment,
                reason: code(name, "PAYMENT_FAILURE_"),
            },
        );
    }
    if message.is::<msg::PaymentRefunded>() {
        let m: msg::PaymentRefunded = message.decode()?;
        return input(&m.order_id, Input::Compensated(Step::ChargePayment));
    }
    if message.is::<msg::ShipmentCreated>() {
        let m: msg::ShipmentCreated = message.decode()?;
        return input(&m.order_id, Input::StepSucceeded(Step::CreateShipment));
    }
    if message.is::<msg::ShipmentFailed>() {
        let m: msg::ShipmentFailed = message.decode()?;
        let name = msg::ShipmentFailure::try_from(m.reason)
            .ok()
            .map(|r| r.as_str_name());
        return input(
            &m.order_id,
            Input::StepFailed {
                step: Step::CreateShipment,
                reason: code(name, "SHIPMENT_FAILURE_"),
            },
        );
    }
    if message.is::<msg::ShipmentCancelled>() {
        let m: msg::ShipmentCancelled = message.decode()?;
        return input(&m.order_id, Input::Compensated(Step::CreateShipment));
    }
    Err(message.unknown_type())
}

/// The message that carries `command` for `saga`, keyed by order id, with
/// the trace context of the current span.
pub fn command(kafka: &KafkaArgs, saga: &SagaRecord, command: &Command) -> OutgoingMessage {
    let id = saga.order_id.to_string();
    let topic = |name: &str| kafka.topic(name);
    let order_id = id.clone();
    match command {
        Command::Perform(Step::ReserveStock) => OutgoingMessage::new(
            topic(proto::topics::INVENTORY_COMMANDS),
            id,
            &msg::ReserveStock {
                order_id,
                items: saga
                    .items
                    .iter()
                    .map(|item| msg::OrderLine {
                        product_id: item.product_id.clone(),
                        quantity: item.quantity,
                    })
                    .collect(),
            },
        ),
        Command::Perform(Step::ChargePayment) => {
            if saga.total.is_none() {
                tracing::error!(order_id = %saga.order_id, "charging an order without a reserved total");
            }
            OutgoingMessage::new(
                topic(proto::topics::PAYMENT_COMMANDS),
                id,
                &msg::ProcessPayment {
                    order_id,
                    customer_id: saga.customer_id.clone(),
                    amount: saga.total.as_ref().map(|t| msg::Money {
                        minor_units: t.minor_units,
                        currency: t.currency.clone(),
                    }),
                },
            )
        }
        Command::Perform(Step::CreateShipment) => {
            let a = &saga.shipping_address;
            OutgoingMessage::new(
                topic(proto::topics::SHIPMENT_COMMANDS),
                id,
                &msg::CreateShipment {
                    order_id,
                    shipping_address: Some(msg::ShippingAddress {
                        recipient: a.recipient.clone(),
                        line1: a.line1.clone(),
                        line2: a.line2.clone(),
                        city: a.city.clone(),
                        postal_code: a.postal_code.clone(),
                        country_code: a.country_code.clone(),
                    }),
                },
            )
        }
        Command::Compensate(Step::ReserveStock) => OutgoingMessage::new(
            topic(proto::topics::INVENTORY_COMMANDS),
            id,
            &msg::ReleaseStock { order_id },
        ),
        Command::Compensate(Step::ChargePayment) => OutgoingMessage::new(
            topic(proto::topics::PAYMENT_COMMANDS),
            id,
            &msg::RefundPayment { order_id },
        ),
        Command::Compensate(Step::CreateShipment) => OutgoingMessage::new(
            topic(proto::topics::SHIPMENT_COMMANDS),
            id,
            &msg::CancelShipment { order_id },
        ),
        Command::ApproveOrder => OutgoingMessage::new(
            topic(proto::topics::ORDER_COMMANDS),
            id,
            &msg::ApproveOrder { order_id },
        ),
        Command::RejectOrder { reason } => OutgoingMessage::new(
            topic(proto::topics::ORDER_COMMANDS),
            id,
            &msg::RejectOrder {
                order_id,
                reason: reason.clone(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use prost::Name as _;

    use super::*;

    fn incoming<M: prost::Message + prost::Name>(m: &M) -> Incoming {
        Incoming {
            topic: "saga.replies.v1".into(),
            partition: 0,
            offset: 0,
            key: String::new(),
            message_id: Uuid::now_v7(),
            message_type: M::full_name(),
            headers: Vec::new(),
            payload: m.encode_to_vec(),
        }
    }

    const ID: &str = "0190b6d2-7c3e-7000-8000-000000000001";

    #[test]
    fn a_failed_reservation_names_the_code_and_the_product() {
        let received = decode(&incoming(&msg::StockReservationFailed {
            order_id: ID.into(),
            reason: msg::StockFailure::OutOfStock.into(),
            product_id: "sku-1".into(),
        }))
        .expect("decodes");
        let Received::Input { input, .. } = received else {
            panic!("not an input");
        };
        assert_eq!(
            input,
            Input::StepFailed {
                step: Step::ReserveStock,
                reason: "OUT_OF_STOCK (product sku-1)".into()
            }
        );
    }

    #[test]
    fn a_failed_payment_names_its_code() {
        let received = decode(&incoming(&msg::PaymentFailed {
            order_id: ID.into(),
            reason: msg::PaymentFailure::InsufficientFunds.into(),
        }))
        .expect("decodes");
        assert!(matches!(
            received,
            Received::Input { input: Input::StepFailed { step: Step::ChargePayment, ref reason }, .. }
                if reason == "INSUFFICIENT_FUNDS"
        ));
    }

    #[test]
    fn a_reservation_carries_its_total() {
        let received = decode(&incoming(&msg::StockReserved {
            order_id: ID.into(),
            lines: Vec::new(),
            total: Some(msg::Money {
                minor_units: 1234,
                currency: "EUR".into(),
            }),
        }))
        .expect("decodes");
        assert_eq!(
            received,
            Received::Input {
                order_id: Uuid::parse_str(ID).expect("uuid"),
                input: Input::StepSucceeded(Step::ReserveStock),
                reserved_total: Some(Money {
                    minor_units: 1234,
                    currency: "EUR".into()
                }),
            }
        );
    }

    #[test]
    fn unknown_types_bad_payloads_and_bad_ids_are_permanent() {
        let mut unknown = incoming(&msg::ReleaseStock {
            order_id: ID.into(),
        });
        unknown.message_type = "ordersaga.messages.v1.Nope".into();
        assert!(matches!(decode(&unknown), Err(HandlerError::Permanent(_))));
        let mut garbage = incoming(&msg::StockReleased {
            order_id: ID.into(),
        });
        garbage.payload = vec![0xff, 0xff, 0xff];
        assert!(matches!(decode(&garbage), Err(HandlerError::Permanent(_))));
        let bad_id = incoming(&msg::StockReleased {
            order_id: "nope".into(),
        });
        assert!(matches!(decode(&bad_id), Err(HandlerError::Permanent(_))));
        assert_eq!(
            msg::StockReleased::full_name(),
            "ordersaga.messages.v1.StockReleased"
        );
    }
}
