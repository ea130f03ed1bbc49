//! The account locks of payment commands. Batches in concurrent
//! transactions, as two partition lanes of the consumer run them, take theirs
//! up front in customer id order, so batches that touch the same accounts in
//! opposite orders queue behind each other instead of deadlocking; and a
//! decline takes none, so charges an account cannot pay never queue on it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{LIMIT, Reply, eur, spawn_app};
use consumer::Incoming;
use consumer::testing::{
    RowLock, finish_lanes, handle_batch_within, two_lanes_meeting_after_first,
};
use payment_service::app::Payments;
use payment_service::handler::{PaymentHandler, batch_locks};
use proto::messages::v1 as msg;
use uuid::Uuid;

fn charge(order: Uuid, customer: &str, amount: i64) -> Incoming {
    Incoming::of(
        "payment.commands.v1",
        &order.to_string(),
        &msg::ProcessPayment {
            order_id: order.to_string(),
            customer_id: customer.into(),
            amount: Some(eur(amount)),
        },
    )
}

fn refund(order: Uuid) -> Incoming {
    Incoming::of(
        "payment.commands.v1",
        &order.to_string(),
        &msg::RefundPayment {
            order_id: order.to_string(),
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_charging_shared_accounts_in_opposite_orders_never_deadlock() {
    let app = spawn_app().await;
    app.open_account("alice", 10_000).await;
    app.open_account("bob", 10_000).await;
    let pool = service_kit::db::pool(&app.harness.database(2).database_url, 2).expect("pool");
    let handler = Arc::new(PaymentHandler::new(Payments::new(
        pool,
        app.harness.kafka(),
        LIMIT,
    )));
    let [o1, o2, o3, o4] = [(); 4].map(|()| Uuid::now_v7());
    // Lane one charges alice then bob; lane two bob then alice. Locked
    // message by message, each would hold one account and wait for the other.
    let url = app.harness.database(1).database_url;
    let batches = [
        vec![charge(o1, "alice", 100), charge(o2, "bob", 100)],
        vec![charge(o3, "bob", 200), charge(o4, "alice", 200)],
    ];
    let results = two_lanes_meeting_after_first(
        &url,
        handler.clone(),
        batches.clone(),
        Duration::from_millis(500),
    )
    .await;
    // A batch whose rows another lane holds fails at once (NOWAIT) and the
    // runtime replays it one message per transaction; neither may deadlock.
    finish_lanes(&url, &*handler, &batches, &results).await;
    assert_eq!(app.balance("alice").await, 9_700);
    assert_eq!(app.balance("bob").await, 9_700);
}

#[test]
fn a_batch_names_its_charged_customers_sorted_once_and_its_refunded_orders() {
    let [charged, refunded] = [(); 2].map(|()| Uuid::now_v7());
    let mut unreadable = charge(charged, "zed", 1);
    unreadable.payload = vec![0xff, 0xff, 0xff];
    let batch = vec![
        charge(charged, "carol", 1),
        refund(refunded),
        charge(charged, "alice", 1),
        charge(charged, "carol", 2),
        unreadable,
    ];
    let (customers, refunds) = batch_locks(&batch);
    assert_eq!(customers, vec!["alice".to_owned(), "carol".to_owned()]);
    assert_eq!(refunds, vec![refunded]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_charge_an_empty_account_cannot_pay_is_declined_while_another_transaction_holds_its_row()
{
    let app = spawn_app().await;
    app.open_account("broke", 0).await;
    let url = app.harness.database(1).database_url;
    let lock = RowLock::take(
        &url,
        "SELECT customer_id FROM accounts WHERE customer_id = 'broke' FOR UPDATE",
    )
    .await
    .expect("row locked");

    let pool = service_kit::db::pool(&url, 1).expect("pool");
    let handler = PaymentHandler::new(Payments::new(pool, app.harness.kafka(), LIMIT));
    let order = Uuid::now_v7();
    let batch = [charge(order, "broke", 100)];
    let handled = handle_batch_within(&url, &handler, &batch, Duration::from_secs(5)).await;
    lock.release().await;

    let handled = handled.expect("the decline did not wait for the row lock");
    assert!(handled.is_ok(), "{handled:?}");
    match &app.wait_for_replies(1).await[0] {
        Reply::Failed(failed) => {
            assert_eq!(failed.reason(), msg::PaymentFailure::InsufficientFunds);
        }
        other => panic!("expected a decline, got {other:?}"),
    }
    assert_eq!(app.balance("broke").await, 0);
}
