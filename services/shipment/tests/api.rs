//! The shipment service against the real PostgreSQL and Kafka: the test plays
//! the orchestrator on `shipment.commands.v1` and reads the replies from the
//! service's outbox (no relay runs here).

use std::time::Duration;

use proto::messages::v1 as msg;
use proto::shipment::v1 as api;
use proto::shipment::v1::shipment_service_client::ShipmentServiceClient;
use service_kit::config::TelemetryArgs;
use shipment_service::domain::DeliverableCountries;
use test_support::{ServiceHarness, eventually};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

struct TestApp {
    client: ShipmentServiceClient<Channel>,
    harness: ServiceHarness,
}

/// A reply found in the outbox.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Created(msg::ShipmentCreated),
    Failed(msg::ShipmentFailure),
    Cancelled,
}

async fn spawn_app() -> TestApp {
    let harness = ServiceHarness::create("shipment")
        .await
        .expect("test database and topics");
    let config = shipment_service::Config {
        listen_addr: harness.listen_addr(),
        deliverable_countries: DeliverableCountries::parse("DE,FR,GB").expect("countries"),
        database: harness.database(4),
        kafka: harness.kafka(),
        telemetry: TelemetryArgs::quiet(),
        grpc: service_kit::config::GrpcArgs::default(),
        shutdown: harness.shutdown_args(),
    };
    let app = shipment_service::Application::build(config)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    harness.spawn(|shutdown| app.run_until_stopped(shutdown));
    let client = ShipmentServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects");
    TestApp { client, harness }
}

fn address(country_code: &str) -> msg::ShippingAddress {
    msg::ShippingAddress {
        recipient: "Ada Lovelace".into(),
        line1: "12 Analytical Way".into(),
        line2: String::new(),
        city: "London".into(),
        postal_code: "N1 9GU".into(),
        country_code: country_code.into(),
    }
}

impl TestApp {
    /// Sends a command as the orchestrator would, with a fresh message id.
    async fn send<M: prost::Message + prost::Name>(&self, order_id: Uuid, command: &M) {
        self.harness
            .send(
                proto::topics::SHIPMENT_COMMANDS,
                &order_id.to_string(),
                command,
            )
            .await
            .expect("sent");
    }

    async fn create(&self, order_id: Uuid, country_code: &str) {
        self.send(
            order_id,
            &msg::CreateShipment {
                order_id: order_id.to_string(),
                shipping_address: Some(address(country_code)),
            },
        )
        .await;
    }

    async fn cancel(&self, order_id: Uuid) {
        self.send(
            order_id,
            &msg::CancelShipment {
                order_id: order_id.to_string(),
            },
        )
        .await;
    }

    /// Every reply for the order in the outbox (on the replies topic), in order.
    async fn replies(&self, order_id: Uuid) -> Vec<Reply> {
        let key = order_id.to_string();
        self.harness
            .outbox(proto::topics::SAGA_REPLIES)
            .await
            .expect("outbox")
            .iter()
            .filter(|written| written.key == key)
            .map(|written| {
                if written.is::<msg::ShipmentCreated>() {
                    let created: msg::ShipmentCreated = written.decode().expect("ShipmentCreated");
                    assert_eq!(created.order_id, key);
                    Reply::Created(created)
                } else if written.is::<msg::ShipmentFailed>() {
                    let failed: msg::ShipmentFailed = written.decode().expect("ShipmentFailed");
                    assert_eq!(failed.order_id, key);
                    Reply::Failed(failed.reason())
                } else if written.is::<msg::ShipmentCancelled>() {
                    let cancelled: msg::ShipmentCancelled =
                        written.decode().expect("ShipmentCancelled");
                    assert_eq!(cancelled.order_id, key);
                    Reply::Cancelled
                } else {
                    panic!("unexpected reply type {}", written.message_type)
                }
            })
            .collect()
    }

    /// Waits until the order has `count` replies and returns them.
    async fn await_replies(&self, order_id: Uuid, count: usize) -> Vec<Reply> {
        eventually(WAIT, &format!("{count} replies"), async || {
            let replies = self.replies(order_id).await;
            Ok((replies.len() >= count).then_some(replies))
        })
        .await
        .expect("replies")
    }

    async fn shipment(&self, order_id: Uuid) -> api::Shipment {
        self.client
            .clone()
            .get_shipment(api::GetShipmentRequest {
                order_id: order_id.to_string(),
            })
            .await
            .expect("shipment found")
            .into_inner()
    }

    async fn rows(&self, table: &str) -> i64 {
        self.harness.rows(table).await.expect("count")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_shipment_has_an_id_and_a_tracking_number() {
    let app = spawn_app().await;
    let order_id = Uuid::now_v7();
    app.create(order_id, "GB").await;
    let replies = app.await_replies(order_id, 1).await;
    let Reply::Created(created) = &replies[0] else {
        panic!("expected ShipmentCreated, got {replies:?}");
    };
    let shipment_id = Uuid::parse_str(&created.shipment_id).expect("shipment id is a UUID");
    assert_eq!(shipment_id.get_version_num(), 7);
    assert!(created.tracking_number.starts_with("OS"));
    assert_eq!(created.tracking_number.len(), 14);

    let shipment = app.shipment(order_id).await;
    assert_eq!(shipment.status(), api::ShipmentStatus::Created);
    assert_eq!(shipment.shipment_id, created.shipment_id);
    assert_eq!(shipment.tracking_number, created.tracking_number);
    assert_eq!(
        shipment.address.map(|a| a.country_code),
        Some("GB".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_orders_get_different_tracking_numbers() {
    let app = spawn_app().await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    app.create(first, "DE").await;
    app.create(second, "FR").await;
    let a = app.await_replies(first, 1).await;
    let b = app.await_replies(second, 1).await;
    let (Reply::Created(a), Reply::Created(b)) = (&a[0], &b[0]) else {
        panic!("expected two ShipmentCreated, got {a:?} and {b:?}");
    };
    assert_ne!(a.tracking_number, b.tracking_number);
    assert_ne!(a.shipment_id, b.shipment_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_outside_the_deliverable_countries_is_refused_as_undeliverable() {
    let app = spawn_app().await;
    let order_id = Uuid::now_v7();
    app.create(order_id, "JP").await;
    let replies = app.await_replies(order_id, 1).await;
    assert_eq!(
        replies,
        [Reply::Failed(msg::ShipmentFailure::Undeliverable)]
    );
    let shipment = app.shipment(order_id).await;
    assert_eq!(shipment.status(), api::ShipmentStatus::Failed);
    assert_eq!(shipment.failure_reason, "UNDELIVERABLE");
    assert!(shipment.tracking_number.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_create_makes_one_shipment_and_gets_the_same_answer() {
    let app = spawn_app().await;
    let order_id = Uuid::now_v7();
    app.create(order_id, "GB").await;
    let first = app.await_replies(order_id, 1).await;
    app.create(order_id, "GB").await;
    let both = app.await_replies(order_id, 2).await;
    assert!(matches!(first[0], Reply::Created(_)), "{first:?}");
    assert_eq!(both[0], both[1], "the re-sent command gets the same answer");
    assert_eq!(app.rows("shipments").await, 1);

    // A refusal is repeated just the same.
    let refused = Uuid::now_v7();
    app.create(refused, "JP").await;
    app.await_replies(refused, 1).await;
    app.create(refused, "JP").await;
    let replies = app.await_replies(refused, 2).await;
    assert_eq!(
        replies,
        [
            Reply::Failed(msg::ShipmentFailure::Undeliverable),
            Reply::Failed(msg::ShipmentFailure::Undeliverable)
        ]
    );
    assert_eq!(app.rows("shipments").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_cancels_once_and_refuses_a_later_create() {
    let app = spawn_app().await;
    let order_id = Uuid::now_v7();
    app.create(order_id, "GB").await;
    let created = app.await_replies(order_id, 1).await;
    app.cancel(order_id).await;
    app.await_replies(order_id, 2).await;
    let after_first = app.shipment(order_id).await;
    assert_eq!(after_first.status(), api::ShipmentStatus::Cancelled);

    app.cancel(order_id).await;
    app.create(order_id, "GB").await;
    let replies = app.await_replies(order_id, 4).await;
    assert_eq!(
        replies[1..],
        [
            Reply::Cancelled,
            Reply::Cancelled,
            Reply::Failed(msg::ShipmentFailure::OrderCancelled)
        ]
    );
    let after_second = app.shipment(order_id).await;
    assert_eq!(after_second.status(), api::ShipmentStatus::Cancelled);
    assert_eq!(
        after_second.updated_at, after_first.updated_at,
        "the second cancel changed nothing"
    );
    let Reply::Created(created) = &created[0] else {
        panic!("expected ShipmentCreated, got {created:?}");
    };
    assert_eq!(after_second.tracking_number, created.tracking_number);
    assert_eq!(app.rows("shipments").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_before_any_create_leaves_a_tombstone_that_refuses_a_late_create() {
    let app = spawn_app().await;
    let order_id = Uuid::now_v7();
    app.cancel(order_id).await;
    assert_eq!(app.await_replies(order_id, 1).await, [Reply::Cancelled]);
    let tombstone = app.shipment(order_id).await;
    assert_eq!(tombstone.status(), api::ShipmentStatus::Tombstone);
    assert!(tombstone.address.is_none());

    app.create(order_id, "GB").await;
    let replies = app.await_replies(order_id, 2).await;
    assert_eq!(
        replies[1],
        Reply::Failed(msg::ShipmentFailure::OrderCancelled)
    );
    assert_eq!(
        app.shipment(order_id).await.status(),
        api::ShipmentStatus::Tombstone
    );
    assert_eq!(app.rows("shipments").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_without_an_address_is_dead_lettered_and_writes_nothing() {
    let app = spawn_app().await;
    let order_id = Uuid::now_v7();
    app.send(
        order_id,
        &msg::CreateShipment {
            order_id: order_id.to_string(),
            shipping_address: None,
        },
    )
    .await;
    eventually(WAIT, "a dead letter", async || {
        Ok((app.rows("dead_letters").await == 1).then_some(()))
    })
    .await
    .expect("dead-lettered");
    assert_eq!(app.rows("shipments").await, 0);
    assert!(app.replies(order_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn get_shipment_distinguishes_unknown_from_malformed_ids() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let unknown = client
        .get_shipment(api::GetShipmentRequest {
            order_id: Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    let malformed = client
        .get_shipment(api::GetShipmentRequest {
            order_id: "nope".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let details = malformed.get_details_bad_request().expect("field details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["order_id"]);
}
