//! Rows and queries of the orchestrator database, and the exact conversion
//! between a saga row and [`SagaRecord`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::db::{CorruptRow, DbError};
use uuid::Uuid;

use crate::record::{Money, NewSaga, PageCursor, SagaRecord, SagaState, StepEntry};
use crate::saga::{Phase, Saga, Step, Stuck};
use crate::schema::{saga_steps, sagas};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

const DUE_SAGAS: &str = include_str!("due_sagas.sql");

/// Phases in which no command is awaited; the scanner's index leaves them out.
const TERMINAL_PHASES: [&str; 3] = ["approved", "rejected", "needs_attention"];

#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(table_name = sagas, check_for_backend(diesel::pg::Pg), treat_none_as_null = true)]
pub struct SagaRow {
    pub order_id: Uuid,
    pub customer_id: String,
    pub items: serde_json::Value,
    pub shipping_address: serde_json::Value,
    pub total_minor: Option<i64>,
    pub total_currency: Option<String>,
    pub phase: String,
    pub phase_step: Option<String>,
    pub stuck_phase: Option<String>,
    pub completed: Vec<String>,
    pub compensated: Vec<String>,
    pub failure: Option<String>,
    pub attempts: i32,
    pub deadline: Option<DateTime<Utc>>,
    pub trace_id: Option<String>,
    pub trace_headers: serde_json::Value,
    pub step_started_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = saga_steps, check_for_backend(diesel::pg::Pg))]
struct StepRow {
    name: String,
    outcome: String,
    reason: Option<String>,
    at: DateTime<Utc>,
}

/// A history entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStep {
    pub name: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The phase as its three columns: phase, step, and where it is stuck.
pub fn phase_columns(phase: Phase) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    match phase {
        Phase::Running(step) => ("running", Some(step.name()), None),
        Phase::Approving => ("approving", None, None),
        Phase::Compensating(step) => ("compensating", Some(step.name()), None),
        Phase::Rejecting => ("rejecting", None, None),
        Phase::Approved => ("approved", None, None),
        Phase::Rejected => ("rejected", None, None),
        Phase::NeedsAttention { stuck } => match stuck {
            Stuck::Compensating(step) => {
                ("needs_attention", Some(step.name()), Some("compensating"))
            }
            Stuck::Approving => ("needs_attention", None, Some("approving")),
            Stuck::Rejecting => ("needs_attention", None, Some("rejecting")),
        },
    }
}

pub fn phase_from_columns(
    phase: &str,
    step: Option<&str>,
    stuck: Option<&str>,
) -> Result<Phase, String> {
    let step = match step {
        None => None,
        Some(name) => Some(Step::parse(name).ok_or_else(|| format!("unknown step {name:?}"))?),
    };
    let parsed = match (phase, step, stuck) {
        ("running", Some(step), None) => Phase::Running(step),
        ("approving", None, None) => Phase::Approving,
        ("compensating", Some(step), None) => Phase::Compensating(step),
        ("rejecting", None, None) => Phase::Rejecting,
        ("approved", None, None) => Phase::Approved,
        ("rejected", None, None) => Phase::Rejected,
        ("needs_attention", Some(step), Some("compensating")) => Phase::NeedsAttention {
            stuck: Stuck::Compensating(step),
        },
        ("needs_attention", None, Some("approving")) => Phase::NeedsAttention {
            stuck: Stuck::Approving,
        },
        ("needs_attention", None, Some("rejecting")) => Phase::NeedsAttention {
            stuck: Stuck::Rejecting,
        },
        _ => {
            return Err(format!(
                "invalid phase {phase:?} step {step:?} stuck {stuck:?}"
            ));
        }
    };
    Ok(parsed)
}

/// The phases stored for an API state.
pub fn phases_of(state: SagaState) -> &'static [&'static str] {
    match state {
        SagaState::Running => &["running", "approving"],
        SagaState::Compensating => &["compensating", "rejecting"],
        SagaState::Approved => &["approved"],
        SagaState::Rejected => &["rejected"],
        SagaState::NeedsAttention => &["needs_attention"],
    }
}

fn steps_column(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|s| s.name().to_owned()).collect()
}

fn steps_from_column(names: &[String]) -> Result<Vec<Step>, String> {
    names
        .iter()
        .map(|name| Step::parse(name).ok_or_else(|| format!("unknown step {name:?}")))
        .collect()
}

impl SagaRow {
    pub fn from_record(record: &SagaRecord) -> Self {
        let (phase, phase_step, stuck_phase) = phase_columns(record.saga.phase);
        SagaRow {
            order_id: record.order_id,
            customer_id: record.customer_id.clone(),
            items: serde_json::to_value(&record.items).unwrap_or_default(),
            shipping_address: serde_json::to_value(&record.shipping_address).unwrap_or_default(),
            total_minor: record.total.as_ref().map(|t| t.minor_units),
            total_currency: record.total.as_ref().map(|t| t.currency.clone()),
            phase: phase.to_owned(),
            phase_step: phase_step.map(str::to_owned),
            stuck_phase: stuck_phase.map(str::to_owned),
            completed: steps_column(&record.saga.completed),
            compensated: steps_column(&record.saga.compensated),
            failure: record.saga.failure.clone(),
            attempts: i32::try_from(record.saga.attempts).unwrap_or(i32::MAX),
            deadline: record.saga.deadline,
            trace_id: record.trace_id.clone(),
            trace_headers: serde_json::to_value(&record.trace_headers).unwrap_or_default(),
            step_started_at: record.step_started_at,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }

    pub fn into_record(self) -> Result<SagaRecord, CorruptRow> {
        let order_id = self.order_id;
        let corrupt = CorruptRow::of("saga", order_id);
        let phase = phase_from_columns(
            &self.phase,
            self.phase_step.as_deref(),
            self.stuck_phase.as_deref(),
        )
        .map_err(&corrupt)?;
        let total = match (self.total_minor, self.total_currency) {
            (Some(minor_units), Some(currency)) => Some(Money {
                minor_units,
                currency,
            }),
            (None, None) => None,
            _ => return Err(corrupt("half a total".to_owned())),
        };
        Ok(SagaRecord {
            order_id,
            customer_id: self.customer_id,
            items: serde_json::from_value(self.items)
                .map_err(|e| corrupt(format!("items: {e}")))?,
            shipping_address: serde_json::from_value(self.shipping_address)
                .map_err(|e| corrupt(format!("shipping address: {e}")))?,
            total,
            saga: Saga {
                phase,
                completed: steps_from_column(&self.completed).map_err(&corrupt)?,
                compensated: steps_from_column(&self.compensated).map_err(&corrupt)?,
                failure: self.failure,
                attempts: u32::try_from(self.attempts)
                    .map_err(|_| corrupt(format!("attempts {}", self.attempts)))?,
                deadline: self.deadline,
            },
            trace_id: self.trace_id,
            trace_headers: serde_json::from_value::<BTreeMap<String, String>>(self.trace_headers)
                .map_err(|e| corrupt(format!("trace headers: {e}")))?,
            step_started_at: self.step_started_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Inserts a new saga; `false`, writing nothing, when the order has one.
pub async fn insert(conn: &mut AsyncPgConnection, record: &SagaRecord) -> Result<bool, DbError> {
    let inserted = diesel::insert_into(sagas::table)
        .values(SagaRow::from_record(record))
        .on_conflict(sagas::order_id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Locks the sagas of `orders` that exist, in order id order, until the
/// transaction ends: a batch's sagas, taken before any of them is changed.
/// It does not wait (`NOWAIT`): if another transaction holds one of them, it
/// fails at once, and the consumer handles the batch's messages one per
/// transaction.
pub async fn lock_for_batch(
    conn: &mut AsyncPgConnection,
    orders: &[Uuid],
) -> Result<usize, DbError> {
    let locked: Vec<Uuid> = sagas::table
        .filter(sagas::order_id.eq_any(orders))
        .order(sagas::order_id.asc())
        .select(sagas::order_id)
        .for_update()
        .no_wait()
        .load(conn)
        .await?;
    Ok(locked.len())
}

/// The saga of `order_id`, locked until the transaction ends.
pub async fn lock(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
) -> Result<Option<SagaRecord>, DbError> {
    let row = sagas::table
        .find(order_id)
        .select(SagaRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(SagaRow::into_record).transpose()?)
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
) -> Result<Option<SagaRecord>, DbError> {
    let row = sagas::table
        .find(order_id)
        .select(SagaRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(SagaRow::into_record).transpose()?)
}

/// Writes the saga's changed state (everything but the creation time).
pub async fn update(conn: &mut AsyncPgConnection, record: &SagaRecord) -> Result<(), DbError> {
    let mut row = SagaRow::from_record(record);
    row.updated_at = Utc::now();
    diesel::update(sagas::table.find(record.order_id))
        .set(&row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn append_steps(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
    entries: &[StepEntry],
) -> Result<(), DbError> {
    if entries.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                saga_steps::order_id.eq(order_id),
                saga_steps::name.eq(&e.name),
                saga_steps::outcome.eq(e.outcome),
                saga_steps::reason.eq(e.reason.as_deref()),
                saga_steps::at.eq(e.at),
            )
        })
        .collect();
    diesel::insert_into(saga_steps::table)
        .values(&rows)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn steps(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
) -> Result<Vec<StoredStep>, DbError> {
    Ok(saga_steps::table
        .filter(saga_steps::order_id.eq(order_id))
        .order(saga_steps::id)
        .select(StepRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(|r| StoredStep {
            name: r.name,
            outcome: r.outcome,
            reason: r.reason,
            at: r.at,
        })
        .collect())
}

/// The history of each of `order_ids`.
pub async fn steps_of(
    conn: &mut AsyncPgConnection,
    order_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<StoredStep>>, DbError> {
    let mut by_saga: std::collections::HashMap<Uuid, Vec<StoredStep>> = Default::default();
    if order_ids.is_empty() {
        return Ok(by_saga);
    }
    let rows: Vec<(Uuid, StepRow)> = saga_steps::table
        .filter(saga_steps::order_id.eq_any(order_ids))
        .order(saga_steps::id)
        .select((saga_steps::order_id, StepRow::as_select()))
        .load(conn)
        .await?;
    for (order_id, r) in rows {
        by_saga.entry(order_id).or_default().push(StoredStep {
            name: r.name,
            outcome: r.outcome,
            reason: r.reason,
            at: r.at,
        });
    }
    Ok(by_saga)
}

/// Up to `limit` sagas past their deadline, locked, skipping those another
/// transaction holds. Rows that do not convert are returned as errors so
/// the others still proceed.
pub async fn lock_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<Result<SagaRecord, CorruptRow>>, DbError> {
    let rows: Vec<SagaRow> = diesel::sql_query(DUE_SAGAS)
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(SagaRow::into_record).collect())
}

/// How many sagas still await an answer.
pub async fn count_in_flight(conn: &mut AsyncPgConnection) -> Result<i64, DbError> {
    Ok(sagas::table
        .filter(sagas::phase.ne_all(TERMINAL_PHASES))
        .count()
        .get_result(conn)
        .await?)
}

/// Which sagas to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<SagaState>,
    pub created_before: Option<DateTime<Utc>>,
    pub created_after: Option<DateTime<Utc>>,
    /// Keyset cursor: only sagas older than this (created_at, order_id).
    pub after: Option<PageCursor>,
}

/// Up to `limit` sagas matching `filter`, newest first.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &ListFilter,
    limit: i64,
) -> Result<Vec<SagaRecord>, DbError> {
    let mut query = sagas::table
        .select(SagaRow::as_select())
        .order((sagas::created_at.desc(), sagas::order_id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(state) = filter.state {
        query = query.filter(sagas::phase.eq_any(phases_of(state)));
    }
    if let Some(before) = filter.created_before {
        query = query.filter(sagas::created_at.le(before));
    }
    if let Some(after) = filter.created_after {
        query = query.filter(sagas::created_at.ge(after));
    }
    if let Some(cursor) = filter.after {
        query = query.filter(
            sagas::created_at.lt(cursor.created_at).or(sagas::created_at
                .eq(cursor.created_at)
                .and(sagas::order_id.lt(cursor.id))),
        );
    }
    let rows = query.load(conn).await?;
    rows.into_iter()
        .map(|row| row.into_record().map_err(DbError::from))
        .collect()
}

/// A new saga's record: the order and the first transition's saga.
pub fn new_record(
    new: &NewSaga,
    saga: Saga,
    trace_id: Option<String>,
    trace_headers: BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> SagaRecord {
    SagaRecord {
        order_id: new.order_id,
        customer_id: new.customer_id.clone(),
        items: new.items.clone(),
        shipping_address: new.shipping_address.clone(),
        total: None,
        saga,
        trace_id,
        trace_headers,
        step_started_at: now,
        created_at: now,
        updated_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Address, LineItem};

    fn every_phase() -> Vec<Phase> {
        let mut phases = vec![
            Phase::Approving,
            Phase::Rejecting,
            Phase::Approved,
            Phase::Rejected,
            Phase::NeedsAttention {
                stuck: Stuck::Approving,
            },
            Phase::NeedsAttention {
                stuck: Stuck::Rejecting,
            },
        ];
        for step in Step::ALL {
            phases.push(Phase::Running(step));
            phases.push(Phase::Compensating(step));
            phases.push(Phase::NeedsAttention {
                stuck: Stuck::Compensating(step),
            });
        }
        phases
    }

    #[test]
    fn every_phase_round_trips_through_its_columns() {
        for phase in every_phase() {
            let (name, step, stuck) = phase_columns(phase);
            assert_eq!(phase_from_columns(name, step, stuck), Ok(phase));
        }
    }

    #[test]
    fn inconsistent_phase_columns_are_refused() {
        assert!(phase_from_columns("running", None, None).is_err());
        assert!(phase_from_columns("approving", Some("reserve_stock"), None).is_err());
        assert!(phase_from_columns("needs_attention", None, None).is_err());
        assert!(phase_from_columns("compensating", Some("fly"), None).is_err());
        assert!(phase_from_columns("paused", None, None).is_err());
    }

    #[test]
    fn a_record_round_trips_through_its_row_exactly() {
        let at = DateTime::from_timestamp_micros(1_800_000_000_123_456).expect("time");
        for phase in every_phase() {
            let record = SagaRecord {
                order_id: Uuid::now_v7(),
                customer_id: "customer-1".into(),
                items: vec![LineItem {
                    product_id: "sku-1".into(),
                    quantity: 2,
                }],
                shipping_address: Address {
                    recipient: "Ada".into(),
                    line1: "1 Way".into(),
                    line2: String::new(),
                    city: "London".into(),
                    postal_code: "N1".into(),
                    country_code: "GB".into(),
                },
                total: Some(Money {
                    minor_units: 2598,
                    currency: "EUR".into(),
                }),
                saga: Saga {
                    phase,
                    completed: vec![Step::ReserveStock, Step::ChargePayment],
                    compensated: vec![Step::ChargePayment],
                    failure: Some("create_shipment: TIMEOUT".into()),
                    attempts: 3,
                    deadline: Some(at),
                },
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                trace_headers: BTreeMap::from([(
                    "traceparent".to_owned(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
                )]),
                step_started_at: at,
                created_at: at,
                updated_at: at,
            };
            let back = SagaRow::from_record(&record).into_record().expect("valid");
            assert_eq!(back, record);
        }
    }

    #[test]
    fn a_record_without_total_or_failure_round_trips() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let saga = Saga::start(at, &crate::saga::Timing::default()).saga;
        let new = NewSaga {
            order_id: Uuid::now_v7(),
            customer_id: "c".into(),
            items: Vec::new(),
            shipping_address: Address::default(),
        };
        let record = new_record(&new, saga, None, BTreeMap::new(), at);
        let back = SagaRow::from_record(&record).into_record().expect("valid");
        assert_eq!(back, record);
    }

    #[test]
    fn every_state_lists_its_phases() {
        for phase in every_phase() {
            let (name, _, _) = phase_columns(phase);
            assert!(phases_of(SagaState::of(phase)).contains(&name), "{phase:?}");
            assert_eq!(
                TERMINAL_PHASES.contains(&name),
                phase.is_terminal(),
                "{phase:?}"
            );
        }
    }
}
