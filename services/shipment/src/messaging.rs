//! The Kafka edge: decodes saga commands into domain commands and hands them
//! to the application layer on the consumer runtime's transaction.

use consumer::{Handler, HandlerError, Incoming};
use diesel_async::AsyncPgConnection;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use proto::messages::v1 as msg;
use service_kit::db::DbError;

use crate::app::{self, AppError};
use crate::domain::{Address, CreateShipment, DeliverableCountries, OrderId};

pub struct ShipmentHandler {
    replies_topic: String,
    countries: DeliverableCountries,
}

impl ShipmentHandler {
    pub fn new(replies_topic: String, countries: DeliverableCountries) -> Self {
        Self {
            replies_topic,
            countries,
        }
    }

    async fn dispatch(
        &self,
        conn: &mut AsyncPgConnection,
        message: &Incoming,
    ) -> Result<(), HandlerError> {
        if message.is::<msg::CreateShipment>() {
            let command = parse_create(message.decode()?)?;
            app::create_shipment(conn, &self.replies_topic, &command, &self.countries).await?;
            Ok(())
        } else if message.is::<msg::CancelShipment>() {
            let command: msg::CancelShipment = message.decode()?;
            let id = parse_order_id(&command.order_id)?;
            app::cancel_shipment(conn, &self.replies_topic, id).await?;
            Ok(())
        } else {
            Err(message.unknown_type())
        }
    }
}

impl Handler for ShipmentHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        self.dispatch(conn, message).boxed()
    }
}

fn parse_order_id(raw: &str) -> Result<OrderId, HandlerError> {
    OrderId::parse(raw)
        .map_err(|description| HandlerError::Permanent(format!("order_id {description}")))
}

fn parse_create(command: msg::CreateShipment) -> Result<CreateShipment, HandlerError> {
    let order_id = parse_order_id(&command.order_id)?;
    let a = command.shipping_address.ok_or_else(|| {
        HandlerError::Permanent("CreateShipment without a shipping_address".to_owned())
    })?;
    Ok(CreateShipment {
        order_id,
        address: Address {
            recipient: a.recipient,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            postal_code: a.postal_code,
            country_code: a.country_code,
        },
    })
}

impl From<AppError> for HandlerError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Db(DbError::Query(error)) => error.into(),
            AppError::Outbox(error) => error.into(),
            AppError::Unavailable(error) => Self::Transient(error),
            other @ (AppError::NotFound(_)
            | AppError::Tracking(_)
            | AppError::Db(DbError::Corrupt(_))) => Self::Retryable(other.into()),
        }
    }
}
