//! The one mapping from error kinds to `tonic::Status`. Services convert their
//! application errors into an [`ErrorKind`] and call [`to_status`]; nothing
//! else builds a `Status` by hand.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One invalid field of a request: its path (e.g. `items[2].quantity`) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Collects every violation of a request while parsing it, so the caller
/// learns about all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `result`, or `None` after recording its error against `field`.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(FieldViolation::new(field, description));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }
}

/// What went wrong, as far as a caller needs to know.
#[derive(Debug)]
pub enum ErrorKind {
    /// The request is malformed; nothing was written.
    InvalidArgument(Vec<FieldViolation>),
    /// The named thing does not exist.
    NotFound(String),
    /// The thing the request would create exists already.
    AlreadyExists(String),
    /// The request conflicts with the current state.
    FailedPrecondition(String),
    /// A dependency (database, broker) is unavailable; retrying may succeed.
    Unavailable(anyhow::Error),
    /// A bug or unexpected failure; logged with its cause chain, never shown.
    Internal(anyhow::Error),
}

pub fn to_status(kind: ErrorKind) -> Status {
    match kind {
        ErrorKind::InvalidArgument(violations) => {
            let mut details = ErrorDetails::new();
            for v in &violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            let summary = violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ");
            Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid request: {summary}"),
                details,
            )
        }
        ErrorKind::NotFound(what) => Status::not_found(what),
        ErrorKind::AlreadyExists(what) => Status::already_exists(what),
        ErrorKind::FailedPrecondition(why) => Status::failed_precondition(why),
        ErrorKind::Unavailable(error) => {
            tracing::warn!(error = format!("{error:#}"), "dependency unavailable");
            Status::unavailable("temporarily unavailable, retry later")
        }
        ErrorKind::Internal(error) => {
            tracing::error!(error = format!("{error:#}"), "internal error");
            Status::internal("internal error")
        }
    }
}

/// `INVALID_ARGUMENT` with every violation of a request.
pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    to_status(ErrorKind::InvalidArgument(violations))
}

/// `INVALID_ARGUMENT` for the one invalid field of a request.
pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Status {
    invalid_argument(vec![FieldViolation::new(field, description)])
}

/// The three fields of a list-by-customer request (`customer_id`,
/// `page_size`, `page_token`), each already parsed: all three values, or
/// INVALID_ARGUMENT naming every one of them that is wrong.
pub fn customer_page<C, S, T>(
    customer_id: Result<C, String>,
    page_size: Result<S, String>,
    page_token: Result<T, String>,
) -> Result<(C, S, T), Status> {
    let mut v = Violations::new();
    let customer_id = v.check("customer_id", customer_id);
    let page_size = v.check("page_size", page_size);
    let page_token = v.check("page_token", page_token);
    match (customer_id, page_size, page_token) {
        (Some(customer_id), Some(page_size), Some(page_token)) => {
            Ok((customer_id, page_size, page_token))
        }
        _ => Err(invalid_argument(v.into_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_by_customer_request_reports_every_bad_field_at_once() {
        let ok: Result<(&str, u32, Option<u8>), Status> =
            customer_page(Ok("c-1"), Ok(10), Ok(None));
        assert_eq!(ok.expect("valid request"), ("c-1", 10, None));

        let status = customer_page::<&str, u32, Option<u8>>(
            Err("must not be empty".into()),
            Ok(10),
            Err("is not a page token of this list".into()),
        )
        .expect_err("two bad fields");
        assert_eq!(
            violations(&status),
            [
                ("customer_id".to_owned(), "must not be empty".to_owned()),
                (
                    "page_token".to_owned(),
                    "is not a page token of this list".to_owned()
                )
            ]
        );
    }

    /// The field violations of an INVALID_ARGUMENT status: (field, description).
    fn violations(status: &Status) -> Vec<(String, String)> {
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status
            .get_details_bad_request()
            .expect("bad request details");
        bad_request
            .field_violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect()
    }

    #[test]
    fn invalid_argument_carries_every_field_violation() {
        let status = to_status(ErrorKind::InvalidArgument(vec![
            FieldViolation::new("customer_id", "must not be empty"),
            FieldViolation::new("items[0].quantity", "must be at least 1"),
        ]));
        let fields: Vec<String> = violations(&status).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["customer_id", "items[0].quantity"]);
    }

    #[test]
    fn one_invalid_field_is_reported_with_its_path_and_description() {
        let status = invalid_field("order_id", "must be a UUID");
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(bad_request.field_violations.len(), 1);
        assert_eq!(bad_request.field_violations[0].field, "order_id");
        assert_eq!(
            bad_request.field_violations[0].description,
            "must be a UUID"
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = to_status(ErrorKind::Internal(anyhow::anyhow!("password=hunter2")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
