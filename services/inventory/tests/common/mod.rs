//! The inventory service against the real PostgreSQL and Kafka: a fresh
//! database and topic namespace per test, the service bound to port 0. Tests
//! play the orchestrator by producing commands to Kafka and read the
//! service's replies from its outbox (no relay runs here).

#![allow(dead_code)]

use std::time::Duration;

use proto::inventory::v1 as api;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::messages::v1 as msg;
use service_kit::config::TelemetryArgs;
use test_support::{OutboxMessage, ServiceHarness, eventually};
use tonic::transport::Channel;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(60);

pub struct TestApp {
    pub client: InventoryServiceClient<Channel>,
    pub harness: ServiceHarness,
}

/// A reply the service wrote to its outbox for the saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Reserved(msg::StockReserved),
    Failed(msg::StockReservationFailed),
    Released(msg::StockReleased),
}

impl Reply {
    pub fn order_id(&self) -> &str {
        match self {
            Self::Reserved(r) => &r.order_id,
            Self::Failed(r) => &r.order_id,
            Self::Released(r) => &r.order_id,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    let harness = ServiceHarness::create("inventory")
        .await
        .expect("test database and topics");
    let config = inventory_service::Config {
        listen_addr: harness.listen_addr(),
        database: harness.database(16),
        kafka: harness.kafka(),
        telemetry: TelemetryArgs::quiet(),
        grpc: service_kit::config::GrpcArgs::default(),
        shutdown: harness.shutdown_args(),
    };
    let app = inventory_service::Application::build(config)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    harness.spawn(|shutdown| app.run_until_stopped(shutdown));
    let client = InventoryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects");
    TestApp { client, harness }
}

pub fn product_request(
    id: &str,
    price: i64,
    currency: &str,
    stock: i32,
) -> api::CreateProductRequest {
    api::CreateProductRequest {
        product_id: id.into(),
        name: format!("Product {id}"),
        description: "A fine thing.\nTwo lines.".into(),
        unit_price: Some(api::Money {
            minor_units: price,
            currency: currency.into(),
        }),
        stock,
    }
}

pub fn reserve(order_id: Uuid, items: &[(&str, i32)]) -> msg::ReserveStock {
    msg::ReserveStock {
        order_id: order_id.to_string(),
        items: items
            .iter()
            .map(|(product_id, quantity)| msg::OrderLine {
                product_id: (*product_id).to_owned(),
                quantity: *quantity,
            })
            .collect(),
    }
}

pub fn release(order_id: Uuid) -> msg::ReleaseStock {
    msg::ReleaseStock {
        order_id: order_id.to_string(),
    }
}

impl TestApp {
    pub async fn create_product(&mut self, id: &str, price: i64, currency: &str, stock: i32) {
        self.client
            .create_product(product_request(id, price, currency, stock))
            .await
            .expect("product created");
    }

    pub async fn stock(&mut self, id: &str) -> i32 {
        self.client
            .get_product(api::GetProductRequest {
                product_id: id.into(),
            })
            .await
            .expect("product")
            .into_inner()
            .stock
    }

    pub async fn reservation(&mut self, order_id: Uuid) -> api::Reservation {
        self.client
            .get_reservation(api::GetReservationRequest {
                order_id: order_id.to_string(),
            })
            .await
            .expect("reservation")
            .into_inner()
    }

    /// Sends a command to the inventory's command topic with a new message id,
    /// as the orchestrator (re-)sends it.
    pub async fn send<M: prost::Message + prost::Name>(&self, key: Uuid, command: &M) {
        self.harness
            .send(proto::topics::INVENTORY_COMMANDS, &key.to_string(), command)
            .await
            .expect("command sent");
    }

    pub async fn send_raw(&self, key: Uuid, message_type: &str, payload: &[u8]) {
        self.harness
            .send_raw(
                proto::topics::INVENTORY_COMMANDS,
                &key.to_string(),
                message_type,
                payload,
            )
            .await
            .expect("command sent");
    }

    /// Every reply in the outbox so far, in the order written.
    pub async fn replies(&self) -> Vec<Reply> {
        self.harness
            .outbox(proto::topics::SAGA_REPLIES)
            .await
            .expect("outbox rows")
            .iter()
            .map(|written| {
                let reply = decode_reply(written);
                assert_eq!(
                    written.key,
                    reply.order_id(),
                    "replies are keyed by order id"
                );
                reply
            })
            .collect()
    }

    /// Waits until the outbox holds at least `n` replies and returns them all.
    pub async fn wait_for_replies(&self, n: usize) -> Vec<Reply> {
        eventually(WAIT, &format!("{n} replies"), async || {
            let replies = self.replies().await;
            Ok((replies.len() >= n).then_some(replies))
        })
        .await
        .expect("replies arrive")
    }

    /// Waits for the `n`th reply about `order_id` and returns that order's replies.
    pub async fn wait_for_order(&self, order_id: Uuid, n: usize) -> Vec<Reply> {
        let id = order_id.to_string();
        eventually(WAIT, &format!("{n} replies for {id}"), async || {
            let replies: Vec<Reply> = self
                .replies()
                .await
                .into_iter()
                .filter(|r| r.order_id() == id)
                .collect();
            Ok((replies.len() >= n).then_some(replies))
        })
        .await
        .expect("replies arrive")
    }

    pub async fn rows(&self, table: &str) -> i64 {
        self.harness.rows(table).await.expect("count")
    }
}

fn decode_reply(written: &OutboxMessage) -> Reply {
    let decoded = if written.is::<msg::StockReserved>() {
        written.decode().map(Reply::Reserved)
    } else if written.is::<msg::StockReservationFailed>() {
        written.decode().map(Reply::Failed)
    } else if written.is::<msg::StockReleased>() {
        written.decode().map(Reply::Released)
    } else {
        panic!("unexpected reply type {}", written.message_type)
    };
    decoded.expect("decodes")
}
