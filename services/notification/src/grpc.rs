//! The gRPC edge: parses requests into domain types, calls the application
//! layer, and maps results and errors back to proto and `tonic::Status`.

use proto::notification::v1 as api;
use service_kit::status::{ErrorKind, FieldViolation, Violations, to_status};
use tonic::{Request, Response, Status};

use crate::app::{AppError, Notifications};
use crate::domain::{CustomerId, DeliveryState, Notification, Outcome, PageCursor};

const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 100;

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
        let mut v = Violations::new();
        let customer_id = v.check("customer_id", CustomerId::parse(&request.customer_id));
        let page_size = v.check("page_size", parse_page_size(request.page_size));
        let after = if request.page_token.is_empty() {
            Some(None)
        } else {
            v.check("page_token", PageCursor::decode(&request.page_token))
                .map(Some)
        };
        let (Some(customer_id), Some(page_size), Some(after)) = (customer_id, page_size, after)
        else {
            return Err(invalid(v.into_vec()));
        };
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

fn parse_page_size(raw: i32) -> Result<usize, String> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| format!("must be between 1 and {MAX_PAGE_SIZE}, or 0 for the default")),
    }
}

fn invalid(violations: Vec<FieldViolation>) -> Status {
    to_status(ErrorKind::InvalidArgument(violations))
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

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
