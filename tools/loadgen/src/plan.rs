//! What each order contains. The data the load generator seeds (products,
//! accounts) is named by a `Catalogue`; an order's plan picks from it so that
//! the order's kind follows from its data alone: a product with stock 0, a
//! product never created, a customer with no money, a country outside the
//! deliverable set.

use proto::order::v1 as api;

use crate::mix::{Mix, OrderKind, draw};

/// A deliverable country of the shipment service's default set, by draw.
pub const DELIVERABLE: [&str; 6] = ["GB", "DE", "FR", "NL", "SE", "US"];
/// Antarctica: a valid ISO 3166-1 code outside the deliverable set.
pub const UNDELIVERABLE: &str = "AQ";

/// Names of the seeded data, all under one prefix so that a run's products
/// and accounts never collide with anyone else's.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    pub prefix: String,
    /// Number of stocked products (`<prefix>-p00000` ..).
    pub products: u32,
    /// Number of funded customers (`<prefix>-c00000` ..).
    pub customers: u32,
}

impl Catalogue {
    pub fn product(&self, i: u32) -> String {
        format!("{}-p{i:05}", self.prefix)
    }

    /// Seeded with stock 0.
    pub fn empty_product(&self) -> String {
        format!("{}-p-empty", self.prefix)
    }

    /// Never created.
    pub fn unknown_product(&self) -> String {
        format!("{}-p-unknown", self.prefix)
    }

    pub fn customer(&self, i: u32) -> String {
        format!("{}-c{i:05}", self.prefix)
    }

    /// Seeded with balance 0.
    pub fn broke_customer(&self) -> String {
        format!("{}-c-broke", self.prefix)
    }

    pub fn stocked_products(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.products).map(|i| self.product(i))
    }

    pub fn funded_customers(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.customers).map(|i| self.customer(i))
    }
}

/// One order of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlan {
    pub index: u64,
    pub kind: OrderKind,
    pub customer_id: String,
    /// (product id, quantity); quantity is always 1.
    pub items: Vec<(String, i32)>,
    pub country_code: &'static str,
}

/// The plan of order `n`: a pure function of the seed, the mix, the
/// catalogue and `n`.
pub fn plan(seed: u64, mix: &Mix, catalogue: &Catalogue, n: u64) -> OrderPlan {
    let kind = mix.pick(draw(seed, n, 0));
    let pick = |stream: u64, count: u32| -> u32 {
        ((u128::from(draw(seed, n, stream)) * u128::from(count.max(1))) >> 64) as u32
    };
    let stocked = catalogue.product(pick(1, catalogue.products));
    let product = match kind {
        OrderKind::OutOfStock => catalogue.empty_product(),
        OrderKind::UnknownProduct => catalogue.unknown_product(),
        _ => stocked,
    };
    let customer_id = match kind {
        OrderKind::InsufficientFunds => catalogue.broke_customer(),
        _ => catalogue.customer(pick(2, catalogue.customers)),
    };
    let country_code = match kind {
        OrderKind::Undeliverable => UNDELIVERABLE,
        _ => DELIVERABLE[pick(3, DELIVERABLE.len() as u32) as usize],
    };
    OrderPlan {
        index: n,
        kind,
        customer_id,
        items: vec![(product, 1)],
        country_code,
    }
}

impl OrderPlan {
    /// The CreateOrder request; the idempotency key is `<run_id>-<index>`, so
    /// a run never replays another run's orders.
    pub fn request(&self, run_id: &str) -> api::CreateOrderRequest {
        api::CreateOrderRequest {
            customer_id: self.customer_id.clone(),
            items: self
                .items
                .iter()
                .map(|(product_id, quantity)| api::LineItem {
                    product_id: product_id.clone(),
                    quantity: *quantity,
                })
                .collect(),
            shipping_address: Some(api::Address {
                recipient: "Load Generator".to_owned(),
                line1: format!("{} Benchmark Street", self.index % 1000 + 1),
                line2: String::new(),
                city: "Testville".to_owned(),
                postal_code: format!("{:05}", self.index % 100_000),
                country_code: self.country_code.to_owned(),
            }),
            idempotency_key: format!("{run_id}-{}", self.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Catalogue {
        Catalogue {
            prefix: "lg".into(),
            products: 10,
            customers: 20,
        }
    }

    fn plan_of(kind: &str) -> OrderPlan {
        let mix: Mix = format!("{kind}=1").parse().expect("valid mix");
        plan(1, &mix, &catalogue(), 3)
    }

    #[test]
    fn each_failing_kind_fails_by_its_data_alone() {
        let happy = plan_of("happy");
        assert!(happy.items[0].0.starts_with("lg-p0000"));
        assert!(happy.customer_id.starts_with("lg-c000"));
        assert!(DELIVERABLE.contains(&happy.country_code));

        let out_of_stock = plan_of("out_of_stock");
        assert_eq!(out_of_stock.items[0].0, "lg-p-empty");
        assert_eq!(out_of_stock.customer_id, happy.customer_id);

        assert_eq!(plan_of("unknown_product").items[0].0, "lg-p-unknown");

        let broke = plan_of("insufficient_funds");
        assert_eq!(broke.customer_id, "lg-c-broke");
        assert_eq!(broke.items, happy.items);

        let undeliverable = plan_of("undeliverable");
        assert_eq!(undeliverable.country_code, "AQ");
        assert_eq!(undeliverable.items, happy.items);
    }

    #[test]
    fn orders_spread_over_every_product_and_customer() {
        let mix = Mix::all_happy();
        let catalogue = catalogue();
        let plans: Vec<_> = (0..2_000).map(|n| plan(9, &mix, &catalogue, n)).collect();
        for product in catalogue.stocked_products() {
            assert!(plans.iter().any(|p| p.items[0].0 == product), "{product}");
        }
        for customer in catalogue.funded_customers() {
            assert!(
                plans.iter().any(|p| p.customer_id == customer),
                "{customer}"
            );
        }
    }

    #[test]
    fn a_plan_is_a_pure_function_of_seed_and_index() {
        let mix: Mix = "happy=1,out_of_stock=1".parse().expect("valid mix");
        assert_eq!(
            plan(5, &mix, &catalogue(), 17),
            plan(5, &mix, &catalogue(), 17)
        );
    }

    #[test]
    fn the_request_is_one_the_order_service_accepts() {
        let request = plan_of("happy").request("run1");
        assert_eq!(request.idempotency_key, "run1-3");
        assert_eq!(request.items.len(), 1);
        assert_eq!(request.items[0].quantity, 1);
        let address = request.shipping_address.expect("address");
        assert_eq!(address.country_code.len(), 2);
        assert!(!address.recipient.is_empty() && !address.city.is_empty());
        assert!(!address.postal_code.is_empty() && address.postal_code.len() <= 20);
    }
}
