//! The gRPC edge: parses requests into domain types, calls the application
//! layer, and maps results and errors back to proto and `tonic::Status`.

use domain_types::{PageSize, parse_page_token, parse_text};
use proto::order::v1 as api;
use service_kit::grpc::timestamp;
use service_kit::status::{
    ErrorKind, FieldViolation, Violations, customer_page, invalid_argument as invalid,
    invalid_field, to_status,
};
use tonic::{Request, Response, Status};

use crate::app::{AppError, Orders};
use crate::domain::{
    self, Address, CustomerId, IdempotencyKey, LineItem, NewOrder, Order, OrderId, OrderStatus,
    PageCursor, ProductId, Quantity,
};

pub struct OrderApi {
    orders: Orders,
}

impl OrderApi {
    pub fn new(orders: Orders) -> Self {
        Self { orders }
    }
}

#[tonic::async_trait]
impl api::order_service_server::OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<api::CreateOrderRequest>,
    ) -> Result<Response<api::CreateOrderResponse>, Status> {
        let new = NewOrder::try_from(request.into_inner()).map_err(invalid)?;
        let placed = self.orders.place(new).await.map_err(app_status)?;
        Ok(Response::new(api::CreateOrderResponse {
            order_id: placed.order.id.to_string(),
            status: status_to_proto(placed.order.status).into(),
            trace_id: placed.order.trace_id.clone().unwrap_or_default(),
            replayed: placed.replayed,
        }))
    }

    async fn get_order(
        &self,
        request: Request<api::GetOrderRequest>,
    ) -> Result<Response<api::Order>, Status> {
        let id = OrderId::parse(&request.into_inner().order_id)
            .map_err(|d| invalid_field("order_id", d))?;
        let order = self.orders.get(id).await.map_err(app_status)?;
        Ok(Response::new(order_to_proto(&order)))
    }

    async fn list_orders(
        &self,
        request: Request<api::ListOrdersRequest>,
    ) -> Result<Response<api::ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let (customer_id, page_size, after) = customer_page(
            CustomerId::parse(&request.customer_id),
            PageSize::parse(request.page_size),
            parse_page_token(&request.page_token, |token| {
                PageCursor::decode(token, "ListOrders")
            }),
        )?;
        let (orders, next) = self
            .orders
            .list(&customer_id, after, page_size)
            .await
            .map_err(app_status)?;
        Ok(Response::new(api::ListOrdersResponse {
            orders: orders.iter().map(order_to_proto).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }
}

/// The one mapping from application errors to gRPC status.
fn app_status(error: AppError) -> Status {
    let kind = match error {
        AppError::NotFound(id) => ErrorKind::NotFound(format!("order {id} not found")),
        AppError::IdempotencyKeyReused => ErrorKind::FailedPrecondition(
            "idempotency key already used for a different order".to_owned(),
        ),
        AppError::TransitionRefused { id, refused } => {
            ErrorKind::FailedPrecondition(format!("order {id}: {refused}"))
        }
        AppError::Unavailable(cause) => ErrorKind::Unavailable(cause),
        other @ (AppError::Db(_) | AppError::Outbox(_)) => ErrorKind::Internal(other.into()),
    };
    to_status(kind)
}

/// Collects every violation of the request, not just the first.
impl TryFrom<api::CreateOrderRequest> for NewOrder {
    type Error = Vec<FieldViolation>;

    fn try_from(request: api::CreateOrderRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::new();

        let customer_id = v.check("customer_id", CustomerId::parse(&request.customer_id));
        let idempotency_key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&request.idempotency_key),
        );

        let items_check = if request.items.is_empty() {
            Err("must contain at least one item".to_owned())
        } else if request.items.len() > domain::MAX_ITEMS {
            Err(format!("must contain at most {} items", domain::MAX_ITEMS))
        } else {
            Ok(())
        };
        let mut items = v.check("items", items_check).map(|()| Vec::new());
        for (index, item) in request.items.iter().enumerate().take(domain::MAX_ITEMS) {
            let product_id = v.check(
                format!("items[{index}].product_id"),
                ProductId::parse(&item.product_id),
            );
            let quantity = v.check(
                format!("items[{index}].quantity"),
                Quantity::parse(item.quantity),
            );
            match (product_id, quantity, items.as_mut()) {
                (Some(product_id), Some(quantity), Some(items)) => items.push(LineItem {
                    product_id,
                    quantity,
                }),
                _ => items = None,
            }
        }
        if let Some(list) = &items
            && let Err(problems) = domain::check_items(list)
        {
            for (index, description) in problems {
                v.check(
                    format!("items[{index}].product_id"),
                    Err::<(), _>(description),
                );
            }
            items = None;
        }

        let shipping_address = match &request.shipping_address {
            None => v.check("shipping_address", Err::<Address, _>("is required".into())),
            Some(a) => {
                let mut field = |name: &str, value: &str, min: usize, max: usize| {
                    v.check(
                        format!("shipping_address.{name}"),
                        parse_text(value, min, max),
                    )
                };
                let recipient = field("recipient", &a.recipient, 1, 200);
                let line1 = field("line1", &a.line1, 1, 200);
                let line2 = field("line2", &a.line2, 0, 200);
                let city = field("city", &a.city, 1, 100);
                let postal_code = field("postal_code", &a.postal_code, 1, 20);
                let country_code = v.check(
                    "shipping_address.country_code",
                    domain::parse_country_code(&a.country_code),
                );
                match (recipient, line1, line2, city, postal_code, country_code) {
                    (
                        Some(recipient),
                        Some(line1),
                        Some(line2),
                        Some(city),
                        Some(postal_code),
                        Some(country_code),
                    ) => Some(Address {
                        recipient,
                        line1,
                        line2,
                        city,
                        postal_code,
                        country_code,
                    }),
                    _ => None,
                }
            }
        };

        match (customer_id, items, shipping_address, idempotency_key) {
            (Some(customer_id), Some(items), Some(shipping_address), Some(idempotency_key))
                if v.is_empty() =>
            {
                Ok(NewOrder {
                    customer_id,
                    items,
                    shipping_address,
                    idempotency_key,
                })
            }
            _ => Err(v.into_vec()),
        }
    }
}

fn status_to_proto(status: OrderStatus) -> api::OrderStatus {
    match status {
        OrderStatus::Pending => api::OrderStatus::Pending,
        OrderStatus::Approved => api::OrderStatus::Approved,
        OrderStatus::Rejected => api::OrderStatus::Rejected,
    }
}

fn order_to_proto(order: &Order) -> api::Order {
    let a = &order.shipping_address;
    api::Order {
        order_id: order.id.to_string(),
        customer_id: order.customer_id.as_str().to_owned(),
        status: status_to_proto(order.status).into(),
        rejection_reason: order.rejection_reason.clone().unwrap_or_default(),
        items: order
            .items
            .iter()
            .map(|item| api::LineItem {
                product_id: item.product_id.as_str().to_owned(),
                quantity: item.quantity.get(),
            })
            .collect(),
        shipping_address: Some(api::Address {
            recipient: a.recipient.clone(),
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            country_code: a.country_code.clone(),
        }),
        history: order
            .history
            .iter()
            .map(|change| api::StatusChange {
                status: status_to_proto(change.status).into(),
                reason: change.reason.clone().unwrap_or_default(),
                at: Some(timestamp(change.at)),
            })
            .collect(),
        created_at: Some(timestamp(order.created_at)),
        trace_id: order.trace_id.clone().unwrap_or_default(),
    }
}
