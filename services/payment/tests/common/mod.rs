//! The payment service against the real PostgreSQL and Kafka: a fresh
//! database and topic namespace per test, the service bound to port 0,
//! commands produced as the orchestrator would, replies read from the
//! service's outbox (no relay runs here).

#![allow(dead_code)]

use std::time::Duration;

use proto::messages::v1 as msg;
use proto::payment::v1 as api;
use proto::payment::v1::payment_service_client::PaymentServiceClient;
use service_kit::config::TelemetryArgs;
use test_support::{OutboxMessage, ServiceHarness, eventually};
use tonic::transport::Channel;
use uuid::Uuid;

pub const LIMIT: i64 = 50_000;

pub struct TestApp {
    pub client: PaymentServiceClient<Channel>,
    pub harness: ServiceHarness,
}

/// A reply of the payment service to the saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Processed(msg::PaymentProcessed),
    Failed(msg::PaymentFailed),
    Refunded(msg::PaymentRefunded),
}

impl Reply {
    pub fn order_id(&self) -> &str {
        match self {
            Self::Processed(m) => &m.order_id,
            Self::Failed(m) => &m.order_id,
            Self::Refunded(m) => &m.order_id,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    let harness = ServiceHarness::create("payment")
        .await
        .expect("test database and topics");
    let config = payment_service::Config {
        listen_addr: harness.listen_addr(),
        payment_limit_minor: LIMIT,
        database: harness.database(8),
        kafka: harness.kafka(),
        telemetry: TelemetryArgs::quiet(),
        grpc: service_kit::config::GrpcArgs::default(),
        shutdown: harness.shutdown_args(),
    };
    let app = payment_service::Application::build(config)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    harness.spawn(|shutdown| app.run_until_stopped(shutdown));
    let client = PaymentServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects");
    TestApp { client, harness }
}

pub fn money(minor_units: i64, currency: &str) -> api::Money {
    api::Money {
        minor_units,
        currency: currency.into(),
    }
}

pub fn eur(minor_units: i64) -> msg::Money {
    msg::Money {
        minor_units,
        currency: "EUR".into(),
    }
}

impl TestApp {
    pub async fn open_account(&self, customer_id: &str, balance: i64) -> api::Account {
        self.client
            .clone()
            .create_account(api::CreateAccountRequest {
                customer_id: customer_id.into(),
                initial_balance: Some(money(balance, "EUR")),
            })
            .await
            .expect("account opened")
            .into_inner()
    }

    pub async fn balance(&self, customer_id: &str) -> i64 {
        self.client
            .clone()
            .get_account(api::GetAccountRequest {
                customer_id: customer_id.into(),
            })
            .await
            .expect("account")
            .into_inner()
            .balance
            .expect("balance")
            .minor_units
    }

    async fn send<M: prost::Message + prost::Name>(&self, order_id: &str, command: &M) {
        self.harness
            .send(proto::topics::PAYMENT_COMMANDS, order_id, command)
            .await
            .expect("command sent");
    }

    /// Sends `ProcessPayment` with a new message id, as the orchestrator does
    /// for the first attempt and every retry.
    pub async fn charge(&self, order_id: &str, customer_id: &str, amount: Option<msg::Money>) {
        self.send(
            order_id,
            &msg::ProcessPayment {
                order_id: order_id.into(),
                customer_id: customer_id.into(),
                amount,
            },
        )
        .await;
    }

    pub async fn refund(&self, order_id: &str) {
        self.send(
            order_id,
            &msg::RefundPayment {
                order_id: order_id.into(),
            },
        )
        .await;
    }

    /// Every reply in the outbox so far, in the order written.
    pub async fn replies(&self) -> Vec<Reply> {
        self.harness
            .outbox(proto::topics::SAGA_REPLIES)
            .await
            .expect("outbox")
            .iter()
            .map(|written| {
                let reply = decode_reply(written);
                assert_eq!(written.key, reply.order_id(), "keyed by the order id");
                reply
            })
            .collect()
    }

    /// Waits until at least `n` replies are in the outbox and returns them.
    pub async fn wait_for_replies(&self, n: usize) -> Vec<Reply> {
        eventually(
            Duration::from_secs(60),
            &format!("{n} replies"),
            async || {
                let replies = self.replies().await;
                Ok((replies.len() >= n).then_some(replies))
            },
        )
        .await
        .expect("replies")
    }

    /// Waits for the next reply after the `seen` already read.
    pub async fn next_reply(&self, seen: usize) -> Reply {
        self.wait_for_replies(seen + 1).await[seen].clone()
    }

    pub async fn rows(&self, table: &str) -> i64 {
        self.harness.rows(table).await.expect("count")
    }

    pub async fn payment(&self, order_id: &str) -> api::Payment {
        self.client
            .clone()
            .get_payment(api::GetPaymentRequest {
                order_id: order_id.into(),
            })
            .await
            .expect("payment")
            .into_inner()
    }
}

pub fn order_id() -> String {
    Uuid::now_v7().to_string()
}

pub fn failed(order_id: &str, reason: msg::PaymentFailure) -> Reply {
    Reply::Failed(msg::PaymentFailed {
        order_id: order_id.into(),
        reason: reason.into(),
    })
}

fn decode_reply(written: &OutboxMessage) -> Reply {
    let decoded = if written.is::<msg::PaymentProcessed>() {
        written.decode().map(Reply::Processed)
    } else if written.is::<msg::PaymentFailed>() {
        written.decode().map(Reply::Failed)
    } else if written.is::<msg::PaymentRefunded>() {
        written.decode().map(Reply::Refunded)
    } else {
        panic!("unexpected message type {}", written.message_type)
    };
    decoded.expect("decodes")
}
