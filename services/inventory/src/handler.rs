//! The Kafka edge: takes the saga's commands from inventory.commands.v1,
//! parses them into domain requests, and runs them on the consumer
//! runtime's transaction.

use consumer::{Handler, HandlerError, Incoming};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use proto::messages::v1::{ReleaseStock, ReserveStock};
use service_kit::db::DbError;

use crate::app::{AppError, Reservations};
use crate::domain::{OrderId, OrderLine, ProductId, Quantity, ReserveRequest};

pub struct InventoryHandler {
    reservations: Reservations,
}

impl InventoryHandler {
    pub fn new(reservations: Reservations) -> Self {
        Self { reservations }
    }
}

impl Handler for InventoryHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if message.is::<ReserveStock>() {
                let command: ReserveStock = message.decode()?;
                let request = parse_reserve(&command).map_err(HandlerError::Permanent)?;
                self.reservations
                    .reserve(conn, &request)
                    .await
                    .map_err(handler_error)?;
                Ok(())
            } else if message.is::<ReleaseStock>() {
                let command: ReleaseStock = message.decode()?;
                let order_id =
                    parse_order_id(&command.order_id).map_err(HandlerError::Permanent)?;
                self.reservations
                    .release(conn, order_id)
                    .await
                    .map_err(handler_error)?;
                Ok(())
            } else {
                Err(message.unknown_type())
            }
        })
    }

    fn lock_batch<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        batch: &'a [Incoming],
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let (products, releasing) = batch_locks(batch);
            if products.is_empty() && releasing.is_empty() {
                return Ok(());
            }
            let products: Vec<&str> = products.iter().map(String::as_str).collect();
            crate::db::lock_for_batch(conn, &products, &releasing)
                .await
                .map_err(|error| handler_error(AppError::Db(error)))?;
            Ok(())
        })
    }
}

/// The products a batch reserves and the orders it releases (whose
/// reserved products it gives back). Unreadable messages are left out:
/// `handle` rejects them.
pub fn batch_locks(batch: &[Incoming]) -> (Vec<String>, Vec<uuid::Uuid>) {
    let mut products = Vec::new();
    let mut releasing = Vec::new();
    for message in batch {
        if message.is::<ReserveStock>() {
            if let Ok(command) = message.decode::<ReserveStock>() {
                products.extend(command.items.into_iter().map(|item| item.product_id));
            }
        } else if message.is::<ReleaseStock>()
            && let Ok(command) = message.decode::<ReleaseStock>()
            && let Ok(order_id) = parse_order_id(&command.order_id)
        {
            releasing.push(order_id.0);
        }
    }
    products.sort();
    products.dedup();
    (products, releasing)
}

fn parse_order_id(raw: &str) -> Result<OrderId, String> {
    OrderId::parse(raw).map_err(|d| format!("order_id {raw:?} {d}"))
}

/// A ReserveStock as a domain request; `Err` says why it can never be served.
pub fn parse_reserve(command: &ReserveStock) -> Result<ReserveRequest, String> {
    let order_id = parse_order_id(&command.order_id)?;
    let lines = command
        .items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            Ok(OrderLine {
                product_id: ProductId::parse(&item.product_id)
                    .map_err(|d| format!("items[{index}].product_id {d}"))?,
                quantity: Quantity::parse(item.quantity)
                    .map_err(|d| format!("items[{index}].quantity {d}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    ReserveRequest::new(order_id, lines)
}

fn handler_error(error: AppError) -> HandlerError {
    match error {
        AppError::Db(DbError::Query(error)) => error.into(),
        AppError::Outbox(error) => error.into(),
        // Neither gets better by retrying.
        AppError::TotalOverflow(error) => HandlerError::Permanent(error.to_string()),
        AppError::Db(DbError::Corrupt(error)) => HandlerError::Permanent(error.to_string()),
        other => HandlerError::Retryable(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use proto::messages::v1::OrderLine as Line;

    use super::*;

    fn command(order_id: &str, items: &[(&str, i32)]) -> ReserveStock {
        ReserveStock {
            order_id: order_id.to_owned(),
            items: items
                .iter()
                .map(|(p, q)| Line {
                    product_id: (*p).to_owned(),
                    quantity: *q,
                })
                .collect(),
        }
    }

    #[test]
    fn a_reserve_command_with_a_bad_order_id_or_quantity_can_never_be_served() {
        let order = uuid::Uuid::now_v7().to_string();
        assert!(parse_reserve(&command(&order, &[("a", 1)])).is_ok());
        assert!(parse_reserve(&command("not-a-uuid", &[("a", 1)])).is_err());
        assert!(parse_reserve(&command(&order, &[("a", 0)])).is_err());
        assert!(parse_reserve(&command(&order, &[("a", -2)])).is_err());
        assert!(parse_reserve(&command(&order, &[("bad id", 1)])).is_err());
        assert!(parse_reserve(&command(&order, &[])).is_err());
        assert!(parse_reserve(&command(&order, &[("a", 1), ("a", 2)])).is_err());
    }
}
