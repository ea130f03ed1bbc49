//! The product locks of stock commands. Batches in concurrent transactions,
//! as two partition lanes of the consumer run them, take theirs up front in
//! id order, so batches that touch the same products in opposite orders queue
//! behind each other instead of deadlocking; and a refusal takes none, so
//! orders for a sold-out product never queue on its row.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Reply, release, reserve, spawn_app};
use consumer::Incoming;
use consumer::testing::{
    RowLock, finish_lanes, handle_batch_within, two_lanes_meeting_after_first,
};
use inventory_service::app::Reservations;
use inventory_service::handler::{InventoryHandler, batch_locks};
use proto::messages::v1 as msg;
use uuid::Uuid;

fn incoming<M: prost::Message + prost::Name>(order: Uuid, command: &M) -> Incoming {
    Incoming::of("inventory.commands.v1", &order.to_string(), command)
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_reserving_shared_products_in_opposite_orders_never_deadlock() {
    let mut app = spawn_app().await;
    app.create_product("apple", 100, "EUR", 10).await;
    app.create_product("banana", 100, "EUR", 10).await;
    let handler = Arc::new(InventoryHandler::new(Reservations::new(
        app.harness.topic("saga.replies.v1"),
    )));
    let [o1, o2, o3, o4] = [(); 4].map(|()| Uuid::now_v7());
    // Lane one takes apple then banana; lane two banana then apple. Locked
    // message by message, each would hold one product and wait for the other.
    let url = app.harness.database(1).database_url;
    let batches = [
        vec![
            incoming(o1, &reserve(o1, &[("apple", 1)])),
            incoming(o2, &reserve(o2, &[("banana", 1)])),
        ],
        vec![
            incoming(o3, &reserve(o3, &[("banana", 2)])),
            incoming(o4, &reserve(o4, &[("apple", 2)])),
        ],
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
    assert_eq!(app.stock("apple").await, 7);
    assert_eq!(app.stock("banana").await, 7);
}

#[test]
fn a_batch_names_its_reserved_products_sorted_once_and_its_released_orders() {
    let reserving = Uuid::now_v7();
    let releasing = Uuid::now_v7();
    let mut unreadable = incoming(reserving, &reserve(reserving, &[("zebra", 1)]));
    unreadable.payload = vec![0xff, 0xff, 0xff];
    let batch = vec![
        incoming(
            reserving,
            &reserve(reserving, &[("cherry", 1), ("apple", 1)]),
        ),
        incoming(releasing, &release(releasing)),
        incoming(reserving, &reserve(reserving, &[("apple", 3)])),
        unreadable,
    ];
    let (products, releases) = batch_locks(&batch);
    assert_eq!(products, vec!["apple".to_owned(), "cherry".to_owned()]);
    assert_eq!(releases, vec![releasing]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_for_a_sold_out_product_is_refused_while_another_transaction_holds_its_row() {
    let mut app = spawn_app().await;
    app.create_product("sold-out", 100, "EUR", 0).await;
    let url = app.harness.database(1).database_url;
    let lock = RowLock::take(
        &url,
        "SELECT id FROM products WHERE id = 'sold-out' FOR UPDATE",
    )
    .await
    .expect("row locked");

    let handler = InventoryHandler::new(Reservations::new(app.harness.topic("saga.replies.v1")));
    let order = Uuid::now_v7();
    let batch = [incoming(order, &reserve(order, &[("sold-out", 1)]))];
    let handled = handle_batch_within(&url, &handler, &batch, Duration::from_secs(5)).await;
    lock.release().await;

    let handled = handled.expect("the refusal did not wait for the row lock");
    assert!(handled.is_ok(), "{handled:?}");
    match &app.wait_for_order(order, 1).await[0] {
        Reply::Failed(failed) => {
            assert_eq!(failed.reason(), msg::StockFailure::OutOfStock);
            assert_eq!(failed.product_id, "sold-out");
        }
        other => panic!("expected out of stock, got {other:?}"),
    }
}
