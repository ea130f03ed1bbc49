//! The gRPC edge: parses requests into domain types, calls the application
//! layer, and maps results and errors back to proto and `tonic::Status`.

use proto::shipment::v1 as api;
use service_kit::grpc::timestamp;
use service_kit::status::{ErrorKind, invalid_field, to_status};
use tonic::{Request, Response, Status};

use crate::app::{AppError, Shipments};
use crate::domain::{OrderId, Shipment, ShipmentState};

pub struct ShipmentApi {
    shipments: Shipments,
}

impl ShipmentApi {
    pub fn new(shipments: Shipments) -> Self {
        Self { shipments }
    }
}

#[tonic::async_trait]
impl api::shipment_service_server::ShipmentService for ShipmentApi {
    async fn get_shipment(
        &self,
        request: Request<api::GetShipmentRequest>,
    ) -> Result<Response<api::Shipment>, Status> {
        let id = OrderId::parse(&request.into_inner().order_id)
            .map_err(|d| invalid_field("order_id", d))?;
        let shipment = self.shipments.get(id).await.map_err(app_status)?;
        Ok(Response::new(shipment_to_proto(&shipment)))
    }
}

/// The one mapping from application errors to gRPC status.
fn app_status(error: AppError) -> Status {
    let kind = match error {
        AppError::NotFound(id) => ErrorKind::NotFound(format!("no shipment for order {id}")),
        AppError::Unavailable(cause) => ErrorKind::Unavailable(cause),
        other @ (AppError::Db(_) | AppError::Outbox(_) | AppError::Tracking(_)) => {
            ErrorKind::Internal(other.into())
        }
    };
    to_status(kind)
}

fn shipment_to_proto(shipment: &Shipment) -> api::Shipment {
    let status = match shipment.state {
        ShipmentState::Created(_) => api::ShipmentStatus::Created,
        ShipmentState::Cancelled(_) => api::ShipmentStatus::Cancelled,
        ShipmentState::Failed(_) => api::ShipmentStatus::Failed,
        ShipmentState::Tombstone => api::ShipmentStatus::Tombstone,
    };
    let booking = shipment.state.booking();
    api::Shipment {
        order_id: shipment.order_id.to_string(),
        shipment_id: booking
            .map(|b| b.shipment_id.to_string())
            .unwrap_or_default(),
        tracking_number: booking
            .map(|b| b.tracking_number.as_str().to_owned())
            .unwrap_or_default(),
        status: status.into(),
        failure_reason: shipment
            .state
            .failure_reason()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        address: shipment.address.as_ref().map(|a| api::Address {
            recipient: a.recipient.clone(),
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            country_code: a.country_code.clone(),
        }),
        created_at: Some(timestamp(shipment.created_at)),
        updated_at: Some(timestamp(shipment.updated_at)),
    }
}
