//! The payment gRPC API against a real PostgreSQL (and Kafka for the
//! payments the saga makes).

mod common;

use common::{Reply, eur, money, order_id, spawn_app};
use proto::payment::v1 as api;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread")]
async fn an_account_is_created_topped_up_and_read_back() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let created = app.open_account("customer-1", 500).await;
    assert_eq!(created.customer_id, "customer-1");
    assert_eq!(created.balance, Some(money(500, "EUR")));
    assert!(created.created_at.is_some());

    let topped = client
        .top_up(api::TopUpRequest {
            customer_id: "customer-1".into(),
            amount: Some(money(250, "EUR")),
        })
        .await
        .expect("topped up")
        .into_inner();
    assert_eq!(topped.balance, Some(money(750, "EUR")));

    let read = client
        .get_account(api::GetAccountRequest {
            customer_id: "customer-1".into(),
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(read, topped);

    let unknown = client
        .get_account(api::GetAccountRequest {
            customer_id: "nobody".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_can_open_only_one_account() {
    let app = spawn_app().await;
    app.open_account("customer-1", 500).await;
    let error = app
        .client
        .clone()
        .create_account(api::CreateAccountRequest {
            customer_id: "customer-1".into(),
            initial_balance: Some(money(9999, "USD")),
        })
        .await
        .expect_err("duplicate");
    assert_eq!(error.code(), Code::AlreadyExists);
    assert_eq!(app.balance("customer-1").await, 500);
    assert_eq!(app.rows("accounts").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_top_up_in_another_currency_or_beyond_the_maximum_is_refused() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    app.open_account("customer-1", 500).await;
    let top_up = |customer: &str, amount| api::TopUpRequest {
        customer_id: customer.into(),
        amount: Some(amount),
    };
    let other_currency = client
        .top_up(top_up("customer-1", money(10, "USD")))
        .await
        .expect_err("currency");
    assert_eq!(other_currency.code(), Code::FailedPrecondition);
    let overflow = client
        .top_up(top_up("customer-1", money(i64::MAX, "EUR")))
        .await
        .expect_err("overflow");
    assert_eq!(overflow.code(), Code::FailedPrecondition);
    let unknown = client
        .top_up(top_up("nobody", money(10, "EUR")))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(app.balance("customer-1").await, 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_top_ups_all_count() {
    let app = spawn_app().await;
    app.open_account("customer-1", 0).await;
    let calls = (0..20).map(|_| {
        let mut client = app.client.clone();
        async move {
            client
                .top_up(api::TopUpRequest {
                    customer_id: "customer-1".into(),
                    amount: Some(money(5, "EUR")),
                })
                .await
        }
    });
    for result in futures::future::join_all(calls).await {
        result.expect("every top-up succeeds");
    }
    assert_eq!(app.balance("customer-1").await, 100);
}

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|details| {
            details
                .field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_get_field_violations_and_write_nothing() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let create = |customer: &str, balance: Option<api::Money>| api::CreateAccountRequest {
        customer_id: customer.into(),
        initial_balance: balance,
    };
    let create_cases: Vec<(&str, api::CreateAccountRequest, Vec<&str>)> = vec![
        (
            "empty customer",
            create("", Some(money(1, "EUR"))),
            vec!["customer_id"],
        ),
        (
            "oversize customer",
            create(&"c".repeat(65), Some(money(1, "EUR"))),
            vec!["customer_id"],
        ),
        (
            "odd characters",
            create("bob smith", Some(money(1, "EUR"))),
            vec!["customer_id"],
        ),
        (
            "missing balance",
            create("customer-1", None),
            vec!["initial_balance"],
        ),
        (
            "negative balance",
            create("customer-1", Some(money(-1, "EUR"))),
            vec!["initial_balance.minor_units"],
        ),
        (
            "bad currency",
            create("customer-1", Some(money(1, "eur"))),
            vec!["initial_balance.currency"],
        ),
        (
            "everything wrong",
            create("", Some(money(-1, "EURO"))),
            vec![
                "customer_id",
                "initial_balance.minor_units",
                "initial_balance.currency",
            ],
        ),
    ];
    for (name, request, expected) in create_cases {
        let status = client.create_account(request).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert_eq!(fields(&status), expected, "{name}");
    }
    assert_eq!(app.rows("accounts").await, 0);

    app.open_account("customer-1", 100).await;
    let top_up = |amount: Option<api::Money>| api::TopUpRequest {
        customer_id: "customer-1".into(),
        amount,
    };
    let top_up_cases: Vec<(&str, api::TopUpRequest, Vec<&str>)> = vec![
        ("missing amount", top_up(None), vec!["amount"]),
        (
            "zero amount",
            top_up(Some(money(0, "EUR"))),
            vec!["amount.minor_units"],
        ),
        (
            "negative amount",
            top_up(Some(money(-10, "EUR"))),
            vec!["amount.minor_units"],
        ),
        (
            "bad currency",
            top_up(Some(money(10, "E1R"))),
            vec!["amount.currency"],
        ),
    ];
    for (name, request, expected) in top_up_cases {
        let status = client.top_up(request).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert_eq!(fields(&status), expected, "{name}");
    }
    assert_eq!(app.balance("customer-1").await, 100);

    let list = client
        .list_payments(api::ListPaymentsRequest {
            customer_id: String::new(),
            page_size: 101,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("invalid list");
    assert_eq!(fields(&list), ["customer_id", "page_size", "page_token"]);
    let get = client
        .get_payment(api::GetPaymentRequest {
            order_id: "nope".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(fields(&get), ["order_id"]);
    let account = client
        .get_account(api::GetAccountRequest {
            customer_id: "bad id".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(fields(&account), ["customer_id"]);
    assert_eq!(app.rows("accounts").await, 1);
    assert_eq!(app.rows("payments").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_payment_of_an_order_never_charged_is_not_found() {
    let app = spawn_app().await;
    let error = app
        .client
        .clone()
        .get_payment(api::GetPaymentRequest {
            order_id: order_id(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(error.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_payments_pages_through_a_customers_payments_newest_first() {
    let app = spawn_app().await;
    app.open_account("customer-1", 1000).await;
    app.open_account("customer-2", 1000).await;
    // One at a time, so that their order is known.
    let mut created = Vec::new();
    for seen in 0..22 {
        let order = order_id();
        app.charge(&order, "customer-1", Some(eur(1))).await;
        let reply = app.next_reply(seen).await;
        assert!(matches!(reply, Reply::Processed(_)), "{reply:?}");
        created.push(order);
    }
    app.charge(&order_id(), "customer-2", Some(eur(1))).await;
    app.wait_for_replies(23).await;

    let mut client = app.client.clone();
    let default_page = client
        .list_payments(api::ListPaymentsRequest {
            customer_id: "customer-1".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(default_page.payments.len(), 20);
    assert!(!default_page.next_page_token.is_empty());

    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..20 {
        let page = client
            .list_payments(api::ListPaymentsRequest {
                customer_id: "customer-1".into(),
                page_size: 5,
                page_token: token.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.payments.len() <= 5);
        assert!(page.payments.iter().all(|p| p.customer_id == "customer-1"));
        seen.extend(page.payments.into_iter().map(|p| p.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    created.reverse();
    assert_eq!(seen, created);
}
