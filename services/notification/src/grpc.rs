//! The gRPC edge: parses requests into domain types, calls the application
//! layer, and maps results and errors back to proto and `tonic::Status`.

use domain_types::{PageSize, parse_page_token};
use proto::notification::v1 as api;
use service_kit::grpc::timestamp;
use service_kit::status::{ErrorKind, customer_page, to_status};
use tonic::{Request, Response, Status};

use crate::app::{AppError, Notifications};
use crate::domain::{CustomerId, DeliveryState, Notification, Outcome, PageCursor};

pub struct NotificationApi {
    notifications: Notifications,
}

impl NotificationApi {
    pub fn new(notifications: Notifications) -> Self {
        Self { notifications }
    }
}

#[tonic::async_trait]
impl api::notification_service_server::NotificationService for NotificationApi {
    async fn list_notifications(
        &self,
        request: Request<api::ListNotificationsRequest>,
    ) -> Result<Response<api::ListNotificationsResponse>, Status> {
        let request = request.into_inner();
        let (customer_id, page_size, after) = customer_page(
            CustomerId::parse(&request.customer_id),
            PageSize::parse(request.page_size),
            parse_page_token(&request.page_token, |token| {
                PageCursor::decode(token, "ListNotifications")
            }),
        )?;
        let (page, next) = self
            .notifications
            .list(&customer_id, after, page_size)
            .await
            .map_err(app_status)?;
        Ok(Response::new(api::ListNotificationsResponse {
            notifications: page.iter().map(notification_to_proto).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }
}

/// The one mapping from application errors to gRPC status.
fn app_status(error: AppError) -> Status {
    let kind = match error {
        AppError::Unavailable(cause) => ErrorKind::Unavailable(cause),
        other @ AppError::Db(_) => ErrorKind::Internal(other.into()),
    };
    to_status(kind)
}

fn notification_to_proto(n: &Notification) -> api::Notification {
    let outcome = match n.outcome {
        Outcome::Approved => api::Outcome::Approved,
        Outcome::Rejected => api::Outcome::Rejected,
    };
    let state = match n.delivery_state {
        DeliveryState::Pending => api::DeliveryState::Pending,
        DeliveryState::Delivered => api::DeliveryState::Delivered,
        DeliveryState::Failed => api::DeliveryState::Failed,
        DeliveryState::NotConfigured => api::DeliveryState::NotConfigured,
    };
    api::Notification {
        notification_id: n.id.to_string(),
        order_id: n.order_id.to_string(),
        customer_id: n.customer_id.as_str().to_owned(),
        outcome: outcome.into(),
        reason: n.reason.clone(),
        delivery_state: state.into(),
        attempts: i32::try_from(n.attempts).unwrap_or(i32::MAX),
        last_error: n.last_error.clone().unwrap_or_default(),
        created_at: Some(timestamp(n.created_at)),
        delivered_at: n.delivered_at.map(timestamp),
    }
}
