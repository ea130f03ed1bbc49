//! What scenarios do with a stack: seed products and accounts, place
//! orders, and read back every service's view of an order.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use proto::inventory::v1 as inventory;
use proto::notification::v1 as notification;
use proto::orchestrator::v1 as orchestrator;
use proto::order::v1 as order;
use proto::payment::v1 as payment;
use proto::shipment::v1 as shipment;
use tonic::Code;

use crate::stack::Stack;

pub const CURRENCY: &str = "EUR";

/// A product line of an order: product id and quantity.
pub type Line<'a> = (&'a str, i32);

pub fn address(country_code: &str) -> order::Address {
    order::Address {
        recipient: "Grace Hopper".into(),
        line1: "1 Compiler Road".into(),
        line2: String::new(),
        city: "Arlington".into(),
        postal_code: "22201".into(),
        country_code: country_code.into(),
    }
}

pub fn order_request(
    customer_id: &str,
    lines: &[Line<'_>],
    country_code: &str,
) -> order::CreateOrderRequest {
    order::CreateOrderRequest {
        customer_id: customer_id.into(),
        items: lines
            .iter()
            .map(|(product_id, quantity)| order::LineItem {
                product_id: (*product_id).into(),
                quantity: *quantity,
            })
            .collect(),
        shipping_address: Some(address(country_code)),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
    }
}

/// Whether a saga state is final.
pub fn saga_finished(state: orchestrator::SagaState) -> bool {
    matches!(
        state,
        orchestrator::SagaState::Approved
            | orchestrator::SagaState::Rejected
            | orchestrator::SagaState::NeedsAttention
    )
}

/// Polls `check` every 100 ms until it yields a value, for at most `timeout`;
/// the error names `what` and the last observation.
pub async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Result<T, String>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(observed)) => observed,
            Err(error) => format!("error: {error:#}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Stack {
    pub async fn create_product(
        &self,
        product_id: &str,
        price_minor: i64,
        stock: i32,
    ) -> anyhow::Result<()> {
        self.inventory()
            .create_product(inventory::CreateProductRequest {
                product_id: product_id.into(),
                name: format!("Product {product_id}"),
                description: String::new(),
                unit_price: Some(inventory::Money {
                    minor_units: price_minor,
                    currency: CURRENCY.into(),
                }),
                stock,
            })
            .await
            .with_context(|| format!("CreateProduct {product_id}"))?;
        Ok(())
    }

    pub async fn create_account(
        &self,
        customer_id: &str,
        balance_minor: i64,
    ) -> anyhow::Result<()> {
        self.payment()
            .create_account(payment::CreateAccountRequest {
                customer_id: customer_id.into(),
                initial_balance: Some(payment::Money {
                    minor_units: balance_minor,
                    currency: CURRENCY.into(),
                }),
            })
            .await
            .with_context(|| format!("CreateAccount {customer_id}"))?;
        Ok(())
    }

    /// Places an order with a sampled trace of its own; returns the order id
    /// and its trace id.
    pub async fn place_order(
        &self,
        request: order::CreateOrderRequest,
    ) -> anyhow::Result<order::CreateOrderResponse> {
        let created = self
            .order_traced()
            .create_order(request)
            .await
            .context("CreateOrder")?
            .into_inner();
        anyhow::ensure!(
            created.trace_id.len() == 32,
            "CreateOrder returned no trace id: {created:?}"
        );
        Ok(created)
    }

    pub async fn get_order(&self, order_id: &str) -> anyhow::Result<order::Order> {
        Ok(self
            .order()
            .get_order(order::GetOrderRequest {
                order_id: order_id.into(),
            })
            .await
            .with_context(|| format!("GetOrder {order_id}"))?
            .into_inner())
    }

    pub async fn stock(&self, product_id: &str) -> anyhow::Result<i32> {
        Ok(self
            .inventory()
            .get_product(inventory::GetProductRequest {
                product_id: product_id.into(),
            })
            .await
            .with_context(|| format!("GetProduct {product_id}"))?
            .into_inner()
            .stock)
    }

    /// The account's balance in minor units.
    pub async fn balance(&self, customer_id: &str) -> anyhow::Result<i64> {
        let account = self
            .payment()
            .get_account(payment::GetAccountRequest {
                customer_id: customer_id.into(),
            })
            .await
            .with_context(|| format!("GetAccount {customer_id}"))?
            .into_inner();
        Ok(account.balance.map(|m| m.minor_units).unwrap_or_default())
    }

    /// The order's payment, if the payment service has a record of it.
    pub async fn payment_of(&self, order_id: &str) -> anyhow::Result<Option<payment::Payment>> {
        match self
            .payment()
            .get_payment(payment::GetPaymentRequest {
                order_id: order_id.into(),
            })
            .await
        {
            Ok(found) => Ok(Some(found.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status).with_context(|| format!("GetPayment {order_id}")),
        }
    }

    /// The order's shipment, if the shipment service has a record of it.
    pub async fn shipment_of(&self, order_id: &str) -> anyhow::Result<Option<shipment::Shipment>> {
        match self
            .shipment()
            .get_shipment(shipment::GetShipmentRequest {
                order_id: order_id.into(),
            })
            .await
        {
            Ok(found) => Ok(Some(found.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status).with_context(|| format!("GetShipment {order_id}")),
        }
    }

    /// The order's reservation, if the inventory service has a record of it.
    pub async fn reservation_of(
        &self,
        order_id: &str,
    ) -> anyhow::Result<Option<inventory::Reservation>> {
        match self
            .inventory()
            .get_reservation(inventory::GetReservationRequest {
                order_id: order_id.into(),
            })
            .await
        {
            Ok(found) => Ok(Some(found.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status).with_context(|| format!("GetReservation {order_id}")),
        }
    }

    pub async fn saga(&self, order_id: &str) -> anyhow::Result<Option<orchestrator::Saga>> {
        match self
            .orchestrator()
            .get_saga(orchestrator::GetSagaRequest {
                order_id: order_id.into(),
            })
            .await
        {
            Ok(found) => Ok(Some(found.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status).with_context(|| format!("GetSaga {order_id}")),
        }
    }

    /// Every notification of the customer, across pages.
    pub async fn notifications(
        &self,
        customer_id: &str,
    ) -> anyhow::Result<Vec<notification::Notification>> {
        let mut all = Vec::new();
        let mut token = String::new();
        for _ in 0..1000 {
            let page = self
                .notification()
                .list_notifications(notification::ListNotificationsRequest {
                    customer_id: customer_id.into(),
                    page_size: 100,
                    page_token: token.clone(),
                })
                .await
                .with_context(|| format!("ListNotifications {customer_id}"))?
                .into_inner();
            all.extend(page.notifications);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
        anyhow::bail!("ListNotifications {customer_id} did not end after 1000 pages")
    }

    /// Every payment of the customer, across pages.
    pub async fn payments(&self, customer_id: &str) -> anyhow::Result<Vec<payment::Payment>> {
        let mut all = Vec::new();
        let mut token = String::new();
        for _ in 0..1000 {
            let page = self
                .payment()
                .list_payments(payment::ListPaymentsRequest {
                    customer_id: customer_id.into(),
                    page_size: 100,
                    page_token: token.clone(),
                })
                .await
                .with_context(|| format!("ListPayments {customer_id}"))?
                .into_inner();
            all.extend(page.payments);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
        anyhow::bail!("ListPayments {customer_id} did not end after 1000 pages")
    }

    /// Waits until the order's saga has finished and the order is no longer
    /// PENDING; returns both.
    pub async fn wait_finished(
        &self,
        order_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<(order::Order, orchestrator::Saga)> {
        wait_for(
            timeout,
            &format!("order {order_id} to finish"),
            async || {
                let saga = self.saga(order_id).await?;
                let order = self.get_order(order_id).await?;
                match saga {
                    Some(saga)
                        if saga_finished(saga.state())
                            && order.status() != order::OrderStatus::Pending =>
                    {
                        Ok(Ok((order, saga)))
                    }
                    saga => Ok(Err(format!(
                        "order {:?}, saga {:?}",
                        order.status(),
                        saga.map(|s| (s.state(), s.current_step, s.failure_reason))
                    ))),
                }
            },
        )
        .await
    }

    /// Waits until the customer has `count` notifications for `order_id`, all
    /// delivered (or, with no webhook, recorded); returns them.
    pub async fn wait_notified(
        &self,
        customer_id: &str,
        order_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<notification::Notification>> {
        wait_for(
            timeout,
            &format!("a delivered notification of {order_id}"),
            async || {
                let found: Vec<_> = self
                    .notifications(customer_id)
                    .await?
                    .into_iter()
                    .filter(|n| n.order_id == order_id)
                    .collect();
                let settled = !found.is_empty()
                    && found.iter().all(|n| {
                        matches!(
                            n.delivery_state(),
                            notification::DeliveryState::Delivered
                                | notification::DeliveryState::NotConfigured
                        )
                    });
                if settled {
                    Ok(Ok(found))
                } else {
                    Ok(Err(format!("{found:?}")))
                }
            },
        )
        .await
    }
}
