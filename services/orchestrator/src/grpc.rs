//! The gRPC edge: introspection (GetSaga, ListSagas) and operator actions
//! (RetryStep, ForceCompensation). Parses requests, calls the application
//! layer, maps results to proto and errors through `to_status`.

use chrono::{DateTime, Utc};
use proto::orchestrator::v1 as api;
use service_kit::status::{ErrorKind, FieldViolation, Violations, to_status};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::{AppError, SagaView, Sagas};
use crate::db::ListFilter;
use crate::record::SagaState;
use crate::saga::Input;

const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 100;
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
    parse_order_id(raw).map_err(|d| invalid(vec![FieldViolation::new("order_id", d)]))
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

pub fn encode_cursor((created_at, order_id): (DateTime<Utc>, Uuid)) -> String {
    format!("{}.{}", created_at.timestamp_micros(), order_id)
}

pub fn decode_cursor(token: &str) -> Result<(DateTime<Utc>, Uuid), String> {
    let invalid = || "is not a token returned by ListSagas".to_owned();
    let (micros, id) = token.split_once('.').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    Ok((
        DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        Uuid::parse_str(id).map_err(|_| invalid())?,
    ))
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
        let page_size = v.check("page_size", parse_page_size(request.page_size));
        let after = if request.page_token.is_empty() {
            Some(None)
        } else {
            v.check("page_token", decode_cursor(&request.page_token))
                .map(Some)
        };
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
            next_page_token: next.map(encode_cursor).unwrap_or_default(),
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

fn invalid(violations: Vec<FieldViolation>) -> Status {
    to_status(ErrorKind::InvalidArgument(violations))
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

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
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
    fn a_page_cursor_round_trips_and_garbage_is_refused() {
        let cursor = (
            DateTime::from_timestamp_micros(1_800_000_000_123_456).expect("time"),
            Uuid::now_v7(),
        );
        assert_eq!(decode_cursor(&encode_cursor(cursor)), Ok(cursor));
        assert!(decode_cursor("garbage").is_err());
        assert!(decode_cursor("12.nope").is_err());
    }

    #[test]
    fn ages_and_page_sizes_are_bounded() {
        assert_eq!(parse_age(0), Ok(None));
        assert!(parse_age(-1).is_err());
        assert_eq!(parse_page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert!(parse_page_size(101).is_err());
        assert!(parse_page_size(-1).is_err());
        assert!(parse_state(42).is_err());
    }
}
