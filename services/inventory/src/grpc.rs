//! The gRPC edge: parses requests into domain types, calls the application
//! layer, and maps results and errors back to proto and `tonic::Status`.

use domain_types::{PageSize, parse_multiline_text, parse_page_token, parse_text};
use proto::inventory::v1 as api;
use service_kit::grpc::timestamp;
use service_kit::status::{
    ErrorKind, FieldViolation, Violations, invalid_argument as invalid, invalid_field, to_status,
};
use tonic::{Request, Response, Status};

use crate::app::{AppError, Catalogue};
use crate::domain::{
    self, AdjustError, Currency, Money, NewProduct, OrderId, PageCursor, Product, ProductId,
    Reservation, ReservationStatus, Stock, StockDelta,
};

pub struct InventoryApi {
    catalogue: Catalogue,
}

impl InventoryApi {
    pub fn new(catalogue: Catalogue) -> Self {
        Self { catalogue }
    }
}

#[tonic::async_trait]
impl api::inventory_service_server::InventoryService for InventoryApi {
    async fn create_product(
        &self,
        request: Request<api::CreateProductRequest>,
    ) -> Result<Response<api::Product>, Status> {
        let new = NewProduct::try_from(request.into_inner()).map_err(invalid)?;
        let product = self.catalogue.create(new).await.map_err(app_status)?;
        Ok(Response::new(product_to_proto(&product)))
    }

    async fn get_product(
        &self,
        request: Request<api::GetProductRequest>,
    ) -> Result<Response<api::Product>, Status> {
        let id = ProductId::parse(&request.into_inner().product_id)
            .map_err(|d| invalid_field("product_id", d))?;
        let product = self.catalogue.get(&id).await.map_err(app_status)?;
        Ok(Response::new(product_to_proto(&product)))
    }

    async fn list_products(
        &self,
        request: Request<api::ListProductsRequest>,
    ) -> Result<Response<api::ListProductsResponse>, Status> {
        let request = request.into_inner();
        let mut v = Violations::new();
        let page_size = v.check("page_size", PageSize::parse(request.page_size));
        let after = v.check(
            "page_token",
            parse_page_token(&request.page_token, PageCursor::decode),
        );
        let (Some(page_size), Some(after)) = (page_size, after) else {
            return Err(invalid(v.into_vec()));
        };
        let (products, next) = self
            .catalogue
            .list(after, page_size)
            .await
            .map_err(app_status)?;
        Ok(Response::new(api::ListProductsResponse {
            products: products.iter().map(product_to_proto).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<api::AdjustStockRequest>,
    ) -> Result<Response<api::Product>, Status> {
        let request = request.into_inner();
        let mut v = Violations::new();
        let id = v.check("product_id", ProductId::parse(&request.product_id));
        let delta = v.check("delta", StockDelta::parse(request.delta));
        let (Some(id), Some(delta)) = (id, delta) else {
            return Err(invalid(v.into_vec()));
        };
        let product = self
            .catalogue
            .adjust(&id, delta)
            .await
            .map_err(app_status)?;
        Ok(Response::new(product_to_proto(&product)))
    }

    async fn get_reservation(
        &self,
        request: Request<api::GetReservationRequest>,
    ) -> Result<Response<api::Reservation>, Status> {
        let order_id = OrderId::parse(&request.into_inner().order_id)
            .map_err(|d| invalid_field("order_id", d))?;
        let reservation = self
            .catalogue
            .reservation(order_id)
            .await
            .map_err(app_status)?;
        reservation_to_proto(&reservation)
            .map(Response::new)
            .map_err(app_status)
    }
}

/// The one mapping from application errors to gRPC status.
fn app_status(error: AppError) -> Status {
    let kind = match error {
        AppError::NotFound(what) => ErrorKind::NotFound(format!("{what} not found")),
        AppError::ProductExists(id) => {
            ErrorKind::AlreadyExists(format!("product {id} already exists"))
        }
        AppError::Adjust { product_id, error } => ErrorKind::FailedPrecondition(match error {
            AdjustError::BelowZero { stock } => {
                format!("the stock of {product_id} would fall below zero (it is {stock})")
            }
            AdjustError::TooLarge => {
                format!("the stock of {product_id} would exceed the largest storable value")
            }
        }),
        AppError::Unavailable(cause) => ErrorKind::Unavailable(cause),
        other @ (AppError::Db(_) | AppError::Outbox(_) | AppError::TotalOverflow(_)) => {
            ErrorKind::Internal(other.into())
        }
    };
    to_status(kind)
}

/// Collects every violation of the request, not just the first.
impl TryFrom<api::CreateProductRequest> for NewProduct {
    type Error = Vec<FieldViolation>;

    fn try_from(request: api::CreateProductRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::new();
        let id = v.check("product_id", ProductId::parse(&request.product_id));
        let name = v.check("name", parse_text(&request.name, 1, domain::MAX_NAME_LEN));
        let description = v.check(
            "description",
            parse_multiline_text(&request.description, 0, domain::MAX_DESCRIPTION_LEN),
        );
        let unit_price = match &request.unit_price {
            None => v.check("unit_price", Err::<Money, _>("is required".to_owned())),
            Some(price) => {
                let minor = v.check(
                    "unit_price.minor_units",
                    Money::check_non_negative(price.minor_units),
                );
                let currency = v.check("unit_price.currency", Currency::parse(&price.currency));
                minor
                    .zip(currency)
                    .map(|(minor, currency)| Money::new(minor, currency))
            }
        };
        let stock = v.check("stock", Stock::parse(request.stock));
        match (id, name, description, unit_price, stock) {
            (Some(id), Some(name), Some(description), Some(unit_price), Some(stock))
                if v.is_empty() =>
            {
                Ok(NewProduct {
                    id,
                    name,
                    description,
                    unit_price,
                    stock,
                })
            }
            _ => Err(v.into_vec()),
        }
    }
}

fn money_to_proto(money: &Money) -> api::Money {
    api::Money {
        minor_units: money.minor_units(),
        currency: money.currency().as_str().to_owned(),
    }
}

fn product_to_proto(product: &Product) -> api::Product {
    api::Product {
        product_id: product.id.as_str().to_owned(),
        name: product.name.clone(),
        description: product.description.clone(),
        unit_price: Some(money_to_proto(&product.unit_price)),
        stock: product.stock.get(),
        created_at: Some(timestamp(product.created_at)),
        updated_at: Some(timestamp(product.updated_at)),
    }
}

fn status_to_proto(status: ReservationStatus) -> api::ReservationStatus {
    match status {
        ReservationStatus::Reserved => api::ReservationStatus::Reserved,
        ReservationStatus::Released => api::ReservationStatus::Released,
        ReservationStatus::Failed => api::ReservationStatus::Failed,
        ReservationStatus::Tombstone => api::ReservationStatus::Tombstone,
    }
}

fn reservation_to_proto(reservation: &Reservation) -> Result<api::Reservation, AppError> {
    let failure = reservation.failure.as_ref();
    Ok(api::Reservation {
        order_id: reservation.order_id.to_string(),
        status: status_to_proto(reservation.status).into(),
        lines: reservation
            .lines
            .iter()
            .map(|line| api::ReservedLine {
                product_id: line.product_id.as_str().to_owned(),
                quantity: line.quantity.get(),
                unit_price: Some(money_to_proto(&line.unit_price)),
            })
            .collect(),
        total: reservation.total()?.as_ref().map(money_to_proto),
        failure_reason: failure
            .map(|f| f.reason.as_str().to_owned())
            .unwrap_or_default(),
        failed_product_id: failure
            .and_then(|f| f.product_id.as_ref())
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        updated_at: Some(timestamp(reservation.updated_at)),
    })
}
