//! The notification service against the real PostgreSQL and Kafka: the test
//! plays the order service on `order.events.v1` and runs a tiny webhook (a
//! raw HTTP/1.1 server on 127.0.0.1:0) that fails as told and records what
//! it received.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notification_service::config::WebhookUrl;
use proto::messages::v1 as msg;
use proto::notification::v1 as api;
use proto::notification::v1::notification_service_client::NotificationServiceClient;
use service_kit::config::TelemetryArgs;
use test_support::{ServiceHarness, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const RETRY_BASE: Duration = Duration::from_millis(20);

/// One request the webhook received.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    method: String,
    headers: HashMap<String, String>,
    body: serde_json::Value,
}

/// A webhook that answers `first_status` to the first `failures` requests and
/// `then_status` afterwards.
struct Webhook {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Webhook {
    async fn start(failures: usize, first_status: u16, then_status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/hooks/orders",
            listener.local_addr().expect("addr")
        );
        let hits = Arc::new(Mutex::new(Vec::new()));
        let recorded = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Some(hit) = read_request(&mut stream).await else {
                        return;
                    };
                    let seen = {
                        let mut hits = recorded.lock().expect("lock");
                        hits.push(hit);
                        hits.len()
                    };
                    let status = if seen <= failures {
                        first_status
                    } else {
                        then_status
                    };
                    let response = format!(
                        "HTTP/1.1 {status} Status\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { url, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("lock").clone()
    }
}

/// Reads one HTTP/1.1 request with a `content-length` body, within 5 s.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Hit> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 || buffer.len() > 1 << 20 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
        let mut lines = head.split("\r\n");
        let method = lines.next()?.split(' ').next()?.to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize = headers.get("content-length")?.parse().ok()?;
        let mut body = buffer[header_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Hit {
            at: Instant::now(),
            method,
            headers,
            body: serde_json::from_slice(&body[..length]).ok()?,
        })
    })
    .await
    .ok()
    .flatten()
}

struct TestApp {
    client: NotificationServiceClient<Channel>,
    harness: ServiceHarness,
}

async fn spawn_app(webhook_url: Option<&str>, max_attempts: u32) -> TestApp {
    let harness = ServiceHarness::create("notification")
        .await
        .expect("test database and topics");
    let addr = spawn_replica(&harness, webhook_url, max_attempts).await;
    let client = NotificationServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects");
    TestApp { client, harness }
}

/// Starts one more service process (a replica) on the database and topics.
async fn spawn_replica(
    harness: &ServiceHarness,
    webhook_url: Option<&str>,
    max_attempts: u32,
) -> SocketAddr {
    let config = notification_service::Config {
        listen_addr: harness.listen_addr(),
        webhook_url: WebhookUrl::parse(webhook_url.unwrap_or_default()).expect("url"),
        max_attempts,
        retry_base_ms: u64::try_from(RETRY_BASE.as_millis()).expect("ms"),
        retry_max_ms: 200,
        database: harness.database(4),
        kafka: harness.kafka(),
        telemetry: TelemetryArgs::quiet(),
        grpc: service_kit::config::GrpcArgs::default(),
        shutdown: harness.shutdown_args(),
    };
    let app = notification_service::Application::build(config)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    harness.spawn(|shutdown| app.run_until_stopped(shutdown));
    addr
}

impl TestApp {
    /// Publishes an order event as the relay would, with a fresh message id.
    async fn publish<M: prost::Message + prost::Name>(&self, order_id: Uuid, event: &M) {
        self.harness
            .send(proto::topics::ORDER_EVENTS, &order_id.to_string(), event)
            .await
            .expect("sent");
    }

    async fn approve(&self, order_id: Uuid, customer_id: &str) {
        self.publish(
            order_id,
            &msg::OrderApproved {
                order_id: order_id.to_string(),
                customer_id: customer_id.into(),
            },
        )
        .await;
    }

    async fn reject(&self, order_id: Uuid, customer_id: &str, reason: &str) {
        self.publish(
            order_id,
            &msg::OrderRejected {
                order_id: order_id.to_string(),
                customer_id: customer_id.into(),
                reason: reason.into(),
            },
        )
        .await;
    }

    async fn rows(&self, table: &str) -> i64 {
        self.harness.rows(table).await.expect("count")
    }

    /// Waits until `count` messages took effect (their inbox rows committed).
    async fn await_handled(&self, count: i64) {
        eventually(WAIT, &format!("{count} handled messages"), async || {
            Ok((self.rows("inbox").await >= count).then_some(()))
        })
        .await
        .expect("handled");
    }

    async fn list(&self, customer_id: &str) -> Vec<api::Notification> {
        self.client
            .clone()
            .list_notifications(api::ListNotificationsRequest {
                customer_id: customer_id.into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .expect("listed")
            .into_inner()
            .notifications
    }

    /// Waits until the customer's only notification satisfies `done`.
    async fn await_notification(
        &self,
        customer_id: &str,
        what: &str,
        done: impl Fn(&api::Notification) -> bool,
    ) -> api::Notification {
        eventually(WAIT, what, async || {
            let list = self.list(customer_id).await;
            Ok(list.first().filter(|n| done(n)).cloned())
        })
        .await
        .expect(what)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_notification_per_order_outcome_even_when_the_event_arrives_twice() {
    let webhook = Webhook::start(0, 200, 200).await;
    let app = spawn_app(Some(&webhook.url), 5).await;
    let order_id = Uuid::now_v7();
    app.approve(order_id, "customer-1").await;
    app.approve(order_id, "customer-1").await;
    app.await_handled(2).await;
    app.await_notification("customer-1", "delivered", |n| {
        n.delivery_state() == api::DeliveryState::Delivered
    })
    .await;
    assert_eq!(app.rows("notifications").await, 1);
    assert_eq!(app.list("customer-1").await.len(), 1);
    // Give a wrongly recorded second notification time to be delivered too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(webhook.hits().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn approved_and_rejected_outcomes_are_recorded_and_listed_by_customer_newest_first() {
    let app = spawn_app(None, 5).await;
    let (approved, rejected, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    app.approve(approved, "customer-1").await;
    app.await_handled(1).await;
    app.reject(rejected, "customer-1", "reserve_stock: OUT_OF_STOCK")
        .await;
    app.approve(other, "customer-2").await;
    app.await_handled(3).await;

    let list = app.list("customer-1").await;
    let orders: Vec<&str> = list.iter().map(|n| n.order_id.as_str()).collect();
    assert_eq!(orders, [rejected.to_string(), approved.to_string()]);
    assert_eq!(list[0].outcome(), api::Outcome::Rejected);
    assert_eq!(list[0].reason, "reserve_stock: OUT_OF_STOCK");
    assert_eq!(list[1].outcome(), api::Outcome::Approved);
    assert_eq!(list[1].reason, "");
    assert!(list.iter().all(|n| n.customer_id == "customer-1"));

    // Pages of one, following the token.
    let mut client = app.client.clone();
    let first = client
        .list_notifications(api::ListNotificationsRequest {
            customer_id: "customer-1".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(first.notifications.len(), 1);
    assert_eq!(first.notifications[0].order_id, rejected.to_string());
    let second = client
        .list_notifications(api::ListNotificationsRequest {
            customer_id: "customer-1".into(),
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.notifications.len(), 1);
    assert_eq!(second.notifications[0].order_id, approved.to_string());
    assert!(second.next_page_token.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_webhook_url_a_notification_is_recorded_as_not_configured() {
    let app = spawn_app(None, 5).await;
    app.approve(Uuid::now_v7(), "customer-1").await;
    app.await_handled(1).await;
    let list = app.list("customer-1").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].delivery_state(), api::DeliveryState::NotConfigured);
    assert_eq!(list[0].attempts, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_retries_with_backoff_until_the_webhook_accepts() {
    let webhook = Webhook::start(3, 503, 200).await;
    let app = spawn_app(Some(&webhook.url), 8).await;
    let order_id = Uuid::now_v7();
    app.reject(
        order_id,
        "customer-1",
        "process_payment: INSUFFICIENT_FUNDS",
    )
    .await;
    let delivered = app
        .await_notification("customer-1", "delivered", |n| {
            n.delivery_state() == api::DeliveryState::Delivered
        })
        .await;
    assert_eq!(delivered.attempts, 4);
    assert!(delivered.delivered_at.is_some());
    assert!(delivered.last_error.contains("503"), "{delivered:?}");

    let hits = webhook.hits();
    assert_eq!(hits.len(), 4);
    for hit in &hits {
        assert_eq!(hit.method, "POST");
        assert_eq!(
            hit.headers.get("idempotency-key"),
            Some(&delivered.notification_id)
        );
        assert_eq!(hit.body, hits[0].body, "every attempt sends the same body");
    }
    let body = &hits[0].body;
    assert_eq!(body["notification_id"], delivered.notification_id.as_str());
    assert_eq!(body["order_id"], order_id.to_string().as_str());
    assert_eq!(body["customer_id"], "customer-1");
    assert_eq!(body["outcome"], "REJECTED");
    assert_eq!(body["reason"], "process_payment: INSUFFICIENT_FUNDS");
    let created_at = body["created_at"].as_str().expect("created_at");
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
    // Attempt n waits at least half of base * 2^(n-1) after the one before.
    for (n, pair) in hits.windows(2).enumerate() {
        let least = RETRY_BASE * 2u32.pow(u32::try_from(n).expect("small")) / 2;
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= least, "gap {n}: {gap:?} < {least:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_that_keeps_failing_ends_failed_after_the_last_attempt() {
    let webhook = Webhook::start(usize::MAX, 503, 503).await;
    let app = spawn_app(Some(&webhook.url), 3).await;
    app.approve(Uuid::now_v7(), "customer-1").await;
    let failed = app
        .await_notification("customer-1", "failed", |n| {
            n.delivery_state() == api::DeliveryState::Failed
        })
        .await;
    assert_eq!(failed.attempts, 3);
    assert!(failed.last_error.contains("503"), "{failed:?}");
    assert!(failed.delivered_at.is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(webhook.hits().len(), 3, "no attempt after giving up");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_error_from_the_webhook_fails_at_once() {
    let webhook = Webhook::start(usize::MAX, 400, 400).await;
    let app = spawn_app(Some(&webhook.url), 8).await;
    app.approve(Uuid::now_v7(), "customer-1").await;
    let failed = app
        .await_notification("customer-1", "failed", |n| {
            n.delivery_state() == api::DeliveryState::Failed
        })
        .await;
    assert_eq!(failed.attempts, 1);
    assert!(failed.last_error.contains("400"), "{failed:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(webhook.hits().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_webhook_is_retried_and_its_error_kept() {
    // A port that was free a moment ago: connections are refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let app = spawn_app(Some(&url), 2).await;
    app.approve(Uuid::now_v7(), "customer-1").await;
    let failed = app
        .await_notification("customer-1", "failed", |n| {
            n.delivery_state() == api::DeliveryState::Failed
        })
        .await;
    assert_eq!(failed.attempts, 2);
    assert!(failed.last_error.contains("unreachable"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn order_created_and_other_order_events_are_ignored_not_dead_lettered() {
    let app = spawn_app(None, 5).await;
    let order_id = Uuid::now_v7();
    app.publish(
        order_id,
        &msg::OrderCreated {
            order_id: order_id.to_string(),
            customer_id: "customer-1".into(),
            ..Default::default()
        },
    )
    .await;
    app.approve(order_id, "customer-1").await;
    app.await_handled(2).await;
    assert_eq!(app.rows("dead_letters").await, 0);
    assert_eq!(app.rows("notifications").await, 1);
    assert_eq!(
        app.list("customer-1").await[0].outcome(),
        api::Outcome::Approved
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_notifications_refuses_an_invalid_customer_id_with_a_field_violation() {
    let app = spawn_app(None, 5).await;
    let status = app
        .client
        .clone()
        .list_notifications(api::ListNotificationsRequest {
            customer_id: "not valid!".into(),
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_details_bad_request().expect("field details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["customer_id", "page_size"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_replicas_deliver_each_notification_once() {
    let webhook = Webhook::start(0, 200, 200).await;
    let app = spawn_app(Some(&webhook.url), 5).await;
    spawn_replica(&app.harness, Some(&webhook.url), 5).await;
    let orders = 20;
    for _ in 0..orders {
        app.approve(Uuid::now_v7(), "customer-1").await;
    }
    eventually(WAIT, "every notification delivered", async || {
        let list = app.list("customer-1").await;
        Ok((list.len() == orders
            && list
                .iter()
                .all(|n| n.delivery_state() == api::DeliveryState::Delivered))
        .then_some(()))
    })
    .await
    .expect("delivered");
    let keys: std::collections::BTreeSet<String> = webhook
        .hits()
        .iter()
        .filter_map(|hit| hit.headers.get("idempotency-key").cloned())
        .collect();
    assert_eq!(keys.len(), orders);
    assert_eq!(webhook.hits().len(), orders, "no notification sent twice");
}
