//! Seeding over the public gRPC APIs of inventory and payment: the stocked
//! products and the empty one, the funded customers and the broke one.
//! Idempotent: existing products are brought up to the stock and existing
//! accounts up to the balance asked for; the empty product is brought down
//! to 0.

use anyhow::Context as _;
use futures::StreamExt as _;
use proto::inventory::v1 as inv;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::payment::v1 as pay;
use proto::payment::v1::payment_service_client::PaymentServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::cli::{DataArgs, Endpoints};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct SeedSummary {
    pub products_created: u64,
    pub products_topped_up: u64,
    pub products_ready: u64,
    pub accounts_created: u64,
    pub accounts_topped_up: u64,
    pub accounts_ready: u64,
    pub warnings: Vec<String>,
}

impl std::fmt::Display for SeedSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "products: {} created, {} topped up, {} already enough; accounts: {} created, {} topped up, {} already enough",
            self.products_created,
            self.products_topped_up,
            self.products_ready,
            self.accounts_created,
            self.accounts_topped_up,
            self.accounts_ready
        )?;
        for warning in &self.warnings {
            write!(f, "\nwarning: {warning}")?;
        }
        Ok(())
    }
}

enum Done {
    Created,
    ToppedUp,
    Ready,
}

pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("bad address {addr}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

async fn product(
    mut client: InventoryServiceClient<Channel>,
    data: DataArgs,
    product_id: String,
    stock: i32,
) -> Result<Done, Status> {
    let created = client
        .create_product(inv::CreateProductRequest {
            product_id: product_id.clone(),
            name: format!("Load test product {product_id}"),
            description: "created by loadgen seed".to_owned(),
            unit_price: Some(inv::Money {
                minor_units: data.unit_price_minor,
                currency: data.currency.clone(),
            }),
            stock,
        })
        .await;
    match created {
        Ok(_) => return Ok(Done::Created),
        Err(status) if status.code() == Code::AlreadyExists => {}
        Err(status) => return Err(status),
    }
    let current = client
        .get_product(inv::GetProductRequest {
            product_id: product_id.clone(),
        })
        .await?
        .into_inner();
    // The stocked products only ever go up; the empty one down to exactly 0.
    let delta = if stock == 0 {
        -current.stock
    } else {
        (stock - current.stock).max(0)
    };
    if delta == 0 {
        return Ok(Done::Ready);
    }
    client
        .adjust_stock(inv::AdjustStockRequest { product_id, delta })
        .await?;
    Ok(Done::ToppedUp)
}

async fn account(
    mut client: PaymentServiceClient<Channel>,
    data: DataArgs,
    customer_id: String,
    balance: i64,
) -> Result<Done, Status> {
    let money = |minor_units| pay::Money {
        minor_units,
        currency: data.currency.clone(),
    };
    let created = client
        .create_account(pay::CreateAccountRequest {
            customer_id: customer_id.clone(),
            initial_balance: Some(money(balance)),
        })
        .await;
    match created {
        Ok(_) => return Ok(Done::Created),
        Err(status) if status.code() == Code::AlreadyExists => {}
        Err(status) => return Err(status),
    }
    let current = client
        .get_account(pay::GetAccountRequest {
            customer_id: customer_id.clone(),
        })
        .await?
        .into_inner();
    let have = current.balance.map_or(0, |m| m.minor_units);
    if have >= balance {
        return Ok(Done::Ready);
    }
    client
        .top_up(pay::TopUpRequest {
            customer_id,
            amount: Some(money(balance - have)),
        })
        .await?;
    Ok(Done::ToppedUp)
}

fn tally(done: Done, created: &mut u64, topped: &mut u64, ready: &mut u64) {
    match done {
        Done::Created => *created += 1,
        Done::ToppedUp => *topped += 1,
        Done::Ready => *ready += 1,
    }
}

pub async fn seed(
    endpoints: &Endpoints,
    data: &DataArgs,
    concurrency: usize,
) -> anyhow::Result<SeedSummary> {
    endpoints.check_loopback()?;
    let catalogue = data.catalogue();
    let inventory = InventoryServiceClient::new(connect(&endpoints.inventory_addr).await?);
    let payment = PaymentServiceClient::new(connect(&endpoints.payment_addr).await?);
    let mut summary = SeedSummary::default();

    let mut products: Vec<(String, i32)> = catalogue
        .stocked_products()
        .map(|p| (p, data.stock))
        .collect();
    products.push((catalogue.empty_product(), 0));
    let mut results = futures::stream::iter(products.into_iter().map(|(id, stock)| {
        let client = inventory.clone();
        let data = data.clone();
        async move {
            let result = product(client, data, id.clone(), stock).await;
            (id, result)
        }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((id, result)) = results.next().await {
        let done =
            result.map_err(|s| anyhow::anyhow!("product {id}: {} {}", s.code(), s.message()))?;
        tally(
            done,
            &mut summary.products_created,
            &mut summary.products_topped_up,
            &mut summary.products_ready,
        );
    }

    let mut accounts: Vec<(String, i64)> = catalogue
        .funded_customers()
        .map(|c| (c, data.balance_minor))
        .collect();
    accounts.push((catalogue.broke_customer(), 0));
    let mut results = futures::stream::iter(accounts.into_iter().map(|(id, balance)| {
        let client = payment.clone();
        let data = data.clone();
        async move {
            let result = account(client, data, id.clone(), balance).await;
            (id, result)
        }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((id, result)) = results.next().await {
        let done =
            result.map_err(|s| anyhow::anyhow!("account {id}: {} {}", s.code(), s.message()))?;
        tally(
            done,
            &mut summary.accounts_created,
            &mut summary.accounts_topped_up,
            &mut summary.accounts_ready,
        );
    }

    // The broke customer must stay broke; the API has no withdrawal.
    let broke = payment
        .clone()
        .get_account(pay::GetAccountRequest {
            customer_id: catalogue.broke_customer(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("account {}: {s}", catalogue.broke_customer()))?
        .into_inner();
    let left = broke.balance.map_or(0, |m| m.minor_units);
    if left >= data.unit_price_minor {
        summary.warnings.push(format!(
            "{} has a balance of {left}: its orders will not all fail with insufficient funds (use another --data-prefix)",
            catalogue.broke_customer()
        ));
    }
    Ok(summary)
}
