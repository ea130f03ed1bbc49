//! Assertions shared by the scenarios: one trace per saga, and the
//! bookkeeping of many orders (stock, money, shipments, notifications).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context as _;
use proto::notification::v1 as notification;
use proto::order::v1 as order;
use proto::payment::v1 as payment;
use proto::shipment::v1 as shipment;

use crate::jaeger::{Trace, find_traces, wait_trace};
use crate::stack::Stack;

/// How long spans get to arrive in Jaeger.
pub const TRACE_WAIT: Duration = Duration::from_secs(60);

/// Waits until trace `trace_id` has spans of every service in `services`,
/// every operation in `operations`, and no span whose parent is missing.
pub async fn complete_trace(
    trace_id: &str,
    services: &[&str],
    operations: &[&str],
) -> anyhow::Result<Trace> {
    wait_trace(trace_id, TRACE_WAIT, |trace| {
        services.iter().all(|s| trace.has_service(s))
            && operations.iter().all(|o| trace.has_operation(o))
            && trace.orphans().is_empty()
    })
    .await
}

/// The saga of `order_id` is one trace: exactly one root span (the
/// CreateOrder call), no span with a missing parent, and no trace other than
/// `trace_id` with a span of any of `services` about this order (tagged with
/// its id or keyed by it on Kafka).
pub async fn assert_one_trace(
    trace: &Trace,
    order_id: &str,
    services: &[&str],
) -> anyhow::Result<()> {
    let roots = trace.roots();
    anyhow::ensure!(
        roots.len() == 1,
        "trace {} has {} root spans: {:?}\n{}",
        trace.trace_id,
        roots.len(),
        roots
            .iter()
            .map(|s| format!("{}: {}", s.service, s.operation))
            .collect::<Vec<_>>(),
        trace.summary()
    );
    anyhow::ensure!(
        roots[0].service == "order-service"
            && roots[0].operation == "ordersaga.order.v1.OrderService/CreateOrder",
        "the root is not the CreateOrder call: {}: {}",
        roots[0].service,
        roots[0].operation
    );
    let orphans = trace.orphans();
    anyhow::ensure!(
        orphans.is_empty(),
        "spans whose parent is not in trace {}: {:?}",
        trace.trace_id,
        orphans
            .iter()
            .map(|s| format!("{}: {}", s.service, s.operation))
            .collect::<Vec<_>>()
    );
    let mut others = BTreeSet::new();
    for service in services {
        for key in ["order_id", "messaging.kafka.message.key"] {
            others.extend(
                find_traces(service, key, order_id, 50)
                    .await
                    .with_context(|| format!("searching {service} traces"))?
                    .into_iter()
                    .filter(|t| *t != trace.trace_id)
                    .map(|t| format!("{service}/{key}: {t}")),
            );
        }
    }
    anyhow::ensure!(
        others.is_empty(),
        "order {order_id} left spans outside its trace {}: {others:?}",
        trace.trace_id
    );
    Ok(())
}

/// Everything the services know about one order once it finished.
#[derive(Debug, Clone)]
pub struct Settled {
    pub order: order::Order,
    pub payment: Option<payment::Payment>,
    pub shipment: Option<shipment::Shipment>,
    pub notifications: Vec<notification::Notification>,
}

impl Settled {
    pub fn approved(&self) -> bool {
        self.order.status() == order::OrderStatus::Approved
    }

    pub fn quantity(&self) -> i64 {
        self.order.items.iter().map(|i| i64::from(i.quantity)).sum()
    }

    pub fn kept_charge(&self) -> i64 {
        self.payment
            .as_ref()
            .filter(|p| p.status() == payment::PaymentStatus::Charged)
            .and_then(|p| p.amount.as_ref())
            .map(|m| m.minor_units)
            .unwrap_or_default()
    }
}

/// Reads back every service's record of each order, with up to 16 calls in
/// flight.
pub async fn settle(stack: &Stack, order_ids: &[String]) -> anyhow::Result<Vec<Settled>> {
    use futures::StreamExt as _;
    let customers: BTreeSet<String> = futures::stream::iter(order_ids)
        .map(|id| async move { stack.get_order(id).await.map(|o| o.customer_id) })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let mut notifications: BTreeMap<String, Vec<notification::Notification>> = BTreeMap::new();
    for customer in &customers {
        for n in stack.notifications(customer).await? {
            notifications.entry(n.order_id.clone()).or_default().push(n);
        }
    }
    let settled: Vec<anyhow::Result<Settled>> = futures::stream::iter(order_ids)
        .map(|id| {
            let notifications = notifications.get(id).cloned().unwrap_or_default();
            async move {
                Ok(Settled {
                    order: stack.get_order(id).await?,
                    payment: stack.payment_of(id).await?,
                    shipment: stack.shipment_of(id).await?,
                    notifications,
                })
            }
        })
        .buffered(16)
        .collect()
        .await;
    settled.into_iter().collect()
}
