//! The application layer: each operation locks a saga in a transaction,
//! applies the pure transition, writes the row, its history and the
//! commands (through the outbox), and commits (or leaves the commit to the
//! consumer runtime, whose transaction it runs in).

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use domain_types::PageSize;
use service_kit::config::KafkaArgs;
use service_kit::db::{CorruptRow, DbError, PgPool, PooledConnection};
use service_kit::trace_context;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::db::{self, ListFilter, StoredStep};
use crate::messages;
use crate::record::{self, Money, NewSaga, PageCursor, SagaRecord, StepEntry};
use crate::saga::{Command, Input, Phase, Saga, Timing};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("saga of order {0} not found")]
    NotFound(Uuid),
    /// An operator input the saga's phase does not accept.
    #[error("not possible while the saga is {phase}")]
    NotApplicable { phase: &'static str },
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}

impl From<diesel::result::Error> for AppError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(error))
    }
}

impl From<CorruptRow> for AppError {
    fn from(error: CorruptRow) -> Self {
        Self::Db(DbError::Corrupt(error))
    }
}

/// A saga with its history.
#[derive(Debug, Clone)]
pub struct SagaView {
    pub record: SagaRecord,
    pub steps: Vec<StoredStep>,
}

/// The result of applying an input.
#[derive(Debug, Clone)]
pub struct Applied {
    pub record: SagaRecord,
    /// True when the input changed nothing (late, duplicate, stale).
    pub ignored: bool,
}

#[derive(Clone)]
pub struct Sagas {
    pool: PgPool,
    kafka: KafkaArgs,
    timing: Timing,
    scan_batch: i64,
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn outcome_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Approved => "approved",
        Phase::Rejected => "rejected",
        _ => "needs_attention",
    }
}

/// The span every command is enqueued in, so the participant's work is its child.
fn step_span(command: &Command, attempt: u32, order_id: Uuid) -> tracing::Span {
    let otel_name = match command {
        Command::Perform(step) => format!("saga {}", step.name()),
        Command::Compensate(step) => format!("saga compensate {}", step.name()),
        Command::ApproveOrder => "saga approve_order".to_owned(),
        Command::RejectOrder { .. } => "saga reject_order".to_owned(),
    };
    tracing::info_span!(
        "saga.step",
        otel.name = %otel_name,
        saga.step = %command.name(),
        saga.attempt = attempt,
        order_id = %order_id,
    )
}

/// Makes `span` continue the saga's stored trace, for work without an
/// incoming context (deadlines, operator actions).
fn in_saga_trace(span: tracing::Span, record: &SagaRecord) -> tracing::Span {
    let parent = trace_context::extract(
        record
            .trace_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "cannot continue the saga's trace");
    }
    span
}

fn record_metrics(
    record: &SagaRecord,
    before: &Saga,
    input: &Input,
    after: &Saga,
    now: DateTime<Utc>,
) {
    let current = before
        .current_command()
        .map(|c| c.name())
        .unwrap_or_default();
    match input {
        Input::StepSucceeded(_)
        | Input::StepFailed { .. }
        | Input::Compensated(_)
        | Input::OrderApproved
        | Input::OrderRejected => {
            metrics::histogram!("saga_step_duration_seconds", "step" => current)
                .record(seconds(record.step_started_at, now));
        }
        Input::DeadlinePassed => {
            metrics::counter!("saga_timeouts_total", "step" => current).increment(1);
        }
        Input::OperatorRetry | Input::OperatorAbort { .. } => {}
    }
    if after.phase.is_terminal() && !before.phase.is_terminal() {
        let outcome = outcome_name(after.phase);
        metrics::counter!(
            "saga_outcomes_total",
            "outcome" => outcome,
            "reason" => record::reason_label(after.failure.as_deref()),
        )
        .increment(1);
        metrics::histogram!("saga_duration_seconds", "outcome" => outcome)
            .record(seconds(record.created_at, now));
    }
}

impl Sagas {
    pub fn new(pool: PgPool, kafka: KafkaArgs, timing: Timing, scan_batch: i64) -> Self {
        Self {
            pool,
            kafka,
            timing,
            scan_batch: scan_batch.max(1),
        }
    }

    pub fn scan_batch(&self) -> i64 {
        self.scan_batch
    }

    async fn connection(&self) -> Result<PooledConnection, AppError> {
        service_kit::db::connection(&self.pool)
            .await
            .map_err(AppError::Unavailable)
    }

    /// Enqueues `commands`, each inside its step span.
    async fn send(
        &self,
        conn: &mut AsyncPgConnection,
        record: &SagaRecord,
        commands: &[Command],
    ) -> Result<(), AppError> {
        let outgoing: Vec<_> = commands
            .iter()
            .map(|command| {
                let span = step_span(command, record.saga.attempts, record.order_id);
                let _entered = span.enter();
                tracing::info!(
                    order_id = %record.order_id,
                    command = %command.name(),
                    attempt = record.saga.attempts,
                    "saga command sent"
                );
                messages::command(&self.kafka, record, command)
            })
            .collect();
        outbox::enqueue(conn, &outgoing).await?;
        Ok(())
    }

    /// Starts the saga of a new order on `conn` (inside the caller's
    /// transaction), remembering the current trace. A second start for
    /// the same order changes nothing; returns whether it started.
    #[tracing::instrument(name = "saga.start", skip_all, fields(order_id = %new.order_id))]
    pub async fn start(
        &self,
        conn: &mut AsyncPgConnection,
        new: NewSaga,
    ) -> Result<bool, AppError> {
        let now = Utc::now();
        let started = Saga::start(now, &self.timing);
        let record = db::new_record(
            &new,
            started.saga,
            trace_context::current_trace_id(),
            trace_context::current_context_headers(),
            now,
        );
        if !db::insert(conn, &record).await? {
            tracing::info!(order_id = %new.order_id, "saga already started");
            return Ok(false);
        }
        let entries: Vec<StepEntry> = started
            .commands
            .iter()
            .map(|command| StepEntry {
                name: command.name(),
                outcome: "started",
                reason: None,
                at: now,
            })
            .collect();
        db::append_steps(conn, record.order_id, &entries).await?;
        self.send(conn, &record, &started.commands).await?;
        metrics::counter!("saga_started_total").increment(1);
        tracing::info!(order_id = %record.order_id, items = record.items.len(), "saga started");
        Ok(true)
    }

    /// Applies `input` to the (locked) saga and persists the result.
    async fn transition(
        &self,
        conn: &mut AsyncPgConnection,
        mut record: SagaRecord,
        input: &Input,
        reserved_total: Option<Money>,
    ) -> Result<Applied, AppError> {
        let now = Utc::now();
        let t = record.saga.apply(input, now, &self.timing);
        if t.ignored {
            tracing::info!(order_id = %record.order_id, ?input, phase = ?record.saga.phase, "saga input ignored");
            return Ok(Applied {
                record,
                ignored: true,
            });
        }
        let before = record.saga.clone();
        let entries = record::history(&before, input, &t, now);
        record_metrics(&record, &before, input, &t.saga, now);
        if let Some(total) = reserved_total {
            record.total = Some(total);
        }
        record.saga = t.saga;
        if !t.commands.is_empty() {
            record.step_started_at = now;
        }
        record.updated_at = now;
        db::update(conn, &record).await?;
        db::append_steps(conn, record.order_id, &entries).await?;
        self.send(conn, &record, &t.commands).await?;
        if record.saga.phase.is_terminal() {
            tracing::info!(
                order_id = %record.order_id,
                outcome = outcome_name(record.saga.phase),
                failure = record.saga.failure.as_deref().unwrap_or_default(),
                "saga ended"
            );
        }
        Ok(Applied {
            record,
            ignored: false,
        })
    }

    /// Applies a participant's reply or an order event on `conn` (inside the
    /// caller's transaction). `None` when no saga exists for the order.
    #[tracing::instrument(name = "saga.apply", skip_all, fields(order_id = %order_id))]
    pub async fn apply(
        &self,
        conn: &mut AsyncPgConnection,
        order_id: Uuid,
        input: &Input,
        reserved_total: Option<Money>,
    ) -> Result<Option<Applied>, AppError> {
        let Some(record) = db::lock(conn, order_id).await? else {
            return Ok(None);
        };
        Ok(Some(
            self.transition(conn, record, input, reserved_total).await?,
        ))
    }

    /// Delivers `DeadlinePassed` to up to one batch of sagas past their
    /// deadline, in one transaction. Returns how many were due.
    pub async fn scan_deadlines(&self) -> Result<usize, AppError> {
        let mut conn = self.connection().await?;
        conn.transaction::<_, AppError, _>(async |conn| {
            let due = db::lock_due(conn, self.scan_batch).await?;
            let count = due.len();
            for record in due {
                match record {
                    Ok(record) => self.deadline_passed(conn, record).await?,
                    Err(corrupt) => {
                        tracing::error!(error = %corrupt, "saga past its deadline skipped");
                    }
                }
            }
            Ok(count)
        })
        .await
    }

    async fn deadline_passed(
        &self,
        conn: &mut AsyncPgConnection,
        record: SagaRecord,
    ) -> Result<(), AppError> {
        let span = in_saga_trace(
            tracing::info_span!("saga.deadline", order_id = %record.order_id),
            &record,
        );
        async {
            let deadline = record
                .saga
                .deadline
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            match record.saga.phase {
                Phase::Running(step) => {
                    // No message: the OpenTelemetry layer would name the
                    // span event after it, and the trace shows it by name.
                    tracing::event!(
                        name: "saga.step.timeout",
                        tracing::Level::WARN,
                        {
                            saga.step = step.name(),
                            saga.deadline = %deadline,
                            order_id = %record.order_id,
                        }
                    );
                }
                _ => {
                    let command = record.saga.current_command().map(|c| c.name());
                    tracing::info!(
                        saga.step = command.as_deref().unwrap_or_default(),
                        saga.deadline = %deadline,
                        saga.attempt = record.saga.attempts,
                        order_id = %record.order_id,
                        "saga command unanswered"
                    );
                }
            }
            self.transition(conn, record, &Input::DeadlinePassed, None)
                .await
                .map(|_| ())
        }
        .instrument(span)
        .await
    }

    /// Applies an operator's input with the saga locked; refused when the
    /// saga's phase does not accept it.
    #[tracing::instrument(name = "saga.operate", skip_all, fields(order_id = %order_id))]
    pub async fn operate(&self, order_id: Uuid, input: Input) -> Result<SagaView, AppError> {
        let mut conn = self.connection().await?;
        conn.transaction::<_, AppError, _>(async |conn| {
            let record = db::lock(conn, order_id)
                .await?
                .ok_or(AppError::NotFound(order_id))?;
            let phase = db::phase_columns(record.saga.phase).0;
            let span = in_saga_trace(
                tracing::info_span!("saga.operator", order_id = %order_id),
                &record,
            );
            let applied = self
                .transition(conn, record, &input, None)
                .instrument(span)
                .await?;
            if applied.ignored {
                return Err(AppError::NotApplicable { phase });
            }
            tracing::info!(order_id = %order_id, ?input, "operator input applied");
            Ok(())
        })
        .await?;
        self.get(order_id).await
    }

    pub async fn get(&self, order_id: Uuid) -> Result<SagaView, AppError> {
        let mut conn = self.connection().await?;
        let record = db::find(&mut conn, order_id)
            .await?
            .ok_or(AppError::NotFound(order_id))?;
        let steps = db::steps(&mut conn, order_id).await?;
        Ok(SagaView { record, steps })
    }

    /// One page of sagas, newest first, and the cursor of the next page.
    pub async fn list(
        &self,
        filter: &ListFilter,
        page_size: PageSize,
    ) -> Result<(Vec<SagaView>, Option<PageCursor>), AppError> {
        let mut conn = self.connection().await?;
        let records = db::list(&mut conn, filter, page_size.fetch_limit()).await?;
        let (records, next) = page_size.split(records, |last| PageCursor {
            created_at: last.created_at,
            id: last.order_id,
        });
        let ids: Vec<Uuid> = records.iter().map(|r| r.order_id).collect();
        let mut steps = db::steps_of(&mut conn, &ids).await?;
        let views = records
            .into_iter()
            .map(|record| SagaView {
                steps: steps.remove(&record.order_id).unwrap_or_default(),
                record,
            })
            .collect();
        Ok((views, next))
    }

    /// Sets the `sagas_in_flight` gauge to the number of sagas awaiting an answer.
    pub async fn refresh_in_flight(&self) -> Result<i64, AppError> {
        let mut conn = self.connection().await?;
        let count = db::count_in_flight(&mut conn).await?;
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("sagas_in_flight").set(count as f64);
        Ok(count)
    }
}
