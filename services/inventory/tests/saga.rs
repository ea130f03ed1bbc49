//! The saga's stock commands end to end inside the service: ReserveStock and
//! ReleaseStock produced to Kafka, replies read from the outbox.

mod common;

use std::collections::BTreeMap;

use common::{Reply, release, reserve, spawn_app};
use proto::inventory::v1 as api;
use proto::messages::v1 as msg;
use uuid::Uuid;

fn released(order: Uuid) -> Reply {
    Reply::Released(msg::StockReleased {
        order_id: order.to_string(),
    })
}

fn failure(reply: &Reply) -> (msg::StockFailure, String) {
    match reply {
        Reply::Failed(f) => (f.reason(), f.product_id.clone()),
        other => panic!("expected a reservation failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_takes_every_line_or_none() {
    let mut app = spawn_app().await;
    app.create_product("apple", 100, "EUR", 5).await;
    app.create_product("banana", 100, "EUR", 1).await;
    app.create_product("cherry", 100, "EUR", 0).await;

    // Out of stock: banana has 1, cherry 0; banana comes first by id.
    let short = Uuid::now_v7();
    app.send(
        short,
        &reserve(short, &[("cherry", 1), ("apple", 2), ("banana", 2)]),
    )
    .await;
    let replies = app.wait_for_order(short, 1).await;
    assert_eq!(
        failure(&replies[0]),
        (msg::StockFailure::OutOfStock, "banana".to_owned())
    );

    // Unknown product: nothing of the known lines is taken.
    let unknown = Uuid::now_v7();
    app.send(unknown, &reserve(unknown, &[("apple", 1), ("durian", 1)]))
        .await;
    let replies = app.wait_for_order(unknown, 1).await;
    assert_eq!(
        failure(&replies[0]),
        (msg::StockFailure::UnknownProduct, "durian".to_owned())
    );

    assert_eq!(app.stock("apple").await, 5);
    assert_eq!(app.stock("banana").await, 1);
    assert_eq!(app.stock("cherry").await, 0);
    let stored = app.reservation(short).await;
    assert_eq!(stored.status(), api::ReservationStatus::Failed);
    assert_eq!(stored.failure_reason, "OUT_OF_STOCK");
    assert_eq!(stored.failed_product_id, "banana");
    assert!(stored.lines.is_empty());
    assert_eq!(app.rows("reservation_lines").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn products_priced_in_different_currencies_are_refused_as_a_currency_mismatch() {
    let mut app = spawn_app().await;
    app.create_product("apple", 100, "EUR", 5).await;
    app.create_product("bagel", 100, "USD", 5).await;
    let order = Uuid::now_v7();
    app.send(order, &reserve(order, &[("apple", 1), ("bagel", 1)]))
        .await;
    let replies = app.wait_for_order(order, 1).await;
    assert_eq!(
        failure(&replies[0]),
        (msg::StockFailure::CurrencyMismatch, "bagel".to_owned())
    );
    assert_eq!(app.stock("apple").await, 5);
    assert_eq!(app.stock("bagel").await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_replies_with_unit_prices_and_the_order_total() {
    let mut app = spawn_app().await;
    app.create_product("widget", 250, "EUR", 10).await;
    app.create_product("gadget", 1_000, "EUR", 4).await;
    let order = Uuid::now_v7();
    app.send(order, &reserve(order, &[("widget", 2), ("gadget", 3)]))
        .await;
    let replies = app.wait_for_order(order, 1).await;
    let Reply::Reserved(reserved) = &replies[0] else {
        panic!("expected StockReserved, got {:?}", replies[0]);
    };
    let lines: Vec<(&str, i32, i64, &str)> = reserved
        .lines
        .iter()
        .map(|l| {
            let price = l.unit_price.as_ref().expect("unit price");
            (
                l.product_id.as_str(),
                l.quantity,
                price.minor_units,
                price.currency.as_str(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [("widget", 2, 250, "EUR"), ("gadget", 3, 1_000, "EUR")]
    );
    assert_eq!(
        reserved.total,
        Some(msg::Money {
            minor_units: 3_500,
            currency: "EUR".into()
        })
    );
    assert_eq!(app.stock("widget").await, 8);
    assert_eq!(app.stock("gadget").await, 1);

    let stored = app.reservation(order).await;
    assert_eq!(stored.status(), api::ReservationStatus::Reserved);
    assert_eq!(stored.lines.len(), 2);
    assert_eq!(stored.total.map(|t| t.minor_units), Some(3_500));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_re_sent_reservation_is_answered_the_same_way_and_reserves_once() {
    let mut app = spawn_app().await;
    app.create_product("widget", 250, "EUR", 10).await;
    app.create_product("gadget", 1_000, "EUR", 1).await;

    let reserved = Uuid::now_v7();
    let command = reserve(reserved, &[("widget", 3)]);
    app.send(reserved, &command).await;
    app.wait_for_order(reserved, 1).await;
    app.send(reserved, &command).await;
    let replies = app.wait_for_order(reserved, 2).await;
    assert!(matches!(replies[0], Reply::Reserved(_)));
    assert_eq!(replies[0], replies[1]);
    assert_eq!(app.stock("widget").await, 7, "reserved once");

    // A refusal stays a refusal even once the stock would allow it.
    let refused = Uuid::now_v7();
    let command = reserve(refused, &[("gadget", 2)]);
    app.send(refused, &command).await;
    app.wait_for_order(refused, 1).await;
    app.client
        .adjust_stock(api::AdjustStockRequest {
            product_id: "gadget".into(),
            delta: 5,
        })
        .await
        .expect("restocked");
    app.send(refused, &command).await;
    let replies = app.wait_for_order(refused, 2).await;
    assert_eq!(
        failure(&replies[0]),
        (msg::StockFailure::OutOfStock, "gadget".to_owned())
    );
    assert_eq!(replies[0], replies[1]);
    assert_eq!(app.stock("gadget").await, 6);
    assert_eq!(app.rows("reservations").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_restores_exactly_what_was_reserved_and_only_once() {
    let mut app = spawn_app().await;
    app.create_product("widget", 250, "EUR", 10).await;
    app.create_product("gadget", 1_000, "EUR", 4).await;
    let order = Uuid::now_v7();
    app.send(order, &reserve(order, &[("widget", 3), ("gadget", 4)]))
        .await;
    app.wait_for_order(order, 1).await;
    assert_eq!(app.stock("widget").await, 7);
    assert_eq!(app.stock("gadget").await, 0);

    // Stock moves in between; the release gives back the 3 and 4 reserved.
    app.client
        .adjust_stock(api::AdjustStockRequest {
            product_id: "widget".into(),
            delta: -2,
        })
        .await
        .expect("adjusted");
    app.send(order, &release(order)).await;
    app.wait_for_order(order, 2).await;
    app.send(order, &release(order)).await;
    let replies = app.wait_for_order(order, 3).await;
    assert_eq!(replies[1..], [released(order), released(order)]);
    assert_eq!(app.stock("widget").await, 8);
    assert_eq!(app.stock("gadget").await, 4);
    let stored = app.reservation(order).await;
    assert_eq!(stored.status(), api::ReservationStatus::Released);
    assert_eq!(stored.lines.len(), 2, "the released lines stay on record");

    // A reservation re-sent after the release is refused.
    app.send(order, &reserve(order, &[("widget", 3), ("gadget", 4)]))
        .await;
    let replies = app.wait_for_order(order, 4).await;
    assert_eq!(
        failure(&replies[3]),
        (msg::StockFailure::OrderReleased, String::new())
    );
    assert_eq!(app.stock("widget").await, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_for_an_order_never_reserved_leaves_a_tombstone_that_refuses_a_late_reservation()
{
    let mut app = spawn_app().await;
    app.create_product("widget", 250, "EUR", 10).await;
    let order = Uuid::now_v7();
    app.send(order, &release(order)).await;
    let replies = app.wait_for_order(order, 1).await;
    assert_eq!(replies[0], released(order));
    assert_eq!(
        app.reservation(order).await.status(),
        api::ReservationStatus::Tombstone
    );

    app.send(order, &reserve(order, &[("widget", 1)])).await;
    let replies = app.wait_for_order(order, 2).await;
    assert_eq!(
        failure(&replies[1]),
        (msg::StockFailure::OrderReleased, String::new())
    );
    assert_eq!(app.stock("widget").await, 10);
    assert_eq!(
        app.reservation(order).await.status(),
        api::ReservationStatus::Tombstone
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reservations_never_oversell() {
    let mut app = spawn_app().await;
    app.create_product("a", 100, "EUR", 10).await;
    app.create_product("b", 200, "EUR", 20).await;
    let orders: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let sends = orders.iter().enumerate().map(|(i, order)| {
        let items: &[(&str, i32)] = if i % 2 == 0 {
            &[("a", 1), ("b", 1)]
        } else {
            &[("b", 1), ("a", 1)]
        };
        let command = reserve(*order, items);
        let app = &app;
        async move { app.send(*order, &command).await }
    });
    futures::future::join_all(sends).await;

    let replies = app.wait_for_replies(orders.len()).await;
    let mut per_order: BTreeMap<String, Vec<&Reply>> = BTreeMap::new();
    for reply in &replies {
        per_order
            .entry(reply.order_id().to_owned())
            .or_default()
            .push(reply);
    }
    assert_eq!(per_order.len(), orders.len(), "every order answered");
    assert!(
        per_order.values().all(|r| r.len() == 1),
        "every order answered exactly once"
    );
    let reserved = replies
        .iter()
        .filter(|r| matches!(r, Reply::Reserved(_)))
        .count();
    assert_eq!(reserved, 10);
    for reply in &replies {
        if let Reply::Failed(_) = reply {
            assert_eq!(
                failure(reply),
                (msg::StockFailure::OutOfStock, "a".to_owned())
            );
        }
    }
    assert_eq!(app.stock("a").await, 0);
    assert_eq!(app.stock("b").await, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_can_never_be_served_is_dead_lettered_without_a_reply() {
    let mut app = spawn_app().await;
    app.create_product("widget", 250, "EUR", 10).await;
    let order = Uuid::now_v7();
    app.send_raw(order, "ordersaga.messages.v1.ReserveStock", b"\xff\xff\xff")
        .await;
    app.send_raw(order, "ordersaga.messages.v1.Nonsense", b"")
        .await;
    app.send(order, &reserve(order, &[("widget", 0)])).await;
    let bad_id = msg::ReleaseStock {
        order_id: "not-a-uuid".into(),
    };
    app.send(order, &bad_id).await;
    // A valid command behind them on the same partition shows they were passed.
    app.send(order, &reserve(order, &[("widget", 1)])).await;
    let replies = app.wait_for_order(order, 1).await;
    assert!(matches!(replies[0], Reply::Reserved(_)));
    assert_eq!(app.rows("dead_letters").await, 4);
    assert_eq!(app.replies().await.len(), 1);
    assert_eq!(app.stock("widget").await, 9);
}
