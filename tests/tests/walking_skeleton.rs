//! One order from the gRPC call to Kafka, through the real binaries.

use std::time::Duration;

use e2e::{Stack, StackOptions, trace_spans};
use prost::Message;
use proto::messages::v1::OrderCreated;
use proto::order::v1 as api;
use test_support::{eventually, receive_until, tail};

fn order_request() -> api::CreateOrderRequest {
    api::CreateOrderRequest {
        customer_id: "customer-e2e".into(),
        items: vec![api::LineItem {
            product_id: "sku-widget".into(),
            quantity: 3,
        }],
        shipping_address: Some(api::Address {
            recipient: "Grace Hopper".into(),
            line1: "1 Compiler Road".into(),
            line2: String::new(),
            city: "Arlington".into(),
            postal_code: "22201".into(),
            country_code: "US".into(),
        }),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_order_is_announced_on_kafka_keyed_by_its_id_within_one_trace() {
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("stack starts");
    let consumer = tail(&format!("{}{}", stack.prefix, proto::topics::ORDER_EVENTS))
        .await
        .expect("consumer");
    let mut client = stack.order_traced();

    let created = client
        .create_order(order_request())
        .await
        .expect("order created")
        .into_inner();
    assert_eq!(
        created.trace_id.len(),
        32,
        "CreateOrder returns its trace id"
    );

    let received = receive_until(&consumer, Duration::from_secs(20), |r| {
        r.iter().any(|m| m.key == created.order_id)
    })
    .await
    .expect("OrderCreated reaches Kafka");
    let event = received
        .iter()
        .find(|m| m.key == created.order_id)
        .expect("event keyed by order id");

    assert_eq!(
        event.header("message-type"),
        Some("ordersaga.messages.v1.OrderCreated")
    );
    let message_id = event.header("message-id").expect("message-id header");
    assert!(uuid::Uuid::parse_str(message_id).is_ok());
    let traceparent = event.header("traceparent").expect("traceparent header");
    let trace_id = traceparent.split('-').nth(1).expect("traceparent trace id");
    assert_eq!(
        trace_id, created.trace_id,
        "the event continues the order's trace"
    );

    let payload = OrderCreated::decode(event.payload.as_slice()).expect("protobuf payload");
    assert_eq!(payload.order_id, created.order_id);
    assert_eq!(payload.customer_id, "customer-e2e");
    assert_eq!(payload.items.len(), 1);
    assert_eq!(payload.items[0].quantity, 3);

    let order = client
        .get_order(api::GetOrderRequest {
            order_id: created.order_id.clone(),
        })
        .await
        .expect("GetOrder")
        .into_inner();
    assert_eq!(order.status(), api::OrderStatus::Pending);
    assert_eq!(order.trace_id, created.trace_id);

    // Both processes report into the same trace in Jaeger.
    let spans = eventually(
        Duration::from_secs(30),
        "order and relay spans in Jaeger",
        async || {
            let spans = trace_spans(&created.trace_id).await?;
            let has = |service: &str| spans.iter().any(|(s, _)| s == service);
            Ok((has("order-service") && has("outbox-relay")).then_some(spans))
        },
    )
    .await
    .expect("trace in Jaeger");
    assert!(
        spans
            .iter()
            .any(|(s, op)| s == "order-service"
                && op == "ordersaga.order.v1.OrderService/CreateOrder"),
        "server span of CreateOrder: {spans:?}"
    );
    let publish = format!("{}{} publish", stack.prefix, proto::topics::ORDER_EVENTS);
    assert!(
        spans
            .iter()
            .any(|(s, op)| s == "outbox-relay" && *op == publish),
        "producer span of the relay: {spans:?}"
    );
}
