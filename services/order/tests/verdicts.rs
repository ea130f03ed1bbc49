//! The saga's verdicts over Kafka: `ApproveOrder` / `RejectOrder` sent to the
//! service's `order.commands.v1` (playing the orchestrator), their effect read
//! back over gRPC, and the outcome events read from the outbox table.

mod common;

use std::time::Duration;

use common::{TestApp, spawn_app, valid_request};
use prost::Name as _;
use proto::messages::v1 as msg;
use proto::order::v1 as api;
use test_support::eventually;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn place(app: &mut TestApp) -> String {
    app.client
        .create_order(valid_request(""))
        .await
        .expect("order placed")
        .into_inner()
        .order_id
}

async fn send<M: prost::Message + prost::Name>(app: &TestApp, key: &str, command: &M) {
    app.harness
        .send(proto::topics::ORDER_COMMANDS, key, command)
        .await
        .expect("command sent");
}

fn approve(order_id: &str) -> msg::ApproveOrder {
    msg::ApproveOrder {
        order_id: order_id.to_owned(),
    }
}

fn reject(order_id: &str, reason: &str) -> msg::RejectOrder {
    msg::RejectOrder {
        order_id: order_id.to_owned(),
        reason: reason.to_owned(),
    }
}

async fn get(app: &mut TestApp, order_id: &str) -> api::Order {
    app.client
        .get_order(api::GetOrderRequest {
            order_id: order_id.to_owned(),
        })
        .await
        .expect("GetOrder")
        .into_inner()
}

async fn wait_status(app: &mut TestApp, order_id: &str, status: api::OrderStatus) -> api::Order {
    let mut client = app.client.clone();
    eventually(WAIT, &format!("order {status:?}"), async || {
        let order = client
            .get_order(api::GetOrderRequest {
                order_id: order_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok((order.status() == status).then_some(order))
    })
    .await
    .expect("status reached")
}

/// The order events of type `M` in the outbox, decoded, in publication
/// order, with their keys.
async fn events<M: prost::Message + prost::Name + Default>(app: &TestApp) -> Vec<(String, M)> {
    app.harness
        .outbox(proto::topics::ORDER_EVENTS)
        .await
        .expect("outbox rows")
        .into_iter()
        .filter(|message| message.is::<M>())
        .map(|message| {
            let event = message.decode().expect("decodes");
            (message.key, event)
        })
        .collect()
}

async fn wait_events<M: prost::Message + prost::Name + Default>(
    app: &TestApp,
    count: usize,
) -> Vec<(String, M)> {
    eventually(WAIT, &format!("{count} {}", M::full_name()), async || {
        let found = events::<M>(app).await;
        Ok((found.len() >= count).then_some(found))
    })
    .await
    .expect("events written")
}

async fn dead_letters(app: &TestApp) -> Vec<consumer::deadletter::DeadLetter> {
    let mut conn = app.harness.db.connect().await.expect("connect");
    consumer::deadletter::pending(&mut conn, 100)
        .await
        .expect("dead letters")
}

async fn wait_dead_letters(app: &TestApp, count: usize) -> Vec<consumer::deadletter::DeadLetter> {
    eventually(WAIT, &format!("{count} dead letters"), async || {
        let found = dead_letters(app).await;
        Ok((found.len() >= count).then_some(found))
    })
    .await
    .expect("dead-lettered")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_order_is_recorded_and_announced_once() {
    let mut app = spawn_app().await;
    let id = place(&mut app).await;
    send(&app, &id, &approve(&id)).await;

    let order = wait_status(&mut app, &id, api::OrderStatus::Approved).await;
    assert_eq!(order.rejection_reason, "");
    let history: Vec<_> = order
        .history
        .iter()
        .map(api::StatusChange::status)
        .collect();
    assert_eq!(
        history,
        [api::OrderStatus::Pending, api::OrderStatus::Approved]
    );
    let approved = wait_events::<msg::OrderApproved>(&app, 1).await;
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].0, id, "keyed by order id");
    assert_eq!(approved[0].1.order_id, id);
    assert_eq!(approved[0].1.customer_id, "customer-1");
    assert!(events::<msg::OrderRejected>(&app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_records_and_announces_its_reason() {
    let mut app = spawn_app().await;
    let id = place(&mut app).await;
    send(&app, &id, &reject(&id, "reserve_stock: OUT_OF_STOCK")).await;

    let order = wait_status(&mut app, &id, api::OrderStatus::Rejected).await;
    assert_eq!(order.rejection_reason, "reserve_stock: OUT_OF_STOCK");
    assert_eq!(order.history.len(), 2);
    assert_eq!(order.history[1].status(), api::OrderStatus::Rejected);
    assert_eq!(order.history[1].reason, "reserve_stock: OUT_OF_STOCK");
    let rejected = wait_events::<msg::OrderRejected>(&app, 1).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].1.order_id, id);
    assert_eq!(rejected[0].1.customer_id, "customer-1");
    assert_eq!(rejected[0].1.reason, "reserve_stock: OUT_OF_STOCK");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_verdict_is_announced_again_without_a_second_history_entry() {
    let mut app = spawn_app().await;
    let approved_id = place(&mut app).await;
    let rejected_id = place(&mut app).await;
    for _ in 0..2 {
        send(&app, &approved_id, &approve(&approved_id)).await;
        send(
            &app,
            &rejected_id,
            &reject(&rejected_id, "charge_payment: INSUFFICIENT_FUNDS"),
        )
        .await;
    }
    // A re-sent rejection with another reason repeats the first reason.
    send(
        &app,
        &rejected_id,
        &reject(&rejected_id, "create_shipment: TIMEOUT"),
    )
    .await;

    let approved = wait_events::<msg::OrderApproved>(&app, 2).await;
    let rejected = wait_events::<msg::OrderRejected>(&app, 3).await;
    assert_eq!(approved.len(), 2);
    assert!(
        approved
            .iter()
            .all(|(key, e)| *key == approved_id && e.order_id == approved_id)
    );
    assert_eq!(rejected.len(), 3);
    assert!(
        rejected
            .iter()
            .all(|(_, e)| e.reason == "charge_payment: INSUFFICIENT_FUNDS"),
        "{rejected:?}"
    );
    let order = get(&mut app, &approved_id).await;
    assert_eq!(order.status(), api::OrderStatus::Approved);
    assert_eq!(order.history.len(), 2, "one history entry per change");
    let order = get(&mut app, &rejected_id).await;
    assert_eq!(order.status(), api::OrderStatus::Rejected);
    assert_eq!(order.rejection_reason, "charge_payment: INSUFFICIENT_FUNDS");
    assert_eq!(order.history.len(), 2, "one history entry per change");
    assert!(dead_letters(&app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn approving_a_rejected_order_is_dead_lettered_and_changes_nothing() {
    let mut app = spawn_app().await;
    let rejected_id = place(&mut app).await;
    let approved_id = place(&mut app).await;
    send(
        &app,
        &rejected_id,
        &reject(&rejected_id, "reserve_stock: OUT_OF_STOCK"),
    )
    .await;
    send(&app, &approved_id, &approve(&approved_id)).await;
    send(&app, &rejected_id, &approve(&rejected_id)).await;
    send(&app, &approved_id, &reject(&approved_id, "too late")).await;

    let dead = wait_dead_letters(&app, 2).await;
    assert_eq!(dead.len(), 2);
    let for_order = |id: &str| {
        dead.iter()
            .find(|d| d.message_key == id)
            .unwrap_or_else(|| panic!("dead letter for {id}: {dead:?}"))
    };
    let approve_rejected = for_order(&rejected_id);
    assert_eq!(
        approve_rejected.message_type,
        msg::ApproveOrder::full_name()
    );
    assert!(
        approve_rejected
            .reason
            .contains("order is REJECTED and cannot become APPROVED"),
        "{}",
        approve_rejected.reason
    );
    let reject_approved = for_order(&approved_id);
    assert!(
        reject_approved
            .reason
            .contains("order is APPROVED and cannot become REJECTED"),
        "{}",
        reject_approved.reason
    );

    let order = get(&mut app, &rejected_id).await;
    assert_eq!(order.status(), api::OrderStatus::Rejected);
    assert_eq!(order.rejection_reason, "reserve_stock: OUT_OF_STOCK");
    assert_eq!(order.history.len(), 2);
    let order = get(&mut app, &approved_id).await;
    assert_eq!(order.status(), api::OrderStatus::Approved);
    assert_eq!(order.history.len(), 2);
    assert_eq!(events::<msg::OrderApproved>(&app).await.len(), 1);
    assert_eq!(events::<msg::OrderRejected>(&app).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_on_unknown_or_malformed_orders_are_dead_lettered() {
    let mut app = spawn_app().await;
    let pending_id = place(&mut app).await;
    let unknown = Uuid::now_v7().to_string();
    send(&app, &unknown, &approve(&unknown)).await;
    send(&app, "not-a-uuid", &approve("not-a-uuid")).await;
    send(&app, &pending_id, &reject(&pending_id, "")).await;

    let dead = wait_dead_letters(&app, 3).await;
    assert_eq!(dead.len(), 3);
    let reason = |key: &str| {
        dead.iter()
            .find(|d| d.message_key == key)
            .map(|d| d.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason(&unknown).contains("not found"),
        "{}",
        reason(&unknown)
    );
    assert!(
        reason("not-a-uuid").contains("must be a UUID"),
        "{}",
        reason("not-a-uuid")
    );
    assert!(
        reason(&pending_id).contains("must not be empty"),
        "{}",
        reason(&pending_id)
    );
    let order = get(&mut app, &pending_id).await;
    assert_eq!(order.status(), api::OrderStatus::Pending);
    assert_eq!(order.history.len(), 1);
    assert!(events::<msg::OrderRejected>(&app).await.is_empty());
    assert!(events::<msg::OrderApproved>(&app).await.is_empty());
}
