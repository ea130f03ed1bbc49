//! Many sagas at once, competing for too little stock and money: every saga
//! ends, and nothing is created or lost on the way.
//!
//! This file holds one test so that its stack (the heaviest) runs alone:
//! cargo runs test binaries one after another.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e::checks::settle;
use e2e::ops::{order_request, saga_finished};
use e2e::{Stack, StackOptions};
use futures::StreamExt as _;
use proto::notification::v1::Outcome;
use proto::orchestrator::v1::SagaState;
use proto::order::v1::OrderStatus;
use proto::payment::v1::PaymentStatus;
use proto::shipment::v1::ShipmentStatus;

const ORDERS: usize = 200;
const STOCK: i32 = 60;
const PRICE: i64 = 1000;
/// Customers who can afford a few orders, and customers who can afford one
/// single-unit order at most.
const RICH: [&str; 5] = ["rich-0", "rich-1", "rich-2", "rich-3", "rich-4"];
const POOR: [&str; 5] = ["poor-0", "poor-1", "poor-2", "poor-3", "poor-4"];
const RICH_BALANCE: i64 = 7_000;
const POOR_BALANCE: i64 = 1_500;
/// How long all sagas together get to end.
const ALL_DONE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_orders_conserve_stock_and_money() {
    let stack = Stack::start(StackOptions {
        // A reply may queue behind hundreds of messages on two cores.
        step_timeout: Duration::from_secs(20),
        max_attempts: 10,
        retry_backoff_max: Duration::from_secs(2),
        pool_size: 8,
        ..StackOptions::default()
    })
    .await
    .expect("stack starts");
    stack
        .create_product("sku-limited", PRICE, STOCK)
        .await
        .expect("product");
    let mut initial = BTreeMap::new();
    for (customer, balance) in RICH
        .iter()
        .map(|c| (*c, RICH_BALANCE))
        .chain(POOR.iter().map(|c| (*c, POOR_BALANCE)))
    {
        stack
            .create_account(customer, balance)
            .await
            .expect("account");
        initial.insert(customer.to_owned(), balance);
    }
    let customers: Vec<&str> = RICH.iter().chain(POOR.iter()).copied().collect();

    // Every order at once.
    let started = Instant::now();
    let requests: Vec<_> = (0..ORDERS)
        .map(|i| {
            let customer = customers[i % customers.len()];
            let quantity = i32::try_from(i % 3 + 1).expect("small");
            let country = if i % 5 == 4 { "ZZ" } else { "DE" };
            order_request(customer, &[("sku-limited", quantity)], country)
        })
        .collect();
    let placed =
        futures::future::join_all(requests.into_iter().map(|r| stack.place_order(r))).await;
    let order_ids: Vec<String> = placed
        .into_iter()
        .map(|p| p.expect("order placed").order_id)
        .collect();
    let placed_in = started.elapsed();

    // Every saga ends (bounded).
    let deadline = Instant::now() + ALL_DONE;
    let mut open: BTreeSet<String> = order_ids.iter().cloned().collect();
    let mut states: BTreeMap<String, SagaState> = BTreeMap::new();
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {ORDERS} sagas still open after {ALL_DONE:?}, e.g. {:?}",
            open.len(),
            stack.saga(open.iter().next().expect("one")).await
        );
        let checked: Vec<(String, Option<SagaState>)> = futures::stream::iter(open.clone())
            .map(|id| async {
                let state = stack
                    .saga(&id)
                    .await
                    .ok()
                    .flatten()
                    .map(|s| s.state())
                    .filter(|s| saga_finished(*s));
                (id, state)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (id, state) in checked {
            if let Some(state) = state {
                open.remove(&id);
                states.insert(id, state);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let finished_in = started.elapsed();

    // One notification per order, delivered.
    let notify_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut delivered = 0;
        for customer in &customers {
            delivered += stack
                .notifications(customer)
                .await
                .expect("notifications")
                .iter()
                .filter(|n| n.delivery_state() == proto::notification::v1::DeliveryState::Delivered)
                .count();
        }
        if delivered >= ORDERS {
            break;
        }
        assert!(
            Instant::now() < notify_deadline,
            "only {delivered} of {ORDERS} notifications delivered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let settled = settle(&stack, &order_ids).await.expect("settled");
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut approved_units: i64 = 0;
    let mut kept: BTreeMap<String, i64> = BTreeMap::new();
    let mut approved = 0;
    let mut created_shipments = 0;
    for (id, s) in order_ids.iter().zip(&settled) {
        let state = states[id];
        let expected_state = if s.approved() {
            SagaState::Approved
        } else {
            SagaState::Rejected
        };
        assert_eq!(
            state,
            expected_state,
            "saga of {id} vs order {:?}",
            s.order.status()
        );
        assert_ne!(s.order.status(), OrderStatus::Pending, "{id}");
        let price = s.quantity() * PRICE;
        if s.approved() {
            approved += 1;
            approved_units += s.quantity();
            assert_eq!(
                s.kept_charge(),
                price,
                "{id} charged its total: {:?}",
                s.payment
            );
        } else {
            assert_eq!(
                s.kept_charge(),
                0,
                "{id} rejected but charged: {:?}",
                s.payment
            );
            let code = s
                .order
                .rejection_reason
                .split(" (")
                .next()
                .unwrap_or_default()
                .to_owned();
            *reasons.entry(code).or_default() += 1;
        }
        *kept.entry(s.order.customer_id.clone()).or_default() += s.kept_charge();
        let shipped = s
            .shipment
            .as_ref()
            .is_some_and(|sh| sh.status() == ShipmentStatus::Created);
        assert_eq!(shipped, s.approved(), "{id}: shipment {:?}", s.shipment);
        created_shipments += usize::from(shipped);
        assert_eq!(s.notifications.len(), 1, "{id}: {:?}", s.notifications);
        let outcome = if s.approved() {
            Outcome::Approved
        } else {
            Outcome::Rejected
        };
        assert_eq!(s.notifications[0].outcome(), outcome, "{id}");
    }

    // Stock conserved: what is left plus what approved orders took.
    let left = stack.stock("sku-limited").await.expect("stock");
    assert_eq!(
        i64::from(STOCK),
        i64::from(left) + approved_units,
        "stock: {left} left, {approved_units} sold"
    );
    // Money conserved per customer; every CHARGED payment belongs to an
    // approved order.
    let mut charged_payments = 0;
    for customer in &customers {
        let balance = stack.balance(customer).await.expect("balance");
        let kept_charges = kept.get(*customer).copied().unwrap_or_default();
        assert_eq!(
            initial[*customer],
            balance + kept_charges,
            "{customer}: balance {balance}, kept charges {kept_charges}"
        );
        assert!(balance >= 0, "{customer} overdrawn: {balance}");
        charged_payments += stack
            .payments(customer)
            .await
            .expect("payments")
            .iter()
            .filter(|p| p.status() == PaymentStatus::Charged)
            .count();
    }
    assert_eq!(approved, charged_payments, "approved orders = kept charges");
    assert_eq!(
        approved, created_shipments,
        "approved orders = active shipments"
    );

    // The run exercised every way an order can lose the race.
    assert!(approved > 0, "some orders were approved: {reasons:?}");
    for code in [
        "reserve_stock: OUT_OF_STOCK",
        "charge_payment: INSUFFICIENT_FUNDS",
        "create_shipment: UNDELIVERABLE",
    ] {
        assert!(
            reasons.contains_key(code),
            "no order rejected with {code}: {reasons:?}"
        );
    }
    eprintln!(
        "{ORDERS} orders placed in {placed_in:?}, all sagas ended after {finished_in:?}: \
         {approved} approved ({approved_units} units, {left} left), rejected {reasons:?}"
    );
    stack.check_alive().expect("every process still runs");
}
