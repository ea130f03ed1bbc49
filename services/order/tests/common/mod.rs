//! The order service under test: a fresh database, its own topic namespace,
//! the service on port 0 in a task.

#![allow(dead_code)]

use std::net::SocketAddr;

use proto::order::v1 as api;
use proto::order::v1::order_service_client::OrderServiceClient;
use service_kit::config::{DatabaseArgs, KafkaArgs, ShutdownArgs, TelemetryArgs};
use test_support::{TestDatabase, count_rows};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct TestApp {
    pub client: OrderServiceClient<Channel>,
    pub db: TestDatabase,
    /// Topic prefix of this test's namespace.
    pub prefix: String,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    let db = TestDatabase::create("order").await.expect("test database");
    let prefix = test_support::topic_namespace().await.expect("topics");
    let config = order_service::Config {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database: DatabaseArgs {
            database_url: db.url.clone(),
            database_pool_size: 8,
        },
        kafka: KafkaArgs::new(test_support::kafka_brokers(), prefix.clone()),
        telemetry: TelemetryArgs::quiet(),
        shutdown: ShutdownArgs {
            shutdown_grace_seconds: 1,
        },
    };
    let app = order_service::Application::build(config)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = OrderServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects");
    TestApp {
        client,
        db,
        prefix,
        shutdown,
    }
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
    let mut conn = app.db.connect().await.expect("connect");
    count_rows(&mut conn, table).await.expect("count")
}
