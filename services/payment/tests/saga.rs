//! The saga's payment commands through the real consumer: ProcessPayment and
//! RefundPayment produced to `{prefix}payment.commands.v1`, replies read from
//! the service's outbox.

mod common;

use common::{LIMIT, Reply, eur, failed, order_id, spawn_app};
use proto::messages::v1::{self as msg, PaymentFailure};
use proto::payment::v1 as api;
use std::collections::{BTreeMap, BTreeSet};

#[tokio::test(flavor = "multi_thread")]
async fn a_charge_takes_the_amount_from_the_balance_and_replies_with_the_payment_id() {
    let app = spawn_app().await;
    app.open_account("alice", 1000).await;
    let order = order_id();
    app.charge(&order, "alice", Some(eur(300))).await;

    let Reply::Processed(processed) = app.next_reply(0).await else {
        panic!("the charge is processed");
    };
    assert_eq!(processed.order_id, order);
    assert_eq!(processed.amount, Some(eur(300)));
    let payment_id = uuid::Uuid::parse_str(&processed.payment_id).expect("a UUID");
    assert_eq!(payment_id.get_version_num(), 7);
    assert_eq!(app.balance("alice").await, 700);

    let payment = app.payment(&order).await;
    assert_eq!(payment.payment_id, processed.payment_id);
    assert_eq!(payment.status(), api::PaymentStatus::Charged);
    assert_eq!(payment.customer_id, "alice");
    assert_eq!(payment.amount, Some(common::money(300, "EUR")));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_decline_reason_leaves_the_balance_unchanged() {
    let app = spawn_app().await;
    app.open_account("bob", 1000).await;
    // The limit is checked before the funds: over the limit and over the
    // balance is LIMIT_EXCEEDED.
    let cases = [
        ("nobody", eur(10), PaymentFailure::AccountNotFound),
        ("bob", eur(LIMIT + 1), PaymentFailure::LimitExceeded),
        (
            "bob",
            msg::Money {
                minor_units: 10,
                currency: "USD".into(),
            },
            PaymentFailure::CurrencyMismatch,
        ),
        ("bob", eur(1001), PaymentFailure::InsufficientFunds),
    ];
    for (seen, (customer, amount, reason)) in cases.into_iter().enumerate() {
        let order = order_id();
        app.charge(&order, customer, Some(amount)).await;
        assert_eq!(
            app.next_reply(seen).await,
            failed(&order, reason),
            "{reason:?}"
        );
        assert_eq!(app.balance("bob").await, 1000, "{reason:?}");
        let payment = app.payment(&order).await;
        assert_eq!(payment.status(), api::PaymentStatus::Declined);
        assert_eq!(
            payment.failure_reason,
            reason.as_str_name().trim_start_matches("PAYMENT_FAILURE_")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_charge_is_answered_the_same_way_and_charges_once() {
    let app = spawn_app().await;
    app.open_account("carol", 1000).await;
    let charged = order_id();
    app.charge(&charged, "carol", Some(eur(400))).await;
    let first = app.next_reply(0).await;
    assert!(matches!(first, Reply::Processed(_)), "{first:?}");
    app.charge(&charged, "carol", Some(eur(400))).await;
    assert_eq!(app.next_reply(1).await, first);
    assert_eq!(app.balance("carol").await, 600);

    // A declined order stays declined even once the balance would cover it.
    let declined = order_id();
    app.charge(&declined, "carol", Some(eur(900))).await;
    let refusal = app.next_reply(2).await;
    assert_eq!(
        refusal,
        failed(&declined, PaymentFailure::InsufficientFunds)
    );
    app.client
        .clone()
        .top_up(api::TopUpRequest {
            customer_id: "carol".into(),
            amount: Some(common::money(1000, "EUR")),
        })
        .await
        .expect("topped up");
    app.charge(&declined, "carol", Some(eur(900))).await;
    assert_eq!(app.next_reply(3).await, refusal);
    assert_eq!(app.balance("carol").await, 1600);
    assert_eq!(app.rows("payments").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refund_restores_exactly_the_charge_only_once() {
    let app = spawn_app().await;
    app.open_account("dave", 1000).await;
    let order = order_id();
    app.charge(&order, "dave", Some(eur(250))).await;
    app.refund(&order).await;
    app.refund(&order).await;
    let replies = app.wait_for_replies(3).await;
    assert!(matches!(replies[0], Reply::Processed(_)), "{replies:?}");
    let refunded = Reply::Refunded(msg::PaymentRefunded {
        order_id: order.clone(),
    });
    assert_eq!(replies[1..], [refunded.clone(), refunded]);
    assert_eq!(app.balance("dave").await, 1000);
    assert_eq!(
        app.payment(&order).await.status(),
        api::PaymentStatus::Refunded
    );

    // A charge re-sent after the refund takes nothing.
    app.charge(&order, "dave", Some(eur(250))).await;
    assert_eq!(
        app.next_reply(3).await,
        failed(&order, PaymentFailure::OrderRefunded)
    );
    assert_eq!(app.balance("dave").await, 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refund_of_a_declined_charge_gives_nothing_back() {
    let app = spawn_app().await;
    app.open_account("erin", 100).await;
    let order = order_id();
    app.charge(&order, "erin", Some(eur(500))).await;
    app.refund(&order).await;
    let replies = app.wait_for_replies(2).await;
    assert_eq!(
        replies[0],
        failed(&order, PaymentFailure::InsufficientFunds)
    );
    assert!(matches!(replies[1], Reply::Refunded(_)), "{replies:?}");
    assert_eq!(app.balance("erin").await, 100);
    assert_eq!(
        app.payment(&order).await.status(),
        api::PaymentStatus::Declined
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refund_before_any_charge_leaves_a_tombstone_that_refuses_a_late_charge() {
    let app = spawn_app().await;
    app.open_account("frank", 1000).await;
    let order = order_id();
    app.refund(&order).await;
    assert_eq!(
        app.next_reply(0).await,
        Reply::Refunded(msg::PaymentRefunded {
            order_id: order.clone()
        })
    );
    let tombstone = app.payment(&order).await;
    assert_eq!(tombstone.status(), api::PaymentStatus::Tombstone);
    assert_eq!(tombstone.customer_id, "");

    app.charge(&order, "frank", Some(eur(100))).await;
    assert_eq!(
        app.next_reply(1).await,
        failed(&order, PaymentFailure::OrderRefunded)
    );
    assert_eq!(app.balance("frank").await, 1000);
    assert_eq!(
        app.payment(&order).await.status(),
        api::PaymentStatus::Tombstone
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_charge_without_a_positive_amount_is_dead_lettered_and_the_partition_moves_on() {
    let app = spawn_app().await;
    app.open_account("gina", 1000).await;
    // One order, so one key and one partition: the valid charge comes after
    // the invalid ones.
    let order = order_id();
    app.charge(&order, "gina", Some(eur(0))).await;
    app.charge(&order, "gina", Some(eur(-5))).await;
    app.charge(&order, "gina", None).await;
    app.charge(&order, "gina", Some(eur(10))).await;
    let replies = app.wait_for_replies(1).await;
    assert_eq!(app.rows("dead_letters").await, 3);
    assert_eq!(replies.len(), 1);
    assert!(
        matches!(&replies[0], Reply::Processed(p) if p.order_id == order),
        "{replies:?}"
    );
    assert_eq!(app.balance("gina").await, 990);
    assert_eq!(app.rows("payments").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_charges_never_overdraw() {
    let app = spawn_app().await;
    app.open_account("henry", 1000).await;
    let orders: Vec<String> = (0..25).map(|_| order_id()).collect();
    futures::future::join_all(
        orders
            .iter()
            .map(|order| app.charge(order, "henry", Some(eur(100)))),
    )
    .await;

    let replies = app.wait_for_replies(25).await;
    let answered: BTreeMap<&str, usize> = replies.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.order_id()).or_default() += 1;
        m
    });
    let sent: BTreeSet<&str> = orders.iter().map(String::as_str).collect();
    assert_eq!(answered.keys().copied().collect::<BTreeSet<_>>(), sent);
    assert!(answered.values().all(|n| *n == 1), "{answered:?}");
    let charged = replies
        .iter()
        .filter(|r| matches!(r, Reply::Processed(_)))
        .count();
    let refused = replies
        .iter()
        .filter(|r| **r == failed(r.order_id(), PaymentFailure::InsufficientFunds))
        .count();
    assert_eq!((charged, refused), (10, 15));
    assert_eq!(app.balance("henry").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn money_is_conserved_under_concurrent_charges_refunds_and_top_ups() {
    let app = spawn_app().await;
    app.open_account("iris", 1000).await;
    let orders: Vec<String> = (0..30).map(|_| order_id()).collect();
    let charges = futures::future::join_all(
        orders
            .iter()
            .map(|order| app.charge(order, "iris", Some(eur(100)))),
    );
    let refunds = futures::future::join_all(orders.iter().step_by(3).map(|o| app.refund(o)));
    let top_ups = futures::future::join_all((0..5).map(|_| {
        let mut client = app.client.clone();
        async move {
            client
                .top_up(api::TopUpRequest {
                    customer_id: "iris".into(),
                    amount: Some(common::money(200, "EUR")),
                })
                .await
                .expect("topped up");
        }
    }));
    tokio::join!(charges, refunds, top_ups);

    let replies = app.wait_for_replies(40).await;
    assert_eq!(replies.len(), 40);
    let kept: i64 = {
        let (payments, _) = list_all(&app, "iris").await;
        payments
            .iter()
            .filter(|p| p.status() == api::PaymentStatus::Charged)
            .map(|p| p.amount.as_ref().map_or(0, |a| a.minor_units))
            .sum()
    };
    let balance = app.balance("iris").await;
    assert!(balance >= 0);
    assert_eq!(balance + kept, 1000 + 5 * 200);
    // Every refunded order is left without a kept charge.
    for order in orders.iter().step_by(3) {
        let status = app.payment(order).await.status();
        assert_ne!(status, api::PaymentStatus::Charged, "{order}");
    }
}

async fn list_all(app: &common::TestApp, customer_id: &str) -> (Vec<api::Payment>, usize) {
    let mut payments = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    for _ in 0..100 {
        let page = app
            .client
            .clone()
            .list_payments(api::ListPaymentsRequest {
                customer_id: customer_id.into(),
                page_size: 100,
                page_token: token.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        payments.extend(page.payments);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    (payments, pages)
}
