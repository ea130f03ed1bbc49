//! The order API against a real PostgreSQL: one fresh database per test, the
//! service bound to port 0.

mod common;

use common::{rows, spawn_app, valid_request};
use proto::messages::v1::OrderCreated;
use proto::order::v1 as api;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread")]
async fn create_order_commits_the_order_and_one_outbox_event() {
    let mut app = spawn_app().await;
    let created = app
        .client
        .create_order(valid_request(""))
        .await
        .expect("created")
        .into_inner();
    assert_eq!(created.status(), api::OrderStatus::Pending);
    assert!(!created.replayed);

    let order = app
        .client
        .get_order(api::GetOrderRequest {
            order_id: created.order_id.clone(),
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(order.customer_id, "customer-1");
    assert_eq!(order.items.len(), 2);
    assert_eq!(order.items[0].product_id, "sku-widget");
    assert_eq!(order.history.len(), 1);
    assert_eq!(order.history[0].status(), api::OrderStatus::Pending);
    assert_eq!(order.history[0].at, order.created_at);
    assert_eq!(rows(&app, "outbox").await, 1);

    // The event describes the order exactly as it was stored.
    let outbox = app
        .harness
        .outbox(proto::topics::ORDER_EVENTS)
        .await
        .expect("outbox rows");
    let event: OrderCreated = outbox[0].decode().expect("OrderCreated");
    assert_eq!(outbox[0].key, created.order_id);
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(event.customer_id, order.customer_id);
    let event_items: Vec<(String, i32)> = event
        .items
        .iter()
        .map(|i| (i.product_id.clone(), i.quantity))
        .collect();
    let stored_items: Vec<(String, i32)> = order
        .items
        .iter()
        .map(|i| (i.product_id.clone(), i.quantity))
        .collect();
    assert_eq!(event_items, stored_items);
    assert_eq!(event.created_at, order.created_at);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_idempotency_key_twice_yields_one_order_and_one_event() {
    let mut app = spawn_app().await;
    let first = app
        .client
        .create_order(valid_request("key-1"))
        .await
        .expect("first")
        .into_inner();
    let second = app
        .client
        .create_order(valid_request("key-1"))
        .await
        .expect("second")
        .into_inner();
    assert_eq!(first.order_id, second.order_id);
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(rows(&app, "orders").await, 1);
    assert_eq!(rows(&app, "outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_with_one_idempotency_key_create_one_order() {
    let app = spawn_app().await;
    let calls = (0..8).map(|_| {
        let mut client = app.client.clone();
        async move { client.create_order(valid_request("race")).await }
    });
    let results = futures::future::join_all(calls).await;
    let ids: std::collections::BTreeSet<String> = results
        .into_iter()
        .map(|r| r.expect("every call succeeds").into_inner().order_id)
        .collect();
    assert_eq!(ids.len(), 1, "all calls answer with the same order");
    assert_eq!(rows(&app, "orders").await, 1);
    assert_eq!(rows(&app, "outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_reused_for_a_different_order_is_refused() {
    let mut app = spawn_app().await;
    app.client
        .create_order(valid_request("key-2"))
        .await
        .expect("first");
    let mut different = valid_request("key-2");
    different.items[0].quantity = 5;
    let error = app
        .client
        .create_order(different)
        .await
        .expect_err("refused");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(rows(&app, "orders").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_get_field_violations_and_write_nothing() {
    let mut app = spawn_app().await;
    type Edit = fn(&mut api::CreateOrderRequest);
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("no items", |r| r.items.clear(), "items"),
        (
            "quantity zero",
            |r| r.items[0].quantity = 0,
            "items[0].quantity",
        ),
        (
            "negative quantity",
            |r| r.items[1].quantity = -4,
            "items[1].quantity",
        ),
        (
            "huge quantity",
            |r| r.items[0].quantity = i32::MAX,
            "items[0].quantity",
        ),
        (
            "empty customer id",
            |r| r.customer_id.clear(),
            "customer_id",
        ),
        (
            "oversize customer id",
            |r| r.customer_id = "c".repeat(65),
            "customer_id",
        ),
        (
            "empty product id",
            |r| r.items[0].product_id.clear(),
            "items[0].product_id",
        ),
        (
            "oversize recipient",
            |r| {
                if let Some(a) = r.shipping_address.as_mut() {
                    a.recipient = "r".repeat(201);
                }
            },
            "shipping_address.recipient",
        ),
        (
            "bad country",
            |r| {
                if let Some(a) = r.shipping_address.as_mut() {
                    a.country_code = "Britain".into();
                }
            },
            "shipping_address.country_code",
        ),
        (
            "missing address",
            |r| r.shipping_address = None,
            "shipping_address",
        ),
        (
            "oversize idempotency key",
            |r| r.idempotency_key = "k".repeat(129),
            "idempotency_key",
        ),
        (
            "too many items",
            |r| {
                r.items = (0..51)
                    .map(|i| api::LineItem {
                        product_id: format!("sku-{i}"),
                        quantity: 1,
                    })
                    .collect();
            },
            "items",
        ),
        (
            "duplicate product",
            |r| r.items[1].product_id = "sku-widget".into(),
            "items[1].product_id",
        ),
    ];
    for (name, edit, field) in cases {
        let mut request = valid_request("");
        edit(&mut request);
        let status = app.client.create_order(request).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        let details = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{name}: no field details"));
        let fields: Vec<&str> = details
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert!(fields.contains(&field), "{name}: {fields:?} lacks {field}");
    }
    assert_eq!(rows(&app, "orders").await, 0);
    assert_eq!(rows(&app, "order_items").await, 0);
    assert_eq!(rows(&app, "outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_violation_of_a_request_is_reported_at_once() {
    let mut app = spawn_app().await;
    let mut request = valid_request("");
    request.customer_id.clear();
    request.items[0].quantity = 0;
    let status = app.client.create_order(request).await.expect_err("invalid");
    let details = status.get_details_bad_request().expect("details");
    assert_eq!(details.field_violations.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_order_distinguishes_unknown_from_malformed_ids() {
    let mut app = spawn_app().await;
    let unknown = app
        .client
        .get_order(api::GetOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = app
        .client
        .get_order(api::GetOrderRequest {
            order_id: "nope".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_orders_pages_through_a_customers_orders_newest_first() {
    let mut app = spawn_app().await;
    let mut created = Vec::new();
    for _ in 0..5 {
        let order = app
            .client
            .create_order(valid_request(""))
            .await
            .expect("created")
            .into_inner();
        created.push(order.order_id);
    }
    let mut other = valid_request("");
    other.customer_id = "customer-2".into();
    app.client
        .create_order(other)
        .await
        .expect("other customer");

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .list_orders(api::ListOrdersRequest {
                customer_id: "customer-1".into(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.orders.len() <= 2);
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    created.reverse();
    assert_eq!(seen, created);
}
