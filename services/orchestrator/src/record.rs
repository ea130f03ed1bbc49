//! A saga as the orchestrator keeps it: the order data its commands need,
//! the pure [`Saga`] state and the trace it continues; and the history
//! entries a transition leaves. Plain data, no IO.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::saga::{Command, Input, Phase, Saga, Transition};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LineItem {
    pub product_id: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Address {
    pub recipient: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub postal_code: String,
    pub country_code: String,
}

/// An amount in minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub minor_units: i64,
    pub currency: String,
}

/// Position in the saga list, newest first: the creation time and order id
/// of the last saga seen (tokens of `ListSagas`).
pub type PageCursor = domain_types::NewestFirst<Uuid>;

/// The order a new saga is started for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSaga {
    pub order_id: Uuid,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SagaRecord {
    pub order_id: Uuid,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    /// The reservation's total, once the stock is reserved.
    pub total: Option<Money>,
    pub saga: Saga,
    pub trace_id: Option<String>,
    /// The W3C trace context the saga's spans continue.
    pub trace_headers: BTreeMap<String, String>,
    /// When the current command was last sent.
    pub step_started_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The states the API reports, coarser than [`Phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaState {
    Running,
    Compensating,
    Approved,
    Rejected,
    NeedsAttention,
}

impl SagaState {
    pub fn of(phase: Phase) -> Self {
        match phase {
            Phase::Running(_) | Phase::Approving => SagaState::Running,
            Phase::Compensating(_) | Phase::Rejecting => SagaState::Compensating,
            Phase::Approved => SagaState::Approved,
            Phase::Rejected => SagaState::Rejected,
            Phase::NeedsAttention { .. } => SagaState::NeedsAttention,
        }
    }
}

/// One history entry of a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEntry {
    /// e.g. `reserve_stock`, `compensate:charge_payment`, `approve_order`.
    pub name: String,
    /// started, succeeded, failed, timed_out, compensated, retried,
    /// approved, rejected or needs_attention.
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// What happened in a transition that was not ignored: the answer (or the
/// deadline, or the operator) that ended the current command, then each
/// command sent.
pub fn history(before: &Saga, input: &Input, t: &Transition, at: DateTime<Utc>) -> Vec<StepEntry> {
    let entry = |name: String, outcome: &'static str, reason: Option<String>| StepEntry {
        name,
        outcome,
        reason,
        at,
    };
    let current = before
        .current_command()
        .map(|c| c.name())
        .unwrap_or_default();
    let mut entries = match input {
        Input::StepSucceeded(step) => vec![entry(step.name().to_owned(), "succeeded", None)],
        Input::StepFailed { step, reason } => {
            vec![entry(
                step.name().to_owned(),
                "failed",
                Some(reason.clone()),
            )]
        }
        Input::Compensated(step) => vec![entry(
            Command::Compensate(*step).name(),
            "compensated",
            None,
        )],
        Input::OrderApproved => vec![entry(current, "approved", None)],
        Input::OrderRejected => vec![entry(current, "rejected", None)],
        Input::DeadlinePassed => vec![entry(current, "timed_out", None)],
        Input::OperatorRetry => Vec::new(),
        Input::OperatorAbort { reason } => {
            vec![entry(
                current,
                "failed",
                Some(format!("operator: {reason}")),
            )]
        }
    };
    if let Phase::NeedsAttention { .. } = t.saga.phase
        && !matches!(before.phase, Phase::NeedsAttention { .. })
    {
        let name = t
            .saga
            .current_command()
            .map(|c| c.name())
            .unwrap_or_default();
        entries.push(entry(name, "needs_attention", t.saga.failure.clone()));
    }
    for command in &t.commands {
        let resent = t.saga.attempts > 1 || *input == Input::OperatorRetry;
        let reason = (*input == Input::OperatorRetry).then(|| "operator".to_owned());
        entries.push(entry(
            command.name(),
            if resent { "retried" } else { "started" },
            reason,
        ));
    }
    entries
}

/// The failure as a low-cardinality metric label: the failing step and its
/// code, without the product (`reserve_stock: OUT_OF_STOCK`); any operator
/// abort is `operator`.
pub fn reason_label(failure: Option<&str>) -> String {
    match failure {
        None => String::new(),
        Some(f) if f.starts_with("operator:") => "operator".to_owned(),
        Some(f) => f.split(" (").next().unwrap_or(f).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::{Step, Timing};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn outcomes(entries: &[StepEntry]) -> Vec<(String, &'static str)> {
        entries
            .iter()
            .map(|e| (e.name.clone(), e.outcome))
            .collect()
    }

    #[test]
    fn a_success_records_the_step_and_the_next_command_started() {
        let timing = Timing::default();
        let saga = Saga::start(now(), &timing).saga;
        let input = Input::StepSucceeded(Step::ReserveStock);
        let t = saga.apply(&input, now(), &timing);
        assert_eq!(
            outcomes(&history(&saga, &input, &t, now())),
            [
                ("reserve_stock".to_owned(), "succeeded"),
                ("charge_payment".to_owned(), "started")
            ]
        );
    }

    #[test]
    fn a_resent_compensation_is_recorded_as_timed_out_then_retried() {
        let timing = Timing::default();
        let mut saga = Saga::start(now(), &timing).saga;
        saga = saga.apply(&Input::DeadlinePassed, now(), &timing).saga;
        let t = saga.apply(&Input::DeadlinePassed, now(), &timing);
        assert_eq!(
            outcomes(&history(&saga, &Input::DeadlinePassed, &t, now())),
            [
                ("compensate:reserve_stock".to_owned(), "timed_out"),
                ("compensate:reserve_stock".to_owned(), "retried")
            ]
        );
    }

    #[test]
    fn giving_up_is_recorded_as_needs_attention() {
        let timing = Timing {
            max_attempts: 1,
            ..Timing::default()
        };
        let saga = Saga::start(now(), &timing)
            .saga
            .apply(&Input::DeadlinePassed, now(), &timing)
            .saga;
        let t = saga.apply(&Input::DeadlinePassed, now(), &timing);
        let entries = history(&saga, &Input::DeadlinePassed, &t, now());
        assert_eq!(
            entries.last().map(|e| (e.name.as_str(), e.outcome)),
            Some(("compensate:reserve_stock", "needs_attention"))
        );
    }

    #[test]
    fn the_reason_label_drops_the_product_and_operator_text() {
        assert_eq!(
            reason_label(Some("reserve_stock: OUT_OF_STOCK (product sku-1)")),
            "reserve_stock: OUT_OF_STOCK"
        );
        assert_eq!(
            reason_label(Some("create_shipment: TIMEOUT")),
            "create_shipment: TIMEOUT"
        );
        assert_eq!(reason_label(Some("operator: customer called")), "operator");
        assert_eq!(reason_label(None), "");
    }
}
