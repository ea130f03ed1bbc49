//! The orchestrator killed with SIGKILL in the middle of sagas and started
//! again: every saga resumes from its stored state and ends as it would have.
//!
//! A consumer killed with SIGKILL keeps its partitions until the broker
//! expires its session (10 s, `crates/consumer`), so a restarted consumer waits that long for
//! them; the saga's timing is set above that so the outage itself does not
//! fail any step.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::checks::{assert_one_trace, complete_trace, settle};
use e2e::ops::{order_request, saga_finished, wait_for};
use e2e::{ALL_SERVICE_NAMES, Service, Stack, StackOptions};
use futures::StreamExt as _;
use proto::notification::v1::Outcome;
use proto::orchestrator::v1::{Saga, SagaState};
use proto::order::v1::OrderStatus;
use proto::payment::v1::PaymentStatus;
use proto::shipment::v1::ShipmentStatus;

const PRICE: i64 = 1000;
const STOCK: i32 = 1000;
const BALANCE: i64 = 1_000_000;
const CUSTOMERS: [&str; 4] = ["buyer-0", "buyer-1", "buyer-2", "buyer-3"];
const ALL_DONE: Duration = Duration::from_secs(240);

/// Timing that outlasts the restarted consumers' 10 s wait for their
/// partitions: steps and re-sent commands (approve, compensations) keep
/// waiting for about two minutes.
fn options() -> StackOptions {
    StackOptions {
        step_timeout: Duration::from_secs(120),
        max_attempts: 12,
        retry_backoff_max: Duration::from_secs(15),
        ..StackOptions::default()
    }
}

async fn seed(stack: &Stack) {
    stack
        .create_product("sku-plenty", PRICE, STOCK)
        .await
        .expect("product");
    for customer in CUSTOMERS {
        stack
            .create_account(customer, BALANCE)
            .await
            .expect("account");
    }
}

async fn place(stack: &Stack, count: usize) -> Vec<(String, String)> {
    let requests = (0..count).map(|i| {
        let quantity = i32::try_from(i % 3 + 1).expect("small");
        order_request(
            CUSTOMERS[i % CUSTOMERS.len()],
            &[("sku-plenty", quantity)],
            "FR",
        )
    });
    futures::future::join_all(requests.map(|r| stack.place_order(r)))
        .await
        .into_iter()
        .map(|p| {
            let p = p.expect("order placed");
            (p.order_id, p.trace_id)
        })
        .collect()
}

async fn sagas(stack: &Stack, order_ids: &[String]) -> Vec<Option<Saga>> {
    futures::stream::iter(order_ids)
        .map(|id| async move { stack.saga(id).await.ok().flatten() })
        .buffered(16)
        .collect()
        .await
}

/// Waits (bounded) until every saga ended; all must be approved.
async fn wait_all_approved(stack: &Stack, order_ids: &[String]) {
    let deadline = Instant::now() + ALL_DONE;
    loop {
        let states = sagas(stack, order_ids).await;
        let open = states
            .iter()
            .filter(|s| !s.as_ref().is_some_and(|s| saga_finished(s.state())))
            .count();
        if open == 0 {
            for (id, saga) in order_ids.iter().zip(&states) {
                let saga = saga.as_ref().expect("saga");
                assert_eq!(saga.state(), SagaState::Approved, "{id}: {saga:?}");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} sagas still open after {ALL_DONE:?}: {:?}",
            states.iter().flatten().find(|s| !saga_finished(s.state()))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every order approved exactly once: stock and money moved once per
/// order, one shipment and one delivered notification each.
async fn assert_each_served_once(stack: &Stack, order_ids: &[String]) {
    wait_for(
        Duration::from_secs(60),
        "one delivered notification per order",
        async || {
            let mut delivered = 0;
            for customer in CUSTOMERS {
                delivered += stack
                    .notifications(customer)
                    .await?
                    .iter()
                    .filter(|n| {
                        n.delivery_state() == proto::notification::v1::DeliveryState::Delivered
                    })
                    .count();
            }
            Ok(if delivered >= order_ids.len() {
                Ok(())
            } else {
                Err(format!("{delivered} delivered"))
            })
        },
    )
    .await
    .expect("notifications delivered");
    let settled = settle(stack, order_ids).await.expect("settled");
    let mut units = 0;
    let mut spent: BTreeMap<String, i64> = BTreeMap::new();
    for s in &settled {
        let id = &s.order.order_id;
        assert_eq!(s.order.status(), OrderStatus::Approved, "{id}");
        assert_eq!(s.order.history.len(), 2, "{id}: {:?}", s.order.history);
        units += s.quantity();
        assert_eq!(
            s.kept_charge(),
            s.quantity() * PRICE,
            "{id}: {:?}",
            s.payment
        );
        *spent.entry(s.order.customer_id.clone()).or_default() += s.kept_charge();
        let shipment = s.shipment.as_ref().expect("shipment");
        assert_eq!(shipment.status(), ShipmentStatus::Created, "{id}");
        assert_eq!(s.notifications.len(), 1, "{id}: {:?}", s.notifications);
        assert_eq!(s.notifications[0].outcome(), Outcome::Approved);
    }
    assert_eq!(
        i64::from(stack.stock("sku-plenty").await.expect("stock")),
        i64::from(STOCK) - units
    );
    for customer in CUSTOMERS {
        let spent = spent.get(customer).copied().unwrap_or_default();
        assert_eq!(
            stack.balance(customer).await.expect("balance"),
            BALANCE - spent,
            "{customer}"
        );
        let charged = stack
            .payments(customer)
            .await
            .expect("payments")
            .iter()
            .filter(|p| p.status() == PaymentStatus::Charged)
            .count();
        let orders = settled
            .iter()
            .filter(|s| s.order.customer_id == customer)
            .count();
        assert_eq!(charged, orders, "{customer}: one kept charge per order");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestrator_killed_mid_flight_resumes_every_saga() {
    let stack = Stack::start(options()).await.expect("stack starts");
    seed(&stack).await;
    let placed = place(&stack, 30).await;
    let order_ids: Vec<String> = placed.iter().map(|(id, _)| id.clone()).collect();

    // Kill it as soon as the first saga ended, with the others in flight.
    let in_flight = wait_for(
        Duration::from_secs(60),
        "the first saga to end",
        async || {
            let states = sagas(&stack, &order_ids).await;
            let done = states
                .iter()
                .flatten()
                .filter(|s| saga_finished(s.state()))
                .count();
            Ok(if done > 0 {
                Ok(order_ids.len() - done)
            } else {
                Err("none ended".to_owned())
            })
        },
    )
    .await
    .expect("sagas running");
    stack
        .kill(Service::Orchestrator)
        .await
        .expect("orchestrator killed");
    assert!(in_flight > 0, "the kill caught sagas in flight");
    let unfinished = sagas(&stack, &order_ids)
        .await
        .iter()
        .filter(|s| !s.as_ref().is_some_and(|s| saga_finished(s.state())))
        .count();
    assert!(unfinished > 0, "some sagas were cut off by the kill");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack
        .start_service(Service::Orchestrator)
        .await
        .expect("orchestrator restarted");

    wait_all_approved(&stack, &order_ids).await;
    assert_each_served_once(&stack, &order_ids).await;
    stack.check_alive().expect("every process still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn sagas_parked_on_a_dead_shipment_service_survive_an_orchestrator_kill() {
    let stack = Stack::start(options()).await.expect("stack starts");
    seed(&stack).await;
    stack
        .kill(Service::Shipment)
        .await
        .expect("shipment killed");
    let placed = place(&stack, 6).await;
    let order_ids: Vec<String> = placed.iter().map(|(id, _)| id.clone()).collect();

    wait_for(
        Duration::from_secs(60),
        "every saga parked on create_shipment",
        async || {
            let states = sagas(&stack, &order_ids).await;
            let parked =
                states.iter().flatten().all(|s| {
                    s.state() == SagaState::Running && s.current_step == "create_shipment"
                }) && states.iter().all(Option::is_some);
            Ok(if parked {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    states
                        .iter()
                        .map(|s| s.as_ref().map(|s| (s.state(), s.current_step.clone())))
                        .collect::<Vec<_>>()
                ))
            })
        },
    )
    .await
    .expect("sagas parked");
    // Let the orchestrator's spans so far reach Jaeger, then kill it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack
        .kill(Service::Orchestrator)
        .await
        .expect("orchestrator killed");
    stack
        .start_service(Service::Shipment)
        .await
        .expect("shipment restarted");
    stack
        .start_service(Service::Orchestrator)
        .await
        .expect("orchestrator restarted");

    wait_all_approved(&stack, &order_ids).await;
    assert_each_served_once(&stack, &order_ids).await;

    // The resumed saga stays in its trace.
    let (order_id, trace_id) = &placed[0];
    let trace = complete_trace(
        trace_id,
        &ALL_SERVICE_NAMES,
        &["saga create_shipment", "saga approve_order"],
    )
    .await
    .expect("trace complete");
    assert_one_trace(&trace, order_id, &ALL_SERVICE_NAMES)
        .await
        .expect("one trace");
    stack.check_alive().expect("every process still runs");
}
