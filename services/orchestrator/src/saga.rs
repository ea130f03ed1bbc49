//! The order saga: reserve stock → charge payment → create shipment →
//! approve the order. A failed step, or one whose reply misses its deadline,
//! fails the saga: every step that took effect (or may have, having timed
//! out) is compensated in reverse order, then the order is rejected with the
//! failing step's reason.
//!
//! Pure: no IO, no clock. The caller passes `now`, persists the returned
//! saga together with the returned commands in one transaction, and delivers
//! [`Input::DeadlinePassed`] when `deadline` is reached.
//!
//! Forward steps are never retried: their timeout fails the saga. A
//! compensation, approval or rejection is re-sent when its deadline passes,
//! each time waiting twice as long (capped), and after `max_attempts` sends
//! the saga needs attention: it stops where it was, and an operator can
//! resume it ([`Input::OperatorRetry`]) or abort a running saga
//! ([`Input::OperatorAbort`]).
//!
//! Rules that hold for every sequence of inputs (see the property tests):
//! - a reply that does not answer the command the saga is waiting for (late,
//!   duplicate, out of order) changes nothing and sends nothing;
//! - only steps that completed, timed out or were aborted are compensated,
//!   each once acknowledged, in the reverse order they were started;
//! - a saga ends approved or rejected and never changes after that, or needs
//!   attention and changes only when an operator retries; approved sagas
//!   compensated nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A forward step with a compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    ReserveStock,
    ChargePayment,
    CreateShipment,
}

impl Step {
    pub const ALL: [Step; 3] = [
        Step::ReserveStock,
        Step::ChargePayment,
        Step::CreateShipment,
    ];

    fn next(self) -> Option<Step> {
        match self {
            Step::ReserveStock => Some(Step::ChargePayment),
            Step::ChargePayment => Some(Step::CreateShipment),
            Step::CreateShipment => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::ReserveStock => "reserve_stock",
            Step::ChargePayment => "charge_payment",
            Step::CreateShipment => "create_shipment",
        }
    }

    /// The step named `name` (as [`Step::name`] spells it).
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.name() == name)
    }
}

/// What the orchestrator asks a participant to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Perform(Step),
    Compensate(Step),
    ApproveOrder,
    RejectOrder { reason: String },
}

impl Command {
    /// How history and the API name the command: `reserve_stock`,
    /// `compensate:charge_payment`, `approve_order`, `reject_order`.
    pub fn name(&self) -> String {
        match self {
            Command::Perform(step) => step.name().to_owned(),
            Command::Compensate(step) => format!("compensate:{}", step.name()),
            Command::ApproveOrder => "approve_order".to_owned(),
            Command::RejectOrder { .. } => "reject_order".to_owned(),
        }
    }
}

/// What happens to a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A participant performed `step`.
    StepSucceeded(Step),
    /// A participant refused `step`, with a reason code such as `OUT_OF_STOCK`.
    StepFailed {
        step: Step,
        reason: String,
    },
    /// A participant undid `step` (or confirmed it never happened).
    Compensated(Step),
    OrderApproved,
    OrderRejected,
    /// The current deadline is reached (the caller checked `now >= deadline`).
    DeadlinePassed,
    /// An operator asks to send the current command again now, with the
    /// attempts reset; a saga needing attention resumes where it stopped.
    OperatorRetry,
    /// An operator gives up on a running saga: the current forward step
    /// counts as failed (and, as it may have taken effect, is compensated),
    /// or an approval not yet confirmed is abandoned.
    OperatorAbort {
        reason: String,
    },
}

/// Where a saga needing attention stopped: the phase whose command was
/// sent `max_attempts` times without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    Compensating(Step),
    Approving,
    Rejecting,
}

impl Stuck {
    pub fn phase(self) -> Phase {
        match self {
            Stuck::Compensating(step) => Phase::Compensating(step),
            Stuck::Approving => Phase::Approving,
            Stuck::Rejecting => Phase::Rejecting,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running(Step),
    Approving,
    Compensating(Step),
    Rejecting,
    Approved,
    Rejected,
    /// Compensating or closing failed more often than allowed: an operator
    /// must look. No further command is sent until an operator retries.
    NeedsAttention {
        stuck: Stuck,
    },
}

impl Phase {
    /// No command is awaited: approved, rejected, or needing attention.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Approved | Phase::Rejected | Phase::NeedsAttention { .. }
        )
    }

    /// Approved or rejected: nothing can change the saga any more.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Approved | Phase::Rejected)
    }
}

/// Deadlines and retry limits.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a participant has to answer a command (the first send).
    pub step_timeout: Duration,
    /// Sends of one compensation, approval or rejection before the saga
    /// needs attention.
    pub max_attempts: u32,
    /// The longest wait for an answer to a re-sent command; the n-th send
    /// waits `step_timeout * 2^(n-1)` up to this.
    pub retry_backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(30),
            max_attempts: 10,
            retry_backoff_max: Duration::from_secs(300),
        }
    }
}

impl Timing {
    /// How long the answer to the `attempt`-th send (1-based) of a
    /// compensation, approval or rejection may take.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.step_timeout
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.retry_backoff_max)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub phase: Phase,
    /// Forward steps that took effect or may have (timed out, aborted), in
    /// start order.
    pub completed: Vec<Step>,
    /// Compensations acknowledged, in the order they happened.
    pub compensated: Vec<Step>,
    /// Why the saga failed; `None` while it has not.
    pub failure: Option<String>,
    /// Sends of the current command.
    pub attempts: u32,
    /// When the current command's answer is due; `None` once terminal.
    pub deadline: Option<DateTime<Utc>>,
}

/// A transition's result: the new saga and the commands to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub saga: Saga,
    pub commands: Vec<Command>,
    /// True when the input changed nothing (late, duplicate, stale).
    pub ignored: bool,
}

fn after(now: DateTime<Utc>, wait: Duration) -> Option<DateTime<Utc>> {
    let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    Some(
        now.checked_add_signed(wait)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

impl Saga {
    /// A new saga and its first command.
    pub fn start(now: DateTime<Utc>, timing: &Timing) -> Transition {
        let saga = Saga {
            phase: Phase::Running(Step::ReserveStock),
            completed: Vec::new(),
            compensated: Vec::new(),
            failure: None,
            attempts: 1,
            deadline: after(now, timing.step_timeout),
        };
        Transition {
            saga,
            commands: vec![Command::Perform(Step::ReserveStock)],
            ignored: false,
        }
    }

    /// Steps still to compensate, next first.
    pub fn to_compensate(&self) -> Vec<Step> {
        self.completed
            .iter()
            .rev()
            .filter(|step| !self.compensated.contains(step))
            .copied()
            .collect()
    }

    /// The command the saga is waiting on (for a saga needing attention, the
    /// one it gave up on); `None` once approved or rejected.
    pub fn current_command(&self) -> Option<Command> {
        let phase = match self.phase {
            Phase::NeedsAttention { stuck } => stuck.phase(),
            phase => phase,
        };
        match phase {
            Phase::Running(step) => Some(Command::Perform(step)),
            Phase::Compensating(step) => Some(Command::Compensate(step)),
            Phase::Approving => Some(Command::ApproveOrder),
            Phase::Rejecting => Some(Command::RejectOrder {
                reason: self.failure.clone().unwrap_or_default(),
            }),
            Phase::Approved | Phase::Rejected | Phase::NeedsAttention { .. } => None,
        }
    }

    pub fn apply(&self, input: &Input, now: DateTime<Utc>, timing: &Timing) -> Transition {
        let mut next = self.clone();
        let commands = match (self.phase, input) {
            (Phase::Running(current), Input::StepSucceeded(step)) if *step == current => {
                next.completed.push(current);
                match current.next() {
                    Some(following) => next.send(
                        Phase::Running(following),
                        Command::Perform(following),
                        now,
                        timing,
                    ),
                    None => next.send(Phase::Approving, Command::ApproveOrder, now, timing),
                }
            }
            (Phase::Running(current), Input::StepFailed { step, reason }) if *step == current => {
                next.failure = Some(format!("{}: {reason}", current.name()));
                next.compensate_or_reject(now, timing)
            }
            (Phase::Running(current), Input::DeadlinePassed) => {
                // The command may have taken effect: compensate it too.
                next.completed.push(current);
                next.failure = Some(format!("{}: TIMEOUT", current.name()));
                next.compensate_or_reject(now, timing)
            }
            (Phase::Running(current), Input::OperatorAbort { reason }) => {
                // As with a timeout, the command may have taken effect.
                next.completed.push(current);
                next.failure = Some(format!("operator: {reason}"));
                next.compensate_or_reject(now, timing)
            }
            (Phase::Approving, Input::OperatorAbort { reason }) => {
                next.failure = Some(format!("operator: {reason}"));
                next.compensate_or_reject(now, timing)
            }
            (Phase::Compensating(current), Input::Compensated(step)) if *step == current => {
                next.compensated.push(current);
                next.compensate_or_reject(now, timing)
            }
            (Phase::Approving, Input::OrderApproved) => next.finish(Phase::Approved),
            (Phase::Rejecting, Input::OrderRejected) => next.finish(Phase::Rejected),
            (
                Phase::Compensating(_) | Phase::Approving | Phase::Rejecting,
                Input::DeadlinePassed,
            ) => next.retry(now, timing),
            (Phase::NeedsAttention { stuck }, Input::OperatorRetry) => {
                next.phase = stuck.phase();
                next.resend_now(now, timing)
            }
            (
                Phase::Running(_) | Phase::Compensating(_) | Phase::Approving | Phase::Rejecting,
                Input::OperatorRetry,
            ) => next.resend_now(now, timing),
            _ => {
                return Transition {
                    saga: next,
                    commands: Vec::new(),
                    ignored: true,
                };
            }
        };
        Transition {
            saga: next,
            commands,
            ignored: false,
        }
    }

    /// How long the `attempt`-th send of the command of `phase` may wait.
    fn wait(phase: Phase, attempt: u32, timing: &Timing) -> Duration {
        match phase {
            Phase::Running(_) => timing.step_timeout,
            _ => timing.backoff(attempt),
        }
    }

    fn send(
        &mut self,
        phase: Phase,
        command: Command,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> Vec<Command> {
        self.phase = phase;
        self.attempts = 1;
        self.deadline = after(now, Self::wait(phase, 1, timing));
        vec![command]
    }

    fn compensate_or_reject(&mut self, now: DateTime<Utc>, timing: &Timing) -> Vec<Command> {
        match self.to_compensate().first() {
            Some(&step) => self.send(
                Phase::Compensating(step),
                Command::Compensate(step),
                now,
                timing,
            ),
            None => {
                let reason = self.failure.clone().unwrap_or_default();
                self.send(
                    Phase::Rejecting,
                    Command::RejectOrder { reason },
                    now,
                    timing,
                )
            }
        }
    }

    fn finish(&mut self, phase: Phase) -> Vec<Command> {
        self.phase = phase;
        self.deadline = None;
        Vec::new()
    }

    /// Sends the current command again as a first attempt.
    fn resend_now(&mut self, now: DateTime<Utc>, timing: &Timing) -> Vec<Command> {
        match self.current_command() {
            Some(command) => self.send(self.phase, command, now, timing),
            None => Vec::new(),
        }
    }

    /// Sends the current command again, or gives up after `max_attempts`.
    fn retry(&mut self, now: DateTime<Utc>, timing: &Timing) -> Vec<Command> {
        let stuck = match self.phase {
            Phase::Compensating(step) => Stuck::Compensating(step),
            Phase::Approving => Stuck::Approving,
            Phase::Rejecting => Stuck::Rejecting,
            _ => return Vec::new(),
        };
        if self.attempts >= timing.max_attempts {
            return self.finish(Phase::NeedsAttention { stuck });
        }
        let Some(command) = self.current_command() else {
            return Vec::new();
        };
        self.attempts += 1;
        self.deadline = after(now, Self::wait(self.phase, self.attempts, timing));
        vec![command]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    /// Given a started saga, when the inputs arrive in order, then the
    /// commands sent along the way and the final saga.
    fn run(inputs: &[Input]) -> (Saga, Vec<Command>) {
        let timing = Timing::default();
        let start = Saga::start(now(), &timing);
        let mut saga = start.saga;
        let mut commands = start.commands;
        for input in inputs {
            let t = saga.apply(input, now(), &timing);
            saga = t.saga;
            commands.extend(t.commands);
        }
        (saga, commands)
    }

    use Command::{ApproveOrder, Compensate, Perform};
    use Step::{ChargePayment, CreateShipment, ReserveStock};

    #[test]
    fn the_happy_path_reserves_charges_ships_and_approves() {
        let (saga, commands) = run(&[
            Input::StepSucceeded(ReserveStock),
            Input::StepSucceeded(ChargePayment),
            Input::StepSucceeded(CreateShipment),
            Input::OrderApproved,
        ]);
        assert_eq!(
            commands,
            [
                Perform(ReserveStock),
                Perform(ChargePayment),
                Perform(CreateShipment),
                ApproveOrder
            ]
        );
        assert_eq!(saga.phase, Phase::Approved);
        assert!(saga.compensated.is_empty());
        assert_eq!(saga.deadline, None);
    }

    #[test]
    fn a_failed_first_step_rejects_without_compensating() {
        let (saga, commands) = run(&[
            Input::StepFailed {
                step: ReserveStock,
                reason: "OUT_OF_STOCK".into(),
            },
            Input::OrderRejected,
        ]);
        assert_eq!(
            commands[1],
            Command::RejectOrder {
                reason: "reserve_stock: OUT_OF_STOCK".into()
            }
        );
        assert_eq!(commands.len(), 2);
        assert_eq!(saga.phase, Phase::Rejected);
    }

    #[test]
    fn a_failed_shipment_refunds_then_releases_then_rejects() {
        let (saga, commands) = run(&[
            Input::StepSucceeded(ReserveStock),
            Input::StepSucceeded(ChargePayment),
            Input::StepFailed {
                step: CreateShipment,
                reason: "UNDELIVERABLE".into(),
            },
            Input::Compensated(ChargePayment),
            Input::Compensated(ReserveStock),
            Input::OrderRejected,
        ]);
        assert_eq!(
            &commands[3..],
            [
                Compensate(ChargePayment),
                Compensate(ReserveStock),
                Command::RejectOrder {
                    reason: "create_shipment: UNDELIVERABLE".into()
                },
            ]
        );
        assert_eq!(saga.phase, Phase::Rejected);
    }

    #[test]
    fn a_timed_out_step_is_compensated_because_it_may_have_taken_effect() {
        let (saga, commands) = run(&[
            Input::StepSucceeded(ReserveStock),
            Input::StepSucceeded(ChargePayment),
            Input::DeadlinePassed,
        ]);
        assert_eq!(commands.last(), Some(&Compensate(CreateShipment)));
        assert_eq!(saga.failure.as_deref(), Some("create_shipment: TIMEOUT"));
    }

    #[test]
    fn a_late_success_after_a_timeout_changes_nothing() {
        let (before, _) = run(&[Input::StepSucceeded(ReserveStock), Input::DeadlinePassed]);
        let late = before.apply(
            &Input::StepSucceeded(ChargePayment),
            now(),
            &Timing::default(),
        );
        assert!(late.ignored);
        assert_eq!(late.saga, before);
        assert!(late.commands.is_empty());
    }

    #[test]
    fn a_duplicate_reply_is_ignored() {
        let (before, _) = run(&[Input::StepSucceeded(ReserveStock)]);
        let again = before.apply(
            &Input::StepSucceeded(ReserveStock),
            now(),
            &Timing::default(),
        );
        assert!(again.ignored);
        assert_eq!(again.saga, before);
    }

    #[test]
    fn a_compensation_that_keeps_timing_out_ends_in_needs_attention() {
        let timing = Timing {
            step_timeout: Duration::from_secs(1),
            max_attempts: 3,
            ..Timing::default()
        };
        let mut saga = Saga::start(now(), &timing).saga;
        for input in [
            Input::StepSucceeded(ReserveStock),
            Input::StepFailed {
                step: ChargePayment,
                reason: "DECLINED".into(),
            },
        ] {
            saga = saga.apply(&input, now(), &timing).saga;
        }
        let mut resent = 0;
        while !saga.phase.is_terminal() {
            let t = saga.apply(&Input::DeadlinePassed, now(), &timing);
            resent += t
                .commands
                .iter()
                .filter(|c| **c == Compensate(ReserveStock))
                .count();
            saga = t.saga;
        }
        assert_eq!(
            saga.phase,
            Phase::NeedsAttention {
                stuck: Stuck::Compensating(ReserveStock)
            }
        );
        assert_eq!(resent, 2, "sent three times in all, then given up");
    }

    #[test]
    fn approval_is_retried_on_timeout_and_never_compensates() {
        let (saga, commands) = run(&[
            Input::StepSucceeded(ReserveStock),
            Input::StepSucceeded(ChargePayment),
            Input::StepSucceeded(CreateShipment),
            Input::DeadlinePassed,
            Input::OrderApproved,
        ]);
        assert_eq!(commands.iter().filter(|c| **c == ApproveOrder).count(), 2);
        assert_eq!(saga.phase, Phase::Approved);
        assert!(saga.compensated.is_empty());
    }

    fn given(inputs: &[Input]) -> Saga {
        run(inputs).0
    }

    fn compensating_reserve_stock(timing: &Timing) -> Saga {
        let mut saga = Saga::start(now(), timing).saga;
        for input in [
            Input::StepSucceeded(ReserveStock),
            Input::StepFailed {
                step: ChargePayment,
                reason: "DECLINED".into(),
            },
        ] {
            saga = saga.apply(&input, now(), timing).saga;
        }
        saga
    }

    #[test]
    fn a_resent_compensation_waits_twice_as_long_each_time_up_to_the_cap() {
        let timing = Timing {
            step_timeout: Duration::from_secs(1),
            max_attempts: 10,
            retry_backoff_max: Duration::from_secs(5),
        };
        let mut saga = compensating_reserve_stock(&timing);
        assert_eq!(saga.deadline, Some(now() + chrono::Duration::seconds(1)));
        let mut waits = Vec::new();
        for _ in 0..5 {
            let at = saga.deadline.expect("deadline");
            saga = saga.apply(&Input::DeadlinePassed, at, &timing).saga;
            waits.push((saga.deadline.expect("deadline") - at).num_seconds());
        }
        assert_eq!(waits, [2, 4, 5, 5, 5]);
        assert_eq!(saga.attempts, 6);
    }

    #[test]
    fn a_forward_step_waits_the_step_timeout_and_is_never_resent() {
        let timing = Timing::default();
        let saga = given(&[Input::StepSucceeded(ReserveStock)]);
        assert_eq!(saga.deadline, Some(now() + chrono::Duration::seconds(30)));
        let t = saga.apply(&Input::DeadlinePassed, now(), &timing);
        assert!(!t.commands.contains(&Perform(ChargePayment)));
        assert_eq!(t.saga.phase, Phase::Compensating(ChargePayment));
    }

    #[test]
    fn an_operator_retry_resumes_a_saga_needing_attention_where_it_stopped() {
        let timing = Timing {
            step_timeout: Duration::from_secs(1),
            max_attempts: 2,
            ..Timing::default()
        };
        let mut saga = compensating_reserve_stock(&timing);
        while !saga.phase.is_terminal() {
            saga = saga.apply(&Input::DeadlinePassed, now(), &timing).saga;
        }
        assert_eq!(saga.deadline, None);
        let resumed = saga.apply(&Input::OperatorRetry, now(), &timing);
        assert!(!resumed.ignored);
        assert_eq!(resumed.commands, [Compensate(ReserveStock)]);
        assert_eq!(resumed.saga.phase, Phase::Compensating(ReserveStock));
        assert_eq!(resumed.saga.attempts, 1);
        assert_eq!(
            resumed.saga.deadline,
            Some(now() + chrono::Duration::seconds(1))
        );
        let done = resumed
            .saga
            .apply(&Input::Compensated(ReserveStock), now(), &timing);
        assert_eq!(done.saga.phase, Phase::Rejecting);
    }

    #[test]
    fn an_operator_retry_resends_the_running_step_with_attempts_reset() {
        let timing = Timing::default();
        let saga = given(&[Input::StepSucceeded(ReserveStock)]);
        let later = now() + chrono::Duration::seconds(10);
        let t = saga.apply(&Input::OperatorRetry, later, &timing);
        assert_eq!(t.commands, [Perform(ChargePayment)]);
        assert_eq!(t.saga.phase, Phase::Running(ChargePayment));
        assert_eq!(t.saga.attempts, 1);
        assert_eq!(t.saga.deadline, Some(later + chrono::Duration::seconds(30)));
        assert_eq!(t.saga.completed, [ReserveStock]);
    }

    #[test]
    fn an_operator_retry_changes_nothing_once_approved_or_rejected() {
        let approved = given(&[
            Input::StepSucceeded(ReserveStock),
            Input::StepSucceeded(ChargePayment),
            Input::StepSucceeded(CreateShipment),
            Input::OrderApproved,
        ]);
        let rejected = given(&[
            Input::StepFailed {
                step: ReserveStock,
                reason: "OUT_OF_STOCK".into(),
            },
            Input::OrderRejected,
        ]);
        for saga in [approved, rejected] {
            let t = saga.apply(&Input::OperatorRetry, now(), &Timing::default());
            assert!(t.ignored);
            assert_eq!(t.saga, saga);
            assert!(t.commands.is_empty());
        }
    }

    #[test]
    fn an_operator_abort_compensates_the_running_step_because_it_may_have_taken_effect() {
        let (saga, commands) = run(&[
            Input::StepSucceeded(ReserveStock),
            Input::OperatorAbort {
                reason: "customer cancelled".into(),
            },
            Input::Compensated(ChargePayment),
            Input::Compensated(ReserveStock),
        ]);
        assert_eq!(
            &commands[2..],
            [
                Compensate(ChargePayment),
                Compensate(ReserveStock),
                Command::RejectOrder {
                    reason: "operator: customer cancelled".into()
                }
            ]
        );
        assert_eq!(saga.phase, Phase::Rejecting);
        assert_eq!(
            saga.failure.as_deref(),
            Some("operator: customer cancelled")
        );
    }

    #[test]
    fn an_operator_abort_while_approving_compensates_every_step() {
        let (saga, commands) = run(&[
            Input::StepSucceeded(ReserveStock),
            Input::StepSucceeded(ChargePayment),
            Input::StepSucceeded(CreateShipment),
            Input::OperatorAbort {
                reason: "fraud".into(),
            },
        ]);
        assert_eq!(commands.last(), Some(&Compensate(CreateShipment)));
        assert_eq!(
            saga.to_compensate(),
            [CreateShipment, ChargePayment, ReserveStock]
        );
    }

    #[test]
    fn an_operator_abort_is_ignored_unless_running_or_approving() {
        let compensating = compensating_reserve_stock(&Timing::default());
        let rejecting = given(&[Input::StepFailed {
            step: ReserveStock,
            reason: "OUT_OF_STOCK".into(),
        }]);
        for saga in [compensating, rejecting] {
            let t = saga.apply(
                &Input::OperatorAbort { reason: "x".into() },
                now(),
                &Timing::default(),
            );
            assert!(t.ignored, "{:?}", saga.phase);
            assert_eq!(t.saga, saga);
        }
    }

    #[test]
    fn commands_are_named_for_history_and_the_api() {
        assert_eq!(Perform(ReserveStock).name(), "reserve_stock");
        assert_eq!(
            Compensate(ChargePayment).name(),
            "compensate:charge_payment"
        );
        assert_eq!(ApproveOrder.name(), "approve_order");
        assert_eq!(
            Command::RejectOrder { reason: "r".into() }.name(),
            "reject_order"
        );
        for step in Step::ALL {
            assert_eq!(Step::parse(step.name()), Some(step));
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// One simulated saga: every state (`inputs[i]` led from `history[i]`
    /// to `history[i + 1]`), the commands sent, and what the order service
    /// ended up doing with the order.
    struct Run {
        history: Vec<Saga>,
        inputs: Vec<Input>,
        sent: Vec<Command>,
        order_approved: bool,
        order_rejected: bool,
        timing: Timing,
    }

    /// Participants answer each command at random (succeed, refuse, or never
    /// answer); the order service approves or rejects an order once, never
    /// both; the network loses, duplicates and reorders replies; the clock
    /// fires deadlines whenever nothing else happens; an operator now and
    /// then (at most three times) retries or aborts, and may resume a saga
    /// that needs attention.
    fn simulate(seed: u64) -> Run {
        let mut rng = StdRng::seed_from_u64(seed);
        let timing = Timing {
            step_timeout: Duration::from_secs(1),
            max_attempts: 4,
            retry_backoff_max: Duration::from_secs(4),
        };
        let mut now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let start = Saga::start(now, &timing);
        let mut saga = start.saga;
        let mut history = vec![saga.clone()];
        let mut sent = Vec::new();
        let mut in_flight: Vec<Input> = Vec::new();
        let mut inputs = Vec::new();
        let mut to_answer = start.commands;
        let mut operator_budget = rng.random_range(0..=3u32);
        let (mut order_approved, mut order_rejected) = (false, false);

        for _ in 0..10_000 {
            for command in to_answer.drain(..) {
                sent.push(command.clone());
                let reply = match &command {
                    Command::Perform(step) => match rng.random_range(0..10) {
                        0..=5 => Some(Input::StepSucceeded(*step)),
                        6..=7 => Some(Input::StepFailed {
                            step: *step,
                            reason: "REFUSED".into(),
                        }),
                        _ => None,
                    },
                    Command::Compensate(step) => {
                        rng.random_bool(0.7).then_some(Input::Compensated(*step))
                    }
                    Command::ApproveOrder => {
                        let delivered = rng.random_bool(0.7) && !order_rejected;
                        order_approved |= delivered;
                        delivered.then_some(Input::OrderApproved)
                    }
                    Command::RejectOrder { .. } => {
                        let delivered = rng.random_bool(0.7) && !order_approved;
                        order_rejected |= delivered;
                        delivered.then_some(Input::OrderRejected)
                    }
                };
                if let Some(reply) = reply {
                    if rng.random_bool(0.2) {
                        in_flight.push(reply.clone());
                    }
                    in_flight.push(reply);
                }
            }
            let stuck = matches!(saga.phase, Phase::NeedsAttention { .. });
            let idle = saga.phase.is_terminal() && in_flight.is_empty();
            if idle && !(stuck && operator_budget > 0) {
                break;
            }
            let input = if operator_budget > 0 && (idle || rng.random_bool(0.05)) {
                operator_budget -= 1;
                if rng.random_bool(0.5) {
                    Input::OperatorRetry
                } else {
                    Input::OperatorAbort {
                        reason: "cancelled".into(),
                    }
                }
            } else if !in_flight.is_empty() && rng.random_bool(0.8) {
                in_flight.swap_remove(rng.random_range(0..in_flight.len()))
            } else if let Some(deadline) = saga.deadline {
                now = deadline;
                Input::DeadlinePassed
            } else {
                in_flight.swap_remove(rng.random_range(0..in_flight.len()))
            };
            let t = saga.apply(&input, now, &timing);
            saga = t.saga;
            to_answer = t.commands;
            history.push(saga.clone());
            inputs.push(input);
        }
        Run {
            history,
            inputs,
            sent,
            order_approved,
            order_rejected,
            timing,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_saga_terminates(seed in any::<u64>()) {
            let run = simulate(seed);
            let last = run.history.last().expect("history");
            prop_assert!(last.phase.is_terminal(), "stuck in {:?}", last.phase);
            prop_assert_eq!(last.deadline, None);
        }

        #[test]
        fn only_completed_timed_out_or_aborted_steps_are_compensated_in_reverse(seed in any::<u64>()) {
            let run = simulate(seed);
            let last = run.history.last().expect("history");
            for command in &run.sent {
                if let Command::Compensate(step) = command {
                    prop_assert!(last.completed.contains(step), "compensated {step:?} that never ran");
                }
            }
            let mut reversed = last.completed.clone();
            reversed.reverse();
            prop_assert!(reversed.starts_with(&last.compensated), "{:?} not a prefix of {:?}", last.compensated, reversed);
            if last.phase == Phase::Rejected {
                prop_assert_eq!(&last.compensated, &reversed, "rejected before compensating everything");
            }
        }

        #[test]
        fn a_step_counts_as_completed_only_on_its_own_success_its_timeout_or_an_abort(seed in any::<u64>()) {
            let run = simulate(seed);
            for (i, input) in run.inputs.iter().enumerate() {
                let (before, after) = (&run.history[i], &run.history[i + 1]);
                if after.completed.len() > before.completed.len() {
                    let step = *after.completed.last().expect("grew");
                    prop_assert_eq!(before.phase, Phase::Running(step));
                    prop_assert!(
                        *input == Input::StepSucceeded(step)
                            || *input == Input::DeadlinePassed
                            || matches!(input, Input::OperatorAbort { .. }),
                        "{:?} completed by {:?}", step, input
                    );
                }
                if after.compensated.len() > before.compensated.len() {
                    let step = *after.compensated.last().expect("grew");
                    prop_assert_eq!(input, &Input::Compensated(step));
                }
            }
        }

        #[test]
        fn a_saga_is_never_both_approved_and_rejected_and_an_outcome_is_final(seed in any::<u64>()) {
            let run = simulate(seed);
            let history = &run.history;
            prop_assert!(!(history.iter().any(|s| s.phase == Phase::Approved)
                && history.iter().any(|s| s.phase == Phase::Rejected)));
            let approve_sent = run.sent.contains(&Command::ApproveOrder);
            let reject_sent = run.sent.iter().any(|c| matches!(c, Command::RejectOrder { .. }));
            let aborted_approval = run.inputs.iter().enumerate().any(|(i, input)| {
                history[i].phase == Phase::Approving && matches!(input, Input::OperatorAbort { .. })
            });
            prop_assert!(!(approve_sent && reject_sent) || aborted_approval,
                "asked to approve and to reject without an operator abort");
            if let Some(index) = history.iter().position(|s| s.phase.is_final()) {
                prop_assert!(history[index..].iter().all(|s| *s == history[index]));
            }
            for (i, input) in run.inputs.iter().enumerate() {
                if matches!(history[i].phase, Phase::NeedsAttention { .. }) && history[i + 1] != history[i] {
                    prop_assert_eq!(input, &Input::OperatorRetry, "left needing attention without an operator");
                }
            }
            let last = history.last().expect("history");
            if last.phase == Phase::Approved {
                prop_assert!(last.failure.is_none() && last.compensated.is_empty());
                prop_assert_eq!(&last.completed, &Step::ALL.to_vec());
                prop_assert!(run.order_approved && !reject_sent);
            }
            if last.phase == Phase::Rejected {
                prop_assert!(run.order_rejected && !run.order_approved);
            }
        }

        #[test]
        fn a_resent_command_waits_twice_as_long_as_before_up_to_the_cap(seed in any::<u64>()) {
            let run = simulate(seed);
            for (i, input) in run.inputs.iter().enumerate() {
                let (before, after) = (&run.history[i], &run.history[i + 1]);
                if *input == Input::DeadlinePassed && after.attempts == before.attempts + 1 {
                    prop_assert!(!matches!(before.phase, Phase::Running(_)), "a forward step was resent");
                    let at = before.deadline.expect("was due");
                    let wait = (after.deadline.expect("due again") - at).to_std().expect("positive");
                    prop_assert_eq!(wait, run.timing.backoff(after.attempts));
                    prop_assert!(wait <= run.timing.retry_backoff_max);
                }
            }
        }
    }
}
