//! The gRPC edge: introspection (GetSaga, ListSagas) and operator actions
//! (RetryStep, ForceCompensation). Parses requests, calls the application
//! layer, maps results to proto and errors through `to_status`.

use chrono::Utc;
use domain_types::{PageSize, parse_page_token};
use proto::orchestrator::v1 as api;
use service_kit::grpc::timestamp;
use service_kit::status::{
    ErrorKind, Violations, invalid_argument as invalid, invalid_field, to_status,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::{AppError, SagaView, Sagas};
use crate::db::ListFilter;
use crate::record::{PageCursor, SagaState};
use crate::saga::Input;

const MAX_REASON_LEN: usize = 500;

pub struct OrchestratorApi {
    sagas: Sagas,
}

impl OrchestratorApi {
    pub fn new(sagas: Sagas) -> Self {
        Self { sagas }
    }
}

fn parse_order_id(raw: &str) -> Result<Uuid, String> {
    if raw.is_empty() {
        return Err("is required".to_owned());
    }
    Uuid::parse_str(raw).map_err(|_| "must be a UUID".to_owned())
}

fn order_id_of(raw: &str) -> Result<Uuid, Status> {
    parse_order_id(raw).map_err(|d| invalid_field("order_id", d))
}

fn parse_age(raw: i64) -> Result<Option<chrono::Duration>, String> {
    match raw {
        0 => Ok(None),
        n if n < 0 => Err("must not be negative".to_owned()),
        n => chrono::Duration::try_seconds(n)
            .map(Some)
            .ok_or_else(|| "is too large".to_owned()),
    }
}

fn parse_state(raw: i32) -> Result<Option<SagaState>, String> {
    match api::SagaState::try_from(raw) {
        Ok(api::SagaState::Unspecified) => Ok(None),
        Ok(api::SagaState::Running) => Ok(Some(SagaState::Running)),
        Ok(api::SagaState::Compensating) => Ok(Some(SagaState::Compensating)),
        Ok(api::SagaState::Approved) => Ok(Some(SagaState::Approved)),
        Ok(api::SagaState::Rejected) => Ok(Some(SagaState::Rejected)),
        Ok(api::SagaState::NeedsAttention) => Ok(Some(SagaState::NeedsAttention)),
        Err(_) => Err(format!("unknown state {raw}")),
    }
}

#[tonic::async_trait]
impl api::orchestrator_service_server::OrchestratorService for OrchestratorApi {
    async fn get_saga(
        &self,
        request: Request<api::GetSagaRequest>,
    ) -> Result<Response<api::Saga>, Status> {
        let id = order_id_of(&request.into_inner().order_id)?;
        let view = self.sagas.get(id).await.map_err(app_status)?;
        Ok(Response::new(saga_to_proto(&view)))
    }

    async fn list_sagas(
        &self,
        request: Request<api::ListSagasRequest>,
    ) -> Result<Response<api::ListSagasResponse>, Status> {
        let request = request.into_inner();
        let mut v = Violations::new();
        let state = v.check("state", parse_state(request.state));
        let older = v.check("older_than_seconds", parse_age(request.older_than_seconds));
        let newer = v.check("newer_than_seconds", parse_age(request.newer_than_seconds));
        let page_size = v.check("page_size", PageSize::parse(request.page_size));
        let after = v.check(
            "page_token",
            parse_page_token(&request.page_token, |token| {
                PageCursor::decode(token, "ListSagas")
            }),
        );
        let (Some(state), Some(older), Some(newer), Some(page_size), Some(after)) =
            (state, older, newer, page_size, after)
        else {
            return Err(invalid(v.into_vec()));
        };
        let now = Utc::now();
        let filter = ListFilter {
            state,
            created_before: older.map(|age| now - age),
            created_after: newer.map(|age| now - age),
            after,
        };
        let (views, next) = self
            .sagas
            .list(&filter, page_size)
            .await
            .map_err(app_status)?;
        Ok(Response::new(api::ListSagasResponse {
            sagas: views.iter().map(saga_to_proto).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn retry_step(
        &self,
        request: Request<api::RetryStepRequest>,
    ) -> Result<Response<api::Saga>, Status> {
        let id = order_id_of(&request.into_inner().order_id)?;
        let view = self
            .sagas
            .operate(id, Input::OperatorRetry)
            .await
            .map_err(app_status)?;
        Ok(Response::new(saga_to_proto(&view)))
    }

    async fn force_compensation(
        &self,
        request: Request<api::ForceCompensationRequest>,
    ) -> Result<Response<api::Saga>, Status> {
        let request = request.into_inner();
        let mut v = Violations::new();
        let id = v.check("order_id", parse_order_id(&request.order_id));
        let reason = request.reason.trim().to_owned();
        let reason = v.check(
            "reason",
            if reason.is_empty() {
                Err("is required".to_owned())
            } else if reason.chars().count() > MAX_REASON_LEN {
                Err(format!("must be at most {MAX_REASON_LEN} characters"))
            } else {
                Ok(reason)
            },
        );
        let (Some(id), Some(reason)) = (id, reason) else {
            return Err(invalid(v.into_vec()));
        };
        let view = self
            .sagas
            .operate(id, Input::OperatorAbort { reason })
            .await
            .map_err(app_status)?;
        Ok(Response::new(saga_to_proto(&view)))
    }
}

/// The one mapping from application errors to gRPC status.
fn app_status(error: AppError) -> Status {
    let kind = match error {
        AppError::NotFound(id) => ErrorKind::NotFound(format!("saga of order {id} not found")),
        AppError::NotApplicable { phase } => {
            ErrorKind::FailedPrecondition(format!("not possible while the saga is {phase}"))
        }
        AppError::Unavailable(cause) => ErrorKind::Unavailable(cause),
        other @ (AppError::Db(_) | AppError::Outbox(_)) => ErrorKind::Internal(other.into()),
    };
    to_status(kind)
}

fn state_to_proto(state: SagaState) -> api::SagaState {
    match state {
        SagaState::Running => api::SagaState::Running,
        SagaState::Compensating => api::SagaState::Compensating,
        SagaState::Approved => api::SagaState::Approved,
        SagaState::Rejected => api::SagaState::Rejected,
        SagaState::NeedsAttention => api::SagaState::NeedsAttention,
    }
}

fn saga_to_proto(view: &SagaView) -> api::Saga {
    let record = &view.record;
    let saga = &record.saga;
    api::Saga {
        order_id: record.order_id.to_string(),
        customer_id: record.customer_id.clone(),
        state: state_to_proto(SagaState::of(saga.phase)).into(),
        current_step: saga.current_command().map(|c| c.name()).unwrap_or_default(),
        failure_reason: saga.failure.clone().unwrap_or_default(),
        attempts: i32::try_from(saga.attempts).unwrap_or(i32::MAX),
        deadline: saga.deadline.map(timestamp),
        steps: view
            .steps
            .iter()
            .map(|step| api::SagaStep {
                name: step.name.clone(),
                outcome: step.outcome.clone(),
                reason: step.reason.clone().unwrap_or_default(),
                at: Some(timestamp(step.at)),
            })
            .collect(),
        trace_id: record.trace_id.clone().unwrap_or_default(),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_handed_out_before_keep_decoding() {
        // The format ListSagas has always used: `<micros>.<order id>`.
        let token = "1800000000123456.0190a5f3-7c1e-7d2a-9b4e-3f6a1c2d4e5f";
        let cursor = PageCursor::decode(token, "ListSagas").expect("old token");
        assert_eq!(cursor.created_at.timestamp_micros(), 1_800_000_000_123_456);
        assert_eq!(
            cursor.id.to_string(),
            "0190a5f3-7c1e-7d2a-9b4e-3f6a1c2d4e5f"
        );
        assert_eq!(cursor.encode(), token);
        assert_eq!(
            PageCursor::decode("12.nope", "ListSagas"),
            Err("is not a token returned by ListSagas".to_owned())
        );
    }

    #[test]
    fn ages_and_states_are_bounded() {
        assert_eq!(parse_age(0), Ok(None));
        assert!(parse_age(-1).is_err());
        assert!(parse_state(42).is_err());
    }
}
