//! The inventory's gRPC API against a real PostgreSQL.

mod common;

use common::{product_request, spawn_app};
use proto::inventory::v1 as api;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread")]
async fn a_created_product_can_be_read_back() {
    let mut app = spawn_app().await;
    let created = app
        .client
        .create_product(product_request("sku-1", 1_999, "EUR", 7))
        .await
        .expect("created")
        .into_inner();
    let read = app
        .client
        .get_product(api::GetProductRequest {
            product_id: "sku-1".into(),
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(created, read);
    assert_eq!(read.name, "Product sku-1");
    assert_eq!(read.description, "A fine thing.\nTwo lines.");
    assert_eq!(
        read.unit_price,
        Some(api::Money {
            minor_units: 1_999,
            currency: "EUR".into()
        })
    );
    assert_eq!(read.stock, 7);
    assert!(read.created_at.is_some() && read.updated_at.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_product_id_gets_already_exists_and_changes_nothing() {
    let mut app = spawn_app().await;
    app.create_product("sku-1", 100, "EUR", 3).await;
    let error = app
        .client
        .create_product(product_request("sku-1", 500, "USD", 9))
        .await
        .expect_err("refused");
    assert_eq!(error.code(), Code::AlreadyExists);
    assert_eq!(app.stock("sku-1").await, 3);
    assert_eq!(app.rows("products").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_products_pages_through_the_catalogue_by_id() {
    let mut app = spawn_app().await;
    let ids = ["p-e", "p-a", "p-d", "p-b", "p-c"];
    for id in ids {
        app.create_product(id, 100, "EUR", 1).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = app
            .client
            .list_products(api::ListProductsRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.products.len() <= 2);
        seen.extend(page.products.into_iter().map(|p| p.product_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["p-a", "p-b", "p-c", "p-d", "p-e"]);

    let all = app
        .client
        .list_products(api::ListProductsRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("default page")
        .into_inner();
    assert_eq!(all.products.len(), 5, "page size 0 means the default of 20");
    assert!(all.next_page_token.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn adjust_stock_adds_and_takes_but_never_below_zero() {
    let mut app = spawn_app().await;
    app.create_product("sku-1", 100, "EUR", 3).await;
    let adjust = |delta| api::AdjustStockRequest {
        product_id: "sku-1".into(),
        delta,
    };
    let product = app
        .client
        .adjust_stock(adjust(5))
        .await
        .expect("added")
        .into_inner();
    assert_eq!(product.stock, 8);
    let product = app
        .client
        .adjust_stock(adjust(-8))
        .await
        .expect("taken")
        .into_inner();
    assert_eq!(product.stock, 0);
    let error = app
        .client
        .adjust_stock(adjust(-1))
        .await
        .expect_err("below zero");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(app.stock("sku-1").await, 0);

    let unknown = app
        .client
        .adjust_stock(api::AdjustStockRequest {
            product_id: "ghost".into(),
            delta: 1,
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_stock_adjustments_are_atomic() {
    let mut app = spawn_app().await;
    app.create_product("sku-1", 100, "EUR", 10).await;
    let calls = (0..15).map(|_| {
        let mut client = app.client.clone();
        async move {
            client
                .adjust_stock(api::AdjustStockRequest {
                    product_id: "sku-1".into(),
                    delta: -1,
                })
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::FailedPrecondition))
        .count();
    assert_eq!((ok, refused), (10, 5));
    assert_eq!(app.stock("sku-1").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_get_field_violations_and_write_nothing() {
    let mut app = spawn_app().await;
    type Edit = fn(&mut api::CreateProductRequest);
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("empty id", |r| r.product_id.clear(), "product_id"),
        (
            "oversize id",
            |r| r.product_id = "p".repeat(65),
            "product_id",
        ),
        ("odd id", |r| r.product_id = "a b".into(), "product_id"),
        ("empty name", |r| r.name.clear(), "name"),
        ("oversize name", |r| r.name = "n".repeat(201), "name"),
        ("control in name", |r| r.name = "a\nb".into(), "name"),
        (
            "oversize description",
            |r| r.description = "d".repeat(2001),
            "description",
        ),
        ("missing price", |r| r.unit_price = None, "unit_price"),
        (
            "negative price",
            |r| {
                if let Some(p) = r.unit_price.as_mut() {
                    p.minor_units = -1;
                }
            },
            "unit_price.minor_units",
        ),
        (
            "bad currency",
            |r| {
                if let Some(p) = r.unit_price.as_mut() {
                    p.currency = "eur".into();
                }
            },
            "unit_price.currency",
        ),
        ("negative stock", |r| r.stock = -1, "stock"),
    ];
    for (name, edit, field) in cases {
        let mut request = product_request("sku-1", 100, "EUR", 1);
        edit(&mut request);
        let status = app.client.create_product(request).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        let details = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{name}: no field details"));
        let fields: Vec<&str> = details
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, [field], "{name}");
    }
    assert_eq!(app.rows("products").await, 0);

    app.create_product("sku-1", 100, "EUR", 4).await;
    let status = app
        .client
        .adjust_stock(api::AdjustStockRequest {
            product_id: "sku-1".into(),
            delta: 0,
        })
        .await
        .expect_err("zero delta");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(app.stock("sku-1").await, 4);

    for (request, field) in [
        (
            api::ListProductsRequest {
                page_size: 101,
                page_token: String::new(),
            },
            "page_size",
        ),
        (
            api::ListProductsRequest {
                page_size: -1,
                page_token: String::new(),
            },
            "page_size",
        ),
        (
            api::ListProductsRequest {
                page_size: 10,
                page_token: "forged".into(),
            },
            "page_token",
        ),
    ] {
        let status = app
            .client
            .list_products(request)
            .await
            .expect_err("invalid list");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_details_bad_request().expect("details");
        assert_eq!(details.field_violations[0].field, field);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_violation_of_a_request_is_reported_at_once() {
    let mut app = spawn_app().await;
    let mut request = product_request("", 100, "EUR", -5);
    request.name.clear();
    if let Some(p) = request.unit_price.as_mut() {
        p.minor_units = -1;
        p.currency = "EURO".into();
    }
    let status = app
        .client
        .create_product(request)
        .await
        .expect_err("invalid");
    let details = status.get_details_bad_request().expect("details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "product_id",
            "name",
            "unit_price.minor_units",
            "unit_price.currency",
            "stock"
        ]
    );
    assert_eq!(app.rows("products").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_products_and_reservations_are_not_found_and_malformed_ids_invalid() {
    let mut app = spawn_app().await;
    let unknown = app
        .client
        .get_product(api::GetProductRequest {
            product_id: "ghost".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = app
        .client
        .get_product(api::GetProductRequest {
            product_id: "no such id".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let unknown = app
        .client
        .get_reservation(api::GetReservationRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = app
        .client
        .get_reservation(api::GetReservationRequest {
            order_id: "nope".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
}
