//! The order service under test: a fresh database, its own topic namespace,
//! the service on port 0 in a task (test_support's `ServiceHarness`).

#![allow(dead_code)]

use proto::order::v1 as api;
use proto::order::v1::order_service_client::OrderServiceClient;
use service_kit::config::TelemetryArgs;
use test_support::ServiceHarness;
use tonic::transport::Channel;

pub struct TestApp {
    pub client: OrderServiceClient<Channel>,
    pub harness: ServiceHarness,
}

pub async fn spawn_app() -> TestApp {
    let harness = ServiceHarness::create("order")
        .await
        .expect("test database and topics");
    let config = order_service::Config {
        listen_addr: harness.listen_addr(),
        database: harness.database(8),
        kafka: harness.kafka(),
        telemetry: TelemetryArgs::quiet(),
        grpc: service_kit::config::GrpcArgs::default(),
        shutdown: harness.shutdown_args(),
    };
    let app = order_service::Application::build(config)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    harness.spawn(|shutdown| app.run_until_stopped(shutdown));
    let client = OrderServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects");
    TestApp { client, harness }
}

pub fn valid_request(idempotency_key: &str) -> api::CreateOrderRequest {
    api::CreateOrderRequest {
        customer_id: "customer-1".into(),
        items: vec![
            api::LineItem {
                product_id: "sku-widget".into(),
                quantity: 2,
            },
            api::LineItem {
                product_id: "sku-gadget".into(),
                quantity: 1,
            },
        ],
        shipping_address: Some(api::Address {
            recipient: "Ada Lovelace".into(),
            line1: "12 Analytical Way".into(),
            line2: String::new(),
            city: "London".into(),
            postal_code: "N1 9GU".into(),
            country_code: "GB".into(),
        }),
        idempotency_key: idempotency_key.into(),
    }
}

pub async fn rows(app: &TestApp, table: &str) -> i64 {
    app.harness.rows(table).await.expect("count")
}
