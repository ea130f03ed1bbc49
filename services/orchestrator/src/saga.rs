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
//! Rules that hold for every sequence of inputs (see the property tests):
//! - a reply that does not answer the command the saga is waiting for (late,
//!   duplicate, out of order) changes nothing and sends nothing;
//! - only steps that completed or timed out are compensated, each once
//!   acknowledged, in the reverse order they were started;
//! - a saga ends approved, rejected, or needing attention, and never
//!   changes after that; approved sagas compensated nothing.

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
}

/// What the orchestrator asks a participant to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Perform(Step),
    Compensate(Step),
    ApproveOrder,
    RejectOrder { reason: String },
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
    /// must look. No further command is sent.
    NeedsAttention,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Approved | Phase::Rejected | Phase::NeedsAttention
        )
    }
}

/// Deadlines and retry limits.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a participant has to answer a command.
    pub step_timeout: Duration,
    /// Sends of one compensation, approval or rejection before the saga
    /// needs attention.
    pub max_attempts: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(30),
            max_attempts: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub phase: Phase,
    /// Forward steps that took effect or may have (timed out), in start order.
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

fn due(now: DateTime<Utc>, timing: &Timing) -> Option<DateTime<Utc>> {
    Some(now + chrono::Duration::from_std(timing.step_timeout).unwrap_or(chrono::Duration::MAX))
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
            deadline: due(now, timing),
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

    fn send(
        &mut self,
        phase: Phase,
        command: Command,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> Vec<Command> {
        self.phase = phase;
        self.attempts = 1;
        self.deadline = due(now, timing);
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

    /// Sends the current command again, or gives up after `max_attempts`.
    fn retry(&mut self, now: DateTime<Utc>, timing: &Timing) -> Vec<Command> {
        if self.attempts >= timing.max_attempts {
            return self.finish(Phase::NeedsAttention);
        }
        let command = match self.phase {
            Phase::Compensating(step) => Command::Compensate(step),
            Phase::Approving => Command::ApproveOrder,
            Phase::Rejecting => Command::RejectOrder {
                reason: self.failure.clone().unwrap_or_default(),
            },
            _ => return Vec::new(),
        };
        self.attempts += 1;
        self.deadline = due(now, timing);
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
        assert_eq!(saga.phase, Phase::NeedsAttention);
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
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Participants answer each command at random (succeed, refuse, or never
    /// answer); the network loses, duplicates and reorders replies; the
    /// clock fires deadlines whenever nothing else happens. Returns every
    /// saga state, the inputs between them (`inputs[i]` led from
    /// `history[i]` to `history[i + 1]`) and the commands sent.
    fn simulate(seed: u64) -> (Vec<Saga>, Vec<Command>) {
        let (history, _, sent) = simulate_with_inputs(seed);
        (history, sent)
    }

    fn simulate_with_inputs(seed: u64) -> (Vec<Saga>, Vec<Input>, Vec<Command>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let timing = Timing {
            step_timeout: Duration::from_secs(1),
            max_attempts: 4,
        };
        let mut now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let start = Saga::start(now, &timing);
        let mut saga = start.saga;
        let mut history = vec![saga.clone()];
        let mut sent = Vec::new();
        let mut in_flight: Vec<Input> = Vec::new();
        let mut inputs = Vec::new();
        let mut to_answer = start.commands;

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
                    Command::ApproveOrder => rng.random_bool(0.7).then_some(Input::OrderApproved),
                    Command::RejectOrder { .. } => {
                        rng.random_bool(0.7).then_some(Input::OrderRejected)
                    }
                };
                if let Some(reply) = reply {
                    if rng.random_bool(0.2) {
                        in_flight.push(reply.clone());
                    }
                    in_flight.push(reply);
                }
            }
            if saga.phase.is_terminal() && in_flight.is_empty() {
                break;
            }
            let input = if !in_flight.is_empty() && rng.random_bool(0.8) {
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
        (history, inputs, sent)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_saga_terminates(seed in any::<u64>()) {
            let (history, _) = simulate(seed);
            let last = history.last().expect("history");
            prop_assert!(last.phase.is_terminal(), "stuck in {:?}", last.phase);
            prop_assert_eq!(last.deadline, None);
        }

        #[test]
        fn only_completed_or_timed_out_steps_are_compensated_in_reverse(seed in any::<u64>()) {
            let (history, sent) = simulate(seed);
            let last = history.last().expect("history");
            for command in &sent {
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
        fn a_step_counts_as_completed_only_on_its_own_success_or_its_timeout(seed in any::<u64>()) {
            let (history, inputs, _) = simulate_with_inputs(seed);
            for (i, input) in inputs.iter().enumerate() {
                let (before, after) = (&history[i], &history[i + 1]);
                if after.completed.len() > before.completed.len() {
                    let step = *after.completed.last().expect("grew");
                    prop_assert_eq!(before.phase, Phase::Running(step));
                    prop_assert!(
                        *input == Input::StepSucceeded(step) || *input == Input::DeadlinePassed,
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
            let (history, sent) = simulate(seed);
            let approved = sent.contains(&Command::ApproveOrder);
            let rejected = sent.iter().any(|c| matches!(c, Command::RejectOrder { .. }));
            prop_assert!(!(approved && rejected));
            let first_terminal = history.iter().position(|s| s.phase.is_terminal());
            if let Some(index) = first_terminal {
                prop_assert!(history[index..].iter().all(|s| *s == history[index]));
            }
            let last = history.last().expect("history");
            if last.phase == Phase::Approved {
                prop_assert!(last.failure.is_none() && last.compensated.is_empty());
                prop_assert_eq!(&last.completed, &Step::ALL.to_vec());
            }
        }
    }
}
