//! The orchestrator against real PostgreSQL and Kafka: a fresh database and
//! topic namespace per test; the test plays every participant by sending
//! replies and order events to Kafka, and reads the commands the
//! orchestrator sends from its outbox table (no relay runs here).

use std::net::SocketAddr;
use std::time::Duration;

use orchestrator::Config;
use prost::Name;
use proto::messages::v1 as msg;
use proto::orchestrator::v1 as api;
use proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use service_kit::config::{DatabaseArgs, KafkaArgs, ShutdownArgs, TelemetryArgs};
use test_support::{TestDatabase, count_rows, eventually};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// How long participants have to answer, in the tests that exercise it.
#[derive(Clone, Copy)]
struct Timing {
    step_timeout_ms: u64,
    max_attempts: u32,
    backoff_max_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        // Long enough that no deadline passes in a test that does not wait for one.
        Self {
            step_timeout_ms: 60_000,
            max_attempts: 10,
            backoff_max_ms: 300_000,
        }
    }
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    client: OrchestratorServiceClient<Channel>,
}

struct TestApp {
    db: TestDatabase,
    prefix: String,
    /// Deletes the topics when the test ends.
    _namespace: test_support::TopicNamespace,
    producer: rdkafka::producer::FutureProducer,
    timing: Timing,
    running: Option<Running>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown.cancel();
        }
    }
}

fn config(db: &TestDatabase, prefix: &str, timing: Timing) -> Config {
    Config {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database: DatabaseArgs {
            database_url: db.url.clone(),
            database_pool_size: 8,
        },
        kafka: KafkaArgs::new(test_support::kafka_brokers(), prefix),
        telemetry: TelemetryArgs::quiet(),
        grpc: service_kit::config::GrpcArgs::default(),
        shutdown: ShutdownArgs {
            shutdown_grace_seconds: 1,
        },
        saga_step_timeout_ms: timing.step_timeout_ms,
        saga_max_attempts: timing.max_attempts,
        saga_retry_backoff_max_ms: timing.backoff_max_ms,
        saga_deadline_scan_interval_ms: 50,
        saga_deadline_scan_batch: 100,
    }
}

async fn start(db: &TestDatabase, prefix: &str, timing: Timing) -> Running {
    let app = orchestrator::Application::build(config(db, prefix, timing))
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = OrchestratorServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects");
    Running {
        shutdown,
        task,
        client,
    }
}

async fn spawn_app_with(timing: Timing) -> TestApp {
    let db = TestDatabase::create("orchestrator")
        .await
        .expect("test database");
    let namespace = test_support::TopicNamespace::create()
        .await
        .expect("topics");
    let prefix = namespace.prefix().to_owned();
    let running = start(&db, &prefix, timing).await;
    TestApp {
        db,
        prefix,
        _namespace: namespace,
        producer: test_support::producer().expect("producer"),
        timing,
        running: Some(running),
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(Timing::default()).await
}

/// A command the orchestrator sent, read back from its outbox.
#[derive(Debug, Clone)]
struct Sent {
    topic: String,
    key: String,
    message_type: String,
    payload: Vec<u8>,
}

impl Sent {
    fn is<M: Name>(&self) -> bool {
        self.message_type == M::full_name()
    }

    fn decode<M: prost::Message + Default + Name>(&self) -> M {
        assert!(
            self.is::<M>(),
            "{} is not {}",
            self.message_type,
            M::full_name()
        );
        M::decode(self.payload.as_slice()).expect("decodes")
    }

    fn short_type(&self) -> &str {
        self.message_type
            .rsplit('.')
            .next()
            .unwrap_or(&self.message_type)
    }
}

impl TestApp {
    fn client(&self) -> OrchestratorServiceClient<Channel> {
        self.running.as_ref().expect("running").client.clone()
    }

    async fn send<M: prost::Message + Name>(&self, topic: &str, order_id: Uuid, message: &M) {
        test_support::send(
            &self.producer,
            &format!("{}{topic}", self.prefix),
            &order_id.to_string(),
            &M::full_name(),
            Uuid::now_v7(),
            &message.encode_to_vec(),
        )
        .await
        .expect("sent");
    }

    async fn reply<M: prost::Message + Name>(&self, order_id: Uuid, message: &M) {
        self.send(proto::topics::SAGA_REPLIES, order_id, message)
            .await;
    }

    async fn order_event<M: prost::Message + Name>(&self, order_id: Uuid, message: &M) {
        self.send(proto::topics::ORDER_EVENTS, order_id, message)
            .await;
    }

    async fn create_order(&self, order_id: Uuid) {
        self.order_event(order_id, &order_created(order_id)).await;
    }

    /// Every command sent for `order_id`, in order.
    async fn sent(&self, order_id: Uuid) -> Vec<Sent> {
        let mut conn = self.db.connect().await.expect("connect");
        outbox::fetch_batch(&mut conn, 10_000)
            .await
            .expect("outbox")
            .into_iter()
            .filter(|row| row.message_key == order_id.to_string())
            .map(|row| Sent {
                topic: row.topic,
                key: row.message_key,
                message_type: row.message_type,
                payload: row.payload,
            })
            .collect()
    }

    /// Waits until `count` commands were sent for `order_id`; returns them all.
    async fn until_sent(&self, order_id: Uuid, count: usize) -> Vec<Sent> {
        eventually(
            WAIT,
            &format!("{count} commands for {order_id}"),
            async || {
                let sent = self.sent(order_id).await;
                Ok((sent.len() >= count).then_some(sent))
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!("{e:#}");
        })
    }

    async fn saga(&self, order_id: Uuid) -> api::Saga {
        self.client()
            .get_saga(api::GetSagaRequest {
                order_id: order_id.to_string(),
            })
            .await
            .expect("saga")
            .into_inner()
    }

    async fn until_state(&self, order_id: Uuid, state: api::SagaState) -> api::Saga {
        eventually(WAIT, &format!("saga {order_id} in {state:?}"), async || {
            let found = self
                .client()
                .get_saga(api::GetSagaRequest {
                    order_id: order_id.to_string(),
                })
                .await;
            Ok(found
                .ok()
                .map(|r| r.into_inner())
                .filter(|s| s.state() == state))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Stops the orchestrator and waits for it to end.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown.cancel();
            let ended = tokio::time::timeout(Duration::from_secs(10), running.task).await;
            assert!(ended.is_ok(), "orchestrator did not stop");
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        self.running = Some(start(&self.db, &self.prefix, self.timing).await);
    }

    async fn rows(&self, table: &str) -> i64 {
        let mut conn = self.db.connect().await.expect("connect");
        count_rows(&mut conn, table).await.expect("count")
    }
}

fn order_created(order_id: Uuid) -> msg::OrderCreated {
    msg::OrderCreated {
        order_id: order_id.to_string(),
        customer_id: "customer-1".into(),
        items: vec![
            msg::OrderLine {
                product_id: "sku-1".into(),
                quantity: 2,
            },
            msg::OrderLine {
                product_id: "sku-2".into(),
                quantity: 1,
            },
        ],
        shipping_address: Some(msg::ShippingAddress {
            recipient: "Ada Lovelace".into(),
            line1: "12 Analytical Way".into(),
            line2: String::new(),
            city: "London".into(),
            postal_code: "N1 9GU".into(),
            country_code: "GB".into(),
        }),
        created_at: None,
    }
}

fn total() -> msg::Money {
    msg::Money {
        minor_units: 4_997,
        currency: "EUR".into(),
    }
}

fn reserved(order_id: Uuid) -> msg::StockReserved {
    msg::StockReserved {
        order_id: order_id.to_string(),
        lines: Vec::new(),
        total: Some(total()),
    }
}

fn paid(order_id: Uuid) -> msg::PaymentProcessed {
    msg::PaymentProcessed {
        order_id: order_id.to_string(),
        payment_id: "pay-1".into(),
        amount: Some(total()),
    }
}

fn shipped(order_id: Uuid) -> msg::ShipmentCreated {
    msg::ShipmentCreated {
        order_id: order_id.to_string(),
        shipment_id: "ship-1".into(),
        tracking_number: "TRK1".into(),
    }
}

fn approved(order_id: Uuid) -> msg::OrderApproved {
    msg::OrderApproved {
        order_id: order_id.to_string(),
        customer_id: "customer-1".into(),
    }
}

fn rejected(order_id: Uuid) -> msg::OrderRejected {
    msg::OrderRejected {
        order_id: order_id.to_string(),
        customer_id: "customer-1".into(),
        reason: String::new(),
    }
}

fn types(sent: &[Sent]) -> Vec<&str> {
    sent.iter().map(Sent::short_type).collect()
}

/// The commands' types with repeats (a compensation re-sent when its
/// acknowledgement was slow) folded: the order in which they were first sent.
fn in_order(sent: &[Sent]) -> Vec<&str> {
    let mut types = types(sent);
    types.dedup();
    types
}

fn outcomes(saga: &api::Saga) -> Vec<(String, String)> {
    saga.steps
        .iter()
        .map(|s| (s.name.clone(), s.outcome.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn order_created_starts_a_saga_that_reserves_the_items_once() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    let sent = app.until_sent(id, 1).await;
    let reserve: msg::ReserveStock = sent[0].decode();
    assert_eq!(
        sent[0].topic,
        format!("{}inventory.commands.v1", app.prefix)
    );
    assert_eq!(sent[0].key, id.to_string());
    assert_eq!(reserve.order_id, id.to_string());
    let items: Vec<(&str, i32)> = reserve
        .items
        .iter()
        .map(|i| (i.product_id.as_str(), i.quantity))
        .collect();
    assert_eq!(items, [("sku-1", 2), ("sku-2", 1)]);

    // A duplicate OrderCreated (a new message id) starts nothing.
    app.create_order(id).await;
    app.reply(id, &reserved(id)).await;
    let sent = app.until_sent(id, 2).await;
    assert_eq!(types(&sent), ["ReserveStock", "ProcessPayment"]);
    let saga = app.saga(id).await;
    assert_eq!(saga.state(), api::SagaState::Running);
    assert_eq!(saga.current_step, "charge_payment");
    assert_eq!(saga.customer_id, "customer-1");
    assert_eq!(app.rows("sagas").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_happy_path_charges_the_reserved_total_ships_approves_and_ends_approved() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    app.until_sent(id, 1).await;
    app.reply(id, &reserved(id)).await;
    let sent = app.until_sent(id, 2).await;
    let pay: msg::ProcessPayment = sent[1].decode();
    assert_eq!(sent[1].topic, format!("{}payment.commands.v1", app.prefix));
    assert_eq!(pay.amount, Some(total()));
    assert_eq!(pay.customer_id, "customer-1");

    app.reply(id, &paid(id)).await;
    let sent = app.until_sent(id, 3).await;
    let ship: msg::CreateShipment = sent[2].decode();
    assert_eq!(sent[2].topic, format!("{}shipment.commands.v1", app.prefix));
    assert_eq!(
        ship.shipping_address.map(|a| a.city),
        Some("London".to_owned())
    );

    app.reply(id, &shipped(id)).await;
    let sent = app.until_sent(id, 4).await;
    let approve: msg::ApproveOrder = sent[3].decode();
    assert_eq!(approve.order_id, id.to_string());
    assert_eq!(sent[3].topic, format!("{}order.commands.v1", app.prefix));

    app.order_event(id, &approved(id)).await;
    let saga = app.until_state(id, api::SagaState::Approved).await;
    assert_eq!(saga.failure_reason, "");
    assert_eq!(saga.current_step, "");
    assert_eq!(saga.deadline, None);
    assert_eq!(
        outcomes(&saga),
        [
            ("reserve_stock", "started"),
            ("reserve_stock", "succeeded"),
            ("charge_payment", "started"),
            ("charge_payment", "succeeded"),
            ("create_shipment", "started"),
            ("create_shipment", "succeeded"),
            ("approve_order", "started"),
            ("approve_order", "approved"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(saga.steps.iter().all(|s| s.at.is_some()));
    assert_eq!(app.sent(id).await.len(), 4, "nothing more sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_payment_releases_the_stock_then_rejects_the_order_with_the_reason() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    app.until_sent(id, 1).await;
    app.reply(id, &reserved(id)).await;
    app.until_sent(id, 2).await;
    app.reply(
        id,
        &msg::PaymentFailed {
            order_id: id.to_string(),
            reason: msg::PaymentFailure::InsufficientFunds.into(),
        },
    )
    .await;
    let sent = app.until_sent(id, 3).await;
    assert_eq!(types(&sent)[2], "ReleaseStock");
    assert_eq!(
        sent[2].topic,
        format!("{}inventory.commands.v1", app.prefix)
    );
    let saga = app.until_state(id, api::SagaState::Compensating).await;
    assert_eq!(saga.current_step, "compensate:reserve_stock");

    app.reply(
        id,
        &msg::StockReleased {
            order_id: id.to_string(),
        },
    )
    .await;
    let sent = app.until_sent(id, 4).await;
    let reject: msg::RejectOrder = sent[3].decode();
    assert_eq!(reject.reason, "charge_payment: INSUFFICIENT_FUNDS");

    app.order_event(id, &rejected(id)).await;
    let saga = app.until_state(id, api::SagaState::Rejected).await;
    assert_eq!(saga.failure_reason, "charge_payment: INSUFFICIENT_FUNDS");
    let failed = saga
        .steps
        .iter()
        .find(|s| s.outcome == "failed")
        .expect("failure recorded");
    assert_eq!(failed.name, "charge_payment");
    assert_eq!(failed.reason, "INSUFFICIENT_FUNDS");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_out_of_stock_order_is_rejected_naming_the_product_without_compensating() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    app.until_sent(id, 1).await;
    app.reply(
        id,
        &msg::StockReservationFailed {
            order_id: id.to_string(),
            reason: msg::StockFailure::OutOfStock.into(),
            product_id: "sku-1".into(),
        },
    )
    .await;
    let sent = app.until_sent(id, 2).await;
    let reject: msg::RejectOrder = sent[1].decode();
    assert_eq!(reject.reason, "reserve_stock: OUT_OF_STOCK (product sku-1)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shipment_that_misses_its_deadline_is_compensated_in_reverse_and_the_order_rejected() {
    let app = spawn_app_with(Timing {
        step_timeout_ms: 500,
        ..Timing::default()
    })
    .await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    app.until_sent(id, 1).await;
    app.reply(id, &reserved(id)).await;
    app.until_sent(id, 2).await;
    app.reply(id, &paid(id)).await;
    app.until_sent(id, 3).await;
    // No shipment reply: the deadline passes; each compensation is
    // acknowledged once it was sent.
    let until_type = async |name: &str| {
        eventually(WAIT, name, async || {
            let sent = app.sent(id).await;
            Ok(sent.iter().find(|s| s.short_type() == name).cloned())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    };
    until_type("CancelShipment").await;
    app.reply(
        id,
        &msg::ShipmentCancelled {
            order_id: id.to_string(),
        },
    )
    .await;
    until_type("RefundPayment").await;
    app.reply(
        id,
        &msg::PaymentRefunded {
            order_id: id.to_string(),
        },
    )
    .await;
    until_type("ReleaseStock").await;
    app.reply(
        id,
        &msg::StockReleased {
            order_id: id.to_string(),
        },
    )
    .await;
    let reject: msg::RejectOrder = until_type("RejectOrder").await.decode();
    assert_eq!(reject.reason, "create_shipment: TIMEOUT");
    app.order_event(id, &rejected(id)).await;
    let saga = app.until_state(id, api::SagaState::Rejected).await;
    assert_eq!(saga.failure_reason, "create_shipment: TIMEOUT");
    assert!(
        outcomes(&saga).contains(&("create_shipment".to_owned(), "timed_out".to_owned())),
        "{:?}",
        outcomes(&saga)
    );
    assert_eq!(
        in_order(&app.sent(id).await),
        [
            "ReserveStock",
            "ProcessPayment",
            "CreateShipment",
            "CancelShipment",
            "RefundPayment",
            "ReleaseStock",
            "RejectOrder"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_or_late_reply_changes_nothing() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    app.until_sent(id, 1).await;
    app.reply(id, &reserved(id)).await;
    app.until_sent(id, 2).await;
    // The same reply again (new message id), a reply for a step not
    // awaited, and a compensation nobody asked for.
    app.reply(id, &reserved(id)).await;
    app.reply(id, &shipped(id)).await;
    app.reply(
        id,
        &msg::StockReleased {
            order_id: id.to_string(),
        },
    )
    .await;
    // A marker that the replies above were consumed (same partition, in order):
    // a reply for an unknown order is logged, not dead-lettered.
    let unknown = Uuid::now_v7();
    app.reply(unknown, &reserved(unknown)).await;
    app.reply(id, &paid(id)).await;
    let sent = app.until_sent(id, 3).await;
    assert_eq!(
        types(&sent),
        ["ReserveStock", "ProcessPayment", "CreateShipment"]
    );
    let saga = app.saga(id).await;
    assert_eq!(saga.state(), api::SagaState::Running);
    assert_eq!(saga.current_step, "create_shipment");
    assert_eq!(app.rows("dead_letters").await, 0);
    assert_eq!(app.sent(unknown).await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_reply_is_dead_lettered() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    test_support::send(
        &app.producer,
        &format!("{}{}", app.prefix, proto::topics::SAGA_REPLIES),
        &id.to_string(),
        &msg::StockReserved::full_name(),
        Uuid::now_v7(),
        &[0xff, 0xff, 0xff],
    )
    .await
    .expect("sent");
    eventually(WAIT, "a dead letter", async || {
        Ok((app.rows("dead_letters").await == 1).then_some(()))
    })
    .await
    .expect("dead-lettered");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unacknowledged_compensation_is_resent_with_growing_deadlines_until_it_needs_attention()
{
    let app = spawn_app_with(Timing {
        step_timeout_ms: 200,
        max_attempts: 4,
        backoff_max_ms: 600,
    })
    .await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    app.until_sent(id, 1).await;
    app.reply(id, &reserved(id)).await;
    app.until_sent(id, 2).await;
    app.reply(
        id,
        &msg::PaymentFailed {
            order_id: id.to_string(),
            reason: msg::PaymentFailure::LimitExceeded.into(),
        },
    )
    .await;
    let saga = app.until_state(id, api::SagaState::NeedsAttention).await;
    let sent = app.sent(id).await;
    assert_eq!(
        types(&sent),
        [
            "ReserveStock",
            "ProcessPayment",
            "ReleaseStock",
            "ReleaseStock",
            "ReleaseStock",
            "ReleaseStock"
        ]
    );
    assert_eq!(saga.current_step, "compensate:reserve_stock");
    assert_eq!(saga.attempts, 4);
    assert_eq!(saga.deadline, None);
    assert_eq!(saga.failure_reason, "charge_payment: LIMIT_EXCEEDED");
    // The waits between sends grow: 200 ms, 400 ms, then capped at 600 ms.
    let at = |s: &api::SagaStep| {
        let t = s.at.as_ref().expect("at");
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    };
    let sends: Vec<i64> = saga
        .steps
        .iter()
        .filter(|s| {
            s.name == "compensate:reserve_stock"
                && (s.outcome == "started" || s.outcome == "retried")
        })
        .map(at)
        .collect();
    let end = saga
        .steps
        .iter()
        .find(|s| s.outcome == "needs_attention")
        .map(at)
        .expect("needs attention recorded");
    assert_eq!(sends.len(), 4);
    let waits: Vec<i64> = sends
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([end - sends[3]])
        .collect();
    for (wait, expected) in waits.iter().zip([200, 400, 600, 600]) {
        assert!(
            *wait >= expected && *wait < expected + 1_000,
            "waits {waits:?}"
        );
    }
    assert!(
        waits[1] > waits[0] && waits[2] > waits[1],
        "waits {waits:?}"
    );

    // Nothing more is sent once it needs attention.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.sent(id).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestrator_stopped_mid_saga_resumes_on_restart_and_terminates() {
    // Long enough for a restarted consumer to catch up before a deadline,
    // short enough to wait for the shipment's.
    let mut app = spawn_app_with(Timing {
        step_timeout_ms: 4_000,
        ..Timing::default()
    })
    .await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    app.until_sent(id, 1).await;
    app.reply(id, &reserved(id)).await;
    app.until_sent(id, 2).await;
    app.stop().await;

    // The payment answers while no orchestrator runs; a new one on the same
    // database (the state lives only there) takes it from Kafka.
    app.reply(id, &paid(id)).await;
    app.restart().await;
    app.until_sent(id, 3).await;
    // The shipment never answers: the scanner finds it overdue.
    let sent = app.until_sent(id, 4).await;
    assert_eq!(types(&sent)[3], "CancelShipment");

    // Stopped again mid-compensation, with the acknowledgement in flight.
    app.stop().await;
    app.reply(
        id,
        &msg::ShipmentCancelled {
            order_id: id.to_string(),
        },
    )
    .await;
    app.restart().await;
    app.until_sent(id, 5).await;
    app.reply(
        id,
        &msg::PaymentRefunded {
            order_id: id.to_string(),
        },
    )
    .await;
    app.until_sent(id, 6).await;
    app.reply(
        id,
        &msg::StockReleased {
            order_id: id.to_string(),
        },
    )
    .await;
    let sent = app.until_sent(id, 7).await;
    let reject: msg::RejectOrder = sent[6].decode();
    assert_eq!(reject.reason, "create_shipment: TIMEOUT");
    app.order_event(id, &rejected(id)).await;
    app.until_state(id, api::SagaState::Rejected).await;
    assert_eq!(
        in_order(&app.sent(id).await),
        [
            "ReserveStock",
            "ProcessPayment",
            "CreateShipment",
            "CancelShipment",
            "RefundPayment",
            "ReleaseStock",
            "RejectOrder"
        ]
    );
}

async fn start_saga_awaiting_payment(app: &TestApp) -> Uuid {
    let id = Uuid::now_v7();
    app.create_order(id).await;
    app.until_sent(id, 1).await;
    app.reply(id, &reserved(id)).await;
    app.until_sent(id, 2).await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_step_resends_the_current_command_and_resumes_a_saga_needing_attention() {
    // Waits of 300 ms then 600 ms: the acknowledgement after the retry has
    // 900 ms to arrive before the saga gives up again.
    let app = spawn_app_with(Timing {
        step_timeout_ms: 300,
        max_attempts: 2,
        backoff_max_ms: 60_000,
    })
    .await;
    let id = Uuid::now_v7();
    app.create_order(id).await;
    // The reservation times out, its release is never acknowledged.
    app.until_state(id, api::SagaState::NeedsAttention).await;
    assert_eq!(
        types(&app.sent(id).await),
        ["ReserveStock", "ReleaseStock", "ReleaseStock"]
    );
    let saga = app
        .client()
        .retry_step(api::RetryStepRequest {
            order_id: id.to_string(),
        })
        .await
        .expect("retried")
        .into_inner();
    assert_eq!(saga.state(), api::SagaState::Compensating);
    assert_eq!(saga.current_step, "compensate:reserve_stock");
    assert_eq!(saga.attempts, 1);
    assert!(saga.deadline.is_some());
    assert_eq!(app.sent(id).await.len(), 4);
    app.reply(
        id,
        &msg::StockReleased {
            order_id: id.to_string(),
        },
    )
    .await;
    eventually(WAIT, "the order rejected", async || {
        let sent = app.sent(id).await;
        Ok(sent
            .iter()
            .any(|s| s.is::<msg::RejectOrder>())
            .then_some(()))
    })
    .await
    .expect("rejected");
    app.order_event(id, &rejected(id)).await;
    app.until_state(id, api::SagaState::Rejected).await;

    let refused = app
        .client()
        .retry_step(api::RetryStepRequest {
            order_id: id.to_string(),
        })
        .await
        .expect_err("final");
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread")]
async fn force_compensation_aborts_the_running_step_and_compensates_it_too() {
    let app = spawn_app().await;
    let id = start_saga_awaiting_payment(&app).await;
    let saga = app
        .client()
        .force_compensation(api::ForceCompensationRequest {
            order_id: id.to_string(),
            reason: "customer cancelled".into(),
        })
        .await
        .expect("forced")
        .into_inner();
    assert_eq!(saga.state(), api::SagaState::Compensating);
    assert_eq!(saga.failure_reason, "operator: customer cancelled");
    assert_eq!(saga.current_step, "compensate:charge_payment");
    let sent = app.until_sent(id, 3).await;
    assert_eq!(types(&sent)[2], "RefundPayment");

    // Once compensating, a second abort is refused.
    let refused = app
        .client()
        .force_compensation(api::ForceCompensationRequest {
            order_id: id.to_string(),
            reason: "again".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_calls_distinguish_unknown_and_malformed_requests() {
    let app = spawn_app().await;
    let mut client = app.client();
    let unknown = Uuid::now_v7().to_string();
    let missing = client
        .get_saga(api::GetSagaRequest {
            order_id: unknown.clone(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    let missing = client
        .retry_step(api::RetryStepRequest {
            order_id: unknown.clone(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);

    let malformed = client
        .force_compensation(api::ForceCompensationRequest {
            order_id: "nope".into(),
            reason: String::new(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let fields: Vec<String> = malformed
        .get_details_bad_request()
        .expect("details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["order_id", "reason"]);

    let bad_list = client
        .list_sagas(api::ListSagasRequest {
            state: 42,
            older_than_seconds: -1,
            newer_than_seconds: 0,
            page_size: 1_000,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("invalid");
    let fields: Vec<String> = bad_list
        .get_details_bad_request()
        .expect("details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        ["state", "older_than_seconds", "page_size", "page_token"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_sagas_filters_by_state_and_age_and_pages_newest_first() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = Uuid::now_v7();
        app.create_order(id).await;
        app.until_sent(id, 1).await;
        ids.push(id);
    }
    // One of them fails at once and is being rejected (COMPENSATING).
    app.reply(
        ids[0],
        &msg::StockReservationFailed {
            order_id: ids[0].to_string(),
            reason: msg::StockFailure::UnknownProduct.into(),
            product_id: "sku-9".into(),
        },
    )
    .await;
    app.until_state(ids[0], api::SagaState::Compensating).await;

    let mut client = app.client();
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = client
            .list_sagas(api::ListSagasRequest {
                state: api::SagaState::Running.into(),
                older_than_seconds: 0,
                newer_than_seconds: 3_600,
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.sagas.len() <= 2);
        seen.extend(page.sagas.into_iter().map(|s| s.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut running: Vec<String> = ids[1..].iter().map(Uuid::to_string).collect();
    running.reverse();
    assert_eq!(seen, running);

    let compensating = client
        .list_sagas(api::ListSagasRequest {
            state: api::SagaState::Compensating.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(compensating.sagas.len(), 1);
    assert_eq!(compensating.sagas[0].order_id, ids[0].to_string());
    assert_eq!(
        compensating.sagas[0].failure_reason,
        "reserve_stock: UNKNOWN_PRODUCT (product sku-9)"
    );
    assert!(!compensating.sagas[0].steps.is_empty());

    let old = client
        .list_sagas(api::ListSagasRequest {
            older_than_seconds: 3_600,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(old.sagas.is_empty(), "none started an hour ago");
}
