//! The order saga through the real binaries: one stack per test, each
//! scenario asserting the order's final status and reason, stock, balances,
//! shipment, notifications, and the saga's trace in Jaeger.

use std::time::Duration;

use e2e::checks::{Settled, assert_one_trace, complete_trace, settle};
use e2e::ops::{order_request, wait_for};
use e2e::{ALL_SERVICE_NAMES, Service, Stack, StackOptions, Trace};
use proto::inventory::v1::ReservationStatus;
use proto::notification::v1::{DeliveryState, Outcome};
use proto::orchestrator::v1::SagaState;
use proto::order::v1::OrderStatus;
use proto::payment::v1::PaymentStatus;
use proto::shipment::v1::ShipmentStatus;

/// How long one saga gets to finish in these scenarios (a killed consumer's
/// partitions move only after its 10 s session timeout).
const SAGA_WAIT: Duration = Duration::from_secs(120);
/// How long a notification gets to reach the webhook.
const NOTIFY_WAIT: Duration = Duration::from_secs(30);
/// Unit price of every product, in cents.
const PRICE: i64 = 1250;
/// Opening balance of a customer who can afford the order, in cents.
const BALANCE: i64 = 10_000;
/// A country no shipment service delivers to.
const UNDELIVERABLE: &str = "ZZ";

async fn start(options: StackOptions) -> Stack {
    Stack::start(options).await.expect("stack starts")
}

/// A product with `stock` units and a customer with `balance`, named after `tag`.
struct World {
    product: String,
    customer: String,
    stock: i32,
    balance: i64,
}

async fn world(stack: &Stack, tag: &str, stock: i32, balance: i64) -> World {
    let world = World {
        product: format!("sku-{tag}"),
        customer: format!("customer-{tag}"),
        stock,
        balance,
    };
    stack
        .create_product(&world.product, PRICE, stock)
        .await
        .expect("product seeded");
    stack
        .create_account(&world.customer, balance)
        .await
        .expect("account seeded");
    world
}

/// A finished order: its ids, what every service recorded, and its saga.
struct Finished {
    order_id: String,
    trace_id: String,
    settled: Settled,
}

async fn order_and_wait(stack: &Stack, world: &World, quantity: i32, country: &str) -> Finished {
    let created = stack
        .place_order(order_request(
            &world.customer,
            &[(&world.product, quantity)],
            country,
        ))
        .await
        .expect("order placed");
    finish(stack, world, created.order_id, created.trace_id).await
}

async fn finish(stack: &Stack, world: &World, order_id: String, trace_id: String) -> Finished {
    let (order, saga) = stack
        .wait_finished(&order_id, SAGA_WAIT)
        .await
        .expect("saga finishes");
    let expected_saga = match order.status() {
        OrderStatus::Approved => SagaState::Approved,
        _ => SagaState::Rejected,
    };
    assert_eq!(saga.state(), expected_saga, "saga of {order_id}: {saga:?}");
    assert_eq!(
        saga.trace_id, trace_id,
        "the saga records the order's trace"
    );
    stack
        .wait_notified(&world.customer, &order_id, NOTIFY_WAIT)
        .await
        .expect("notification delivered");
    let settled = settle(stack, std::slice::from_ref(&order_id))
        .await
        .expect("settled")
        .pop()
        .expect("one order");
    Finished {
        order_id,
        trace_id,
        settled,
    }
}

/// Exactly one notification of `outcome`, delivered to the webhook exactly once.
async fn assert_notified_once(stack: &Stack, finished: &Finished, outcome: Outcome) {
    let notifications = &finished.settled.notifications;
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let n = &notifications[0];
    assert_eq!(n.outcome(), outcome);
    assert_eq!(n.delivery_state(), DeliveryState::Delivered);
    if outcome == Outcome::Rejected {
        assert_eq!(n.reason, finished.settled.order.rejection_reason);
    }
    let calls = wait_for(NOTIFY_WAIT, "the webhook call", async || {
        let calls = stack.webhook.calls_for(&finished.order_id);
        Ok(if calls.is_empty() {
            Err("none".to_owned())
        } else {
            Ok(calls)
        })
    })
    .await
    .expect("webhook called");
    assert_eq!(calls.len(), 1, "one webhook call per outcome: {calls:?}");
    let body = calls[0].json().expect("JSON webhook body");
    assert_eq!(body["order_id"], finished.order_id.as_str());
    assert_eq!(
        body["customer_id"],
        finished.settled.order.customer_id.as_str()
    );
    let traceparent = calls[0].header("traceparent").unwrap_or_default();
    assert!(
        traceparent.contains(&finished.trace_id),
        "the webhook call carries the saga's trace: {traceparent:?}"
    );
}

async fn assert_stock(stack: &Stack, world: &World, expected: i32) {
    assert_eq!(
        stack.stock(&world.product).await.expect("GetProduct"),
        expected,
        "stock of {}",
        world.product
    );
}

async fn assert_balance(stack: &Stack, world: &World, expected: i64) {
    assert_eq!(
        stack.balance(&world.customer).await.expect("GetAccount"),
        expected,
        "balance of {}",
        world.customer
    );
}

/// The saga's trace once every service in `services` and every operation in
/// `operations` reported, checked to be the order's only trace.
async fn saga_trace(finished: &Finished, services: &[&str], operations: &[&str]) -> Trace {
    let trace = complete_trace(&finished.trace_id, services, operations)
        .await
        .expect("trace complete in Jaeger");
    assert_one_trace(&trace, &finished.order_id, &ALL_SERVICE_NAMES)
        .await
        .expect("one trace per saga");
    trace
}

fn start_of(trace: &Trace, operation: &str) -> u64 {
    trace
        .first(operation)
        .unwrap_or_else(|| panic!("no span {operation:?} in {}", trace.summary()))
        .start_time
}

// ---- the scenarios, each a function so the duplicated run can repeat them ----

async fn happy_path(stack: &Stack, tag: &str) {
    let world = world(stack, tag, 10, BALANCE).await;
    let finished = order_and_wait(stack, &world, 2, "US").await;
    let settled = &finished.settled;
    assert_eq!(settled.order.status(), OrderStatus::Approved);
    assert_eq!(settled.order.rejection_reason, "");
    let history: Vec<OrderStatus> = settled.order.history.iter().map(|h| h.status()).collect();
    assert_eq!(history, [OrderStatus::Pending, OrderStatus::Approved]);

    assert_stock(stack, &world, 8).await;
    let reservation = stack
        .reservation_of(&finished.order_id)
        .await
        .expect("GetReservation")
        .expect("a reservation");
    assert_eq!(reservation.status(), ReservationStatus::Reserved);
    let reserved_total = reservation.total.expect("reserved total").minor_units;
    assert_eq!(reserved_total, 2 * PRICE);
    let payment = settled.payment.as_ref().expect("a payment");
    assert_eq!(payment.status(), PaymentStatus::Charged);
    assert_eq!(
        settled.kept_charge(),
        reserved_total,
        "charged the reserved total"
    );
    assert_balance(stack, &world, world.balance - reserved_total).await;
    let shipment = settled.shipment.as_ref().expect("a shipment");
    assert_eq!(shipment.status(), ShipmentStatus::Created);
    assert!(!shipment.tracking_number.is_empty(), "{shipment:?}");
    assert_notified_once(stack, &finished, Outcome::Approved).await;

    // The trace: one per saga, with the steps it took.
    let trace = saga_trace(
        &finished,
        &ALL_SERVICE_NAMES,
        &["saga approve_order", "saga create_shipment"],
    )
    .await;
    assert!(
        trace.with_event("saga.step.timeout").is_empty(),
        "no timeout on the happy path: {}",
        trace.summary()
    );
}

async fn out_of_stock(stack: &Stack, tag: &str) {
    let world = world(stack, tag, 1, BALANCE).await;
    let finished = order_and_wait(stack, &world, 2, "US").await;
    let settled = &finished.settled;
    assert_eq!(settled.order.status(), OrderStatus::Rejected);
    assert!(
        settled.order.rejection_reason.contains("OUT_OF_STOCK"),
        "{:?}",
        settled.order.rejection_reason
    );
    let last = settled.order.history.last().expect("history");
    assert_eq!(last.status(), OrderStatus::Rejected);
    assert_eq!(last.reason, settled.order.rejection_reason);

    assert_stock(stack, &world, world.stock).await;
    let reservation = stack
        .reservation_of(&finished.order_id)
        .await
        .expect("GetReservation");
    assert!(
        reservation
            .as_ref()
            .is_none_or(|r| r.status() != ReservationStatus::Reserved),
        "nothing stays reserved: {reservation:?}"
    );
    assert_balance(stack, &world, world.balance).await;
    assert_eq!(settled.kept_charge(), 0);
    assert!(
        settled.payment.is_none(),
        "no payment: {:?}",
        settled.payment
    );
    assert!(
        settled.shipment.is_none(),
        "no shipment: {:?}",
        settled.shipment
    );
    assert_notified_once(stack, &finished, Outcome::Rejected).await;

    // The trace: one per saga, with the steps it took.
    let services = [
        "order-service",
        "orchestrator",
        "inventory-service",
        "notification-service",
        "outbox-relay",
    ];
    let trace = saga_trace(&finished, &services, &["saga reject_order"]).await;
    assert!(
        !trace.has_service("payment-service") && !trace.has_service("shipment-service"),
        "nothing charged or shipped: {}",
        trace.summary()
    );
}

async fn insufficient_funds(stack: &Stack, tag: &str) {
    let world = world(stack, tag, 10, PRICE).await;
    let finished = order_and_wait(stack, &world, 2, "US").await;
    let settled = &finished.settled;
    assert_eq!(settled.order.status(), OrderStatus::Rejected);
    assert!(
        settled
            .order
            .rejection_reason
            .contains("INSUFFICIENT_FUNDS"),
        "{:?}",
        settled.order.rejection_reason
    );
    assert_stock(stack, &world, world.stock).await;
    let reservation = stack
        .reservation_of(&finished.order_id)
        .await
        .expect("GetReservation")
        .expect("a reservation");
    assert_eq!(reservation.status(), ReservationStatus::Released);
    assert_balance(stack, &world, world.balance).await;
    assert_eq!(settled.kept_charge(), 0);
    assert!(
        settled
            .payment
            .as_ref()
            .is_none_or(|p| p.status() == PaymentStatus::Declined),
        "{:?}",
        settled.payment
    );
    assert!(
        settled.shipment.is_none(),
        "no shipment: {:?}",
        settled.shipment
    );
    assert_notified_once(stack, &finished, Outcome::Rejected).await;

    // The trace: one per saga, with the steps it took.
    let services = [
        "order-service",
        "orchestrator",
        "inventory-service",
        "payment-service",
        "notification-service",
        "outbox-relay",
    ];
    let trace = saga_trace(
        &finished,
        &services,
        &["saga compensate reserve_stock", "saga reject_order"],
    )
    .await;
    assert!(
        start_of(&trace, "saga compensate reserve_stock") < start_of(&trace, "saga reject_order"),
        "compensated before rejecting: {}",
        trace.summary()
    );
}

async fn undeliverable(stack: &Stack, tag: &str) {
    let world = world(stack, tag, 10, BALANCE).await;
    let finished = order_and_wait(stack, &world, 3, UNDELIVERABLE).await;
    let settled = &finished.settled;
    assert_eq!(settled.order.status(), OrderStatus::Rejected);
    assert!(
        settled.order.rejection_reason.contains("UNDELIVERABLE"),
        "{:?}",
        settled.order.rejection_reason
    );
    assert_stock(stack, &world, world.stock).await;
    assert_balance(stack, &world, world.balance).await;
    let payment = settled.payment.as_ref().expect("a payment");
    assert_eq!(payment.status(), PaymentStatus::Refunded, "{payment:?}");
    assert_eq!(
        payment.amount.as_ref().map(|m| m.minor_units),
        Some(3 * PRICE)
    );
    let reservation = stack
        .reservation_of(&finished.order_id)
        .await
        .expect("GetReservation")
        .expect("a reservation");
    assert_eq!(reservation.status(), ReservationStatus::Released);
    assert!(
        settled
            .shipment
            .as_ref()
            .is_none_or(|s| s.status() != ShipmentStatus::Created),
        "{:?}",
        settled.shipment
    );
    assert_notified_once(stack, &finished, Outcome::Rejected).await;

    // The trace: one per saga, with the steps it took.
    let trace = saga_trace(
        &finished,
        &ALL_SERVICE_NAMES,
        &[
            "saga compensate charge_payment",
            "saga compensate reserve_stock",
            "saga reject_order",
        ],
    )
    .await;
    assert!(
        start_of(&trace, "saga compensate charge_payment")
            < start_of(&trace, "saga compensate reserve_stock"),
        "refund before release: {}",
        trace.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_that_can_be_served_is_approved_charged_shipped_and_notified_in_one_trace() {
    let stack = start(StackOptions::default()).await;
    happy_path(&stack, "happy").await;
    stack.check_alive().expect("every process still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_beyond_the_stock_is_rejected_without_charging() {
    let stack = start(StackOptions::default()).await;
    out_of_stock(&stack, "scarce").await;
    stack.check_alive().expect("every process still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_the_customer_cannot_afford_releases_its_stock() {
    let stack = start(StackOptions::default()).await;
    insufficient_funds(&stack, "poor").await;
    stack.check_alive().expect("every process still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undeliverable_order_is_refunded_then_released() {
    let stack = start(StackOptions::default()).await;
    undeliverable(&stack, "far").await;
    stack.check_alive().expect("every process still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shipment_service_down_past_the_deadline_compensates_every_step_in_reverse() {
    // A consumer killed with SIGKILL keeps its partitions until the broker
    // expires its session (10 s): the restarted shipment service gets them
    // only then. The cancellation is re-sent long enough to outlast that.
    let stack = start(StackOptions {
        max_attempts: 40,
        retry_backoff_max: Duration::from_secs(3),
        ..StackOptions::default()
    })
    .await;
    let world = world(&stack, "down", 10, BALANCE).await;
    stack
        .kill(Service::Shipment)
        .await
        .expect("shipment killed");

    let created = stack
        .place_order(order_request(&world.customer, &[(&world.product, 2)], "US"))
        .await
        .expect("order placed");
    let saga = wait_for(
        Duration::from_secs(30),
        "the saga to give up on create_shipment",
        async || {
            Ok(match stack.saga(&created.order_id).await? {
                Some(saga)
                    if saga.state() == SagaState::Compensating
                        || e2e::ops::saga_finished(saga.state()) =>
                {
                    Ok(saga)
                }
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await
    .expect("saga compensating");
    assert_eq!(saga.state(), SagaState::Compensating, "{saga:?}");
    stack
        .start_service(Service::Shipment)
        .await
        .expect("shipment restarted");

    let finished = finish(&stack, &world, created.order_id, created.trace_id).await;
    let settled = &finished.settled;
    assert_eq!(settled.order.status(), OrderStatus::Rejected);
    assert_eq!(settled.order.rejection_reason, "create_shipment: TIMEOUT");
    let shipment = settled
        .shipment
        .as_ref()
        .expect("the shipment service recorded the order");
    assert!(
        matches!(
            shipment.status(),
            ShipmentStatus::Cancelled | ShipmentStatus::Tombstone
        ),
        "no shipment stays created: {shipment:?}"
    );
    assert_stock(&stack, &world, world.stock).await;
    assert_balance(&stack, &world, world.balance).await;
    let payment = settled.payment.as_ref().expect("a payment");
    assert_eq!(payment.status(), PaymentStatus::Refunded);
    assert_notified_once(&stack, &finished, Outcome::Rejected).await;

    let compensations = [
        "saga compensate create_shipment",
        "saga compensate charge_payment",
        "saga compensate reserve_stock",
    ];
    let trace = saga_trace(&finished, &ALL_SERVICE_NAMES, &compensations).await;
    assert!(
        !trace.with_event("saga.step.timeout").is_empty(),
        "a saga.step.timeout event: {}",
        trace.summary()
    );
    let starts: Vec<u64> = compensations.iter().map(|c| start_of(&trace, c)).collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "cancel, refund, release in that order: {}",
        trace.summary()
    );
    stack.check_alive().expect("every process still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_and_reply_delivered_twice_changes_no_outcome() {
    // Four sagas at once, each message twice: on a loaded two-core machine a
    // reply can take longer than the default 3 s, which would (correctly)
    // end a saga with a TIMEOUT instead of the outcome under test.
    let stack = start(StackOptions {
        duplicate_messages: true,
        step_timeout: Duration::from_secs(10),
        ..StackOptions::default()
    })
    .await;
    tokio::join!(
        happy_path(&stack, "dup-happy"),
        out_of_stock(&stack, "dup-scarce"),
        insufficient_funds(&stack, "dup-poor"),
        undeliverable(&stack, "dup-far"),
    );
    let copies = stack.duplicator.as_ref().map_or(0, e2e::Duplicator::copies);
    assert!(
        copies >= 20,
        "the duplicator re-sent the saga's messages ({copies})"
    );

    // Late copies change nothing either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expected = [
        ("dup-happy", 8, BALANCE - 2 * PRICE),
        ("dup-scarce", 1, BALANCE),
        ("dup-poor", 10, PRICE),
        ("dup-far", 10, BALANCE),
    ];
    for (tag, stock, balance) in expected {
        assert_eq!(
            stack.stock(&format!("sku-{tag}")).await.expect("stock"),
            stock,
            "{tag}"
        );
        assert_eq!(
            stack
                .balance(&format!("customer-{tag}"))
                .await
                .expect("balance"),
            balance,
            "{tag}"
        );
        let notifications = stack
            .notifications(&format!("customer-{tag}"))
            .await
            .expect("notifications");
        assert_eq!(notifications.len(), 1, "{tag}: {notifications:?}");
    }
    stack.check_alive().expect("every process still runs");
}
