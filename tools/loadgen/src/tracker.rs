//! Matching saga outcomes to the orders this run placed. An order is pending
//! from its CreateOrder answer until its first `OrderApproved` or
//! `OrderRejected` event (matched by order id, the Kafka key). Events for
//! orders this run did not place, repeats of an outcome already counted, and
//! anything after the tracker closed are counted and otherwise ignored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use prost::Message as _;
use prost::Name as _;
use proto::messages::v1 as msg;

use crate::mix::OrderKind;
use crate::stats::{LatencyHistogram, Timeline};

/// How a saga ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Rejected { reason: String },
}

/// Decodes an outcome event from the parts of a Kafka message of
/// `order.events.v1`: `(order id, outcome)`, or `None` for any other event
/// type (e.g. `OrderCreated`) or an undecodable one. The order id is the key;
/// a message without a key falls back to the id in the payload.
pub fn decode_outcome(
    key: Option<&[u8]>,
    message_type: Option<&str>,
    payload: &[u8],
) -> Option<(String, Outcome)> {
    let key = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|k| !k.is_empty());
    let message_type = message_type?;
    if message_type == msg::OrderApproved::full_name() {
        let event = msg::OrderApproved::decode(payload).ok()?;
        let id = key.map_or(event.order_id, str::to_owned);
        Some((id, Outcome::Approved))
    } else if message_type == msg::OrderRejected::full_name() {
        let event = msg::OrderRejected::decode(payload).ok()?;
        let id = key.map_or(event.order_id, str::to_owned);
        Some((
            id,
            Outcome::Rejected {
                reason: event.reason,
            },
        ))
    } else {
        None
    }
}

/// A saga that ended, as the tracker saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub order_id: String,
    pub kind: OrderKind,
    /// Scheduled send time, since the start of the run.
    pub scheduled: Duration,
    /// When the outcome event was received, since the start of the run.
    pub received: Duration,
    pub outcome: Outcome,
}

impl Completion {
    pub fn latency(&self) -> Duration {
        self.received.saturating_sub(self.scheduled)
    }
}

/// What became of an observed outcome event.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The first outcome of a pending order.
    Completed(Completion),
    /// An outcome of an order whose saga already ended: not counted again.
    Duplicate,
    /// An order this run has not (yet) heard of. Kept for a while: the
    /// outcome may overtake the CreateOrder answer.
    Unknown,
    /// Arrived after the tracker was closed.
    Late,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    kind: OrderKind,
    scheduled: Duration,
}

/// Most outcomes of unknown orders kept waiting for their CreateOrder answer.
const MAX_EARLY: usize = 100_000;

#[derive(Debug, Default)]
pub struct Tracker {
    pending: HashMap<String, Pending>,
    ended: HashSet<String>,
    /// Outcomes whose order is not known yet, with their arrival time.
    early: HashMap<String, (Outcome, Duration)>,
    early_dropped: u64,
    duplicates: u64,
    late: u64,
    closed: bool,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// CreateOrder placed `order_id`. Returns its completion at once when its
    /// outcome arrived first.
    pub fn placed(
        &mut self,
        order_id: String,
        kind: OrderKind,
        scheduled: Duration,
    ) -> Option<Completion> {
        if self.closed || self.ended.contains(&order_id) || self.pending.contains_key(&order_id) {
            // A replayed id (same idempotency key twice): already tracked.
            return None;
        }
        if let Some((outcome, received)) = self.early.remove(&order_id) {
            self.ended.insert(order_id.clone());
            return Some(Completion {
                order_id,
                kind,
                scheduled,
                received: received.max(scheduled),
                outcome,
            });
        }
        self.pending.insert(order_id, Pending { kind, scheduled });
        None
    }

    pub fn observe(&mut self, order_id: &str, outcome: Outcome, received: Duration) -> Observation {
        if self.closed {
            self.late += 1;
            return Observation::Late;
        }
        if let Some(pending) = self.pending.remove(order_id) {
            self.ended.insert(order_id.to_owned());
            return Observation::Completed(Completion {
                order_id: order_id.to_owned(),
                kind: pending.kind,
                scheduled: pending.scheduled,
                received,
                outcome,
            });
        }
        if self.ended.contains(order_id) || self.early.contains_key(order_id) {
            self.duplicates += 1;
            return Observation::Duplicate;
        }
        if self.early.len() < MAX_EARLY {
            self.early.insert(order_id.to_owned(), (outcome, received));
        } else {
            self.early_dropped += 1;
        }
        Observation::Unknown
    }

    /// No outcome counts after this.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Orders placed whose saga has not ended.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The orders whose saga never ended, oldest first.
    pub fn never_ended(&self) -> Vec<(String, OrderKind, Duration)> {
        let mut left: Vec<_> = self
            .pending
            .iter()
            .map(|(id, p)| (id.clone(), p.kind, p.scheduled))
            .collect();
        left.sort_by_key(|(_, _, scheduled)| *scheduled);
        left
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn late(&self) -> u64 {
        self.late
    }

    /// Outcome events for orders this run never placed.
    pub fn unknown(&self) -> u64 {
        self.early.len() as u64 + self.early_dropped
    }
}

/// Approved and rejected counts of one order kind.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct KindCounts {
    pub approved: u64,
    pub rejected: u64,
    /// Rejection reasons, e.g. `reserve_stock: OUT_OF_STOCK`.
    pub rejected_by_reason: BTreeMap<String, u64>,
}

/// Everything counted about the sagas that ended.
#[derive(Debug, Default)]
pub struct SagaTally {
    pub latency: LatencyHistogram,
    pub approved_latency: LatencyHistogram,
    pub rejected_latency: LatencyHistogram,
    pub timeline: Timeline,
    pub by_kind: BTreeMap<OrderKind, KindCounts>,
    /// Happy orders rejected, or failing orders approved.
    pub unexpected: u64,
    pub first_received: Option<Duration>,
    pub last_received: Duration,
}

impl SagaTally {
    pub fn record(&mut self, completion: &Completion) {
        let latency = completion.latency();
        self.latency.record(latency);
        self.timeline
            .completed(completion.scheduled, completion.received);
        self.first_received = Some(
            self.first_received
                .map_or(completion.received, |first| first.min(completion.received)),
        );
        self.last_received = self.last_received.max(completion.received);
        let counts = self.by_kind.entry(completion.kind).or_default();
        match &completion.outcome {
            Outcome::Approved => {
                self.approved_latency.record(latency);
                counts.approved += 1;
                if !completion.kind.expects_approval() {
                    self.unexpected += 1;
                }
            }
            Outcome::Rejected { reason } => {
                self.rejected_latency.record(latency);
                counts.rejected += 1;
                *counts.rejected_by_reason.entry(reason.clone()).or_insert(0) += 1;
                if completion.kind.expects_approval() {
                    self.unexpected += 1;
                }
            }
        }
    }

    pub fn completed(&self) -> u64 {
        self.latency.len()
    }

    pub fn approved(&self) -> u64 {
        self.by_kind.values().map(|c| c.approved).sum()
    }

    pub fn rejected(&self) -> u64 {
        self.by_kind.values().map(|c| c.rejected).sum()
    }

    /// Rejections of every kind by reason.
    pub fn rejected_by_reason(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for counts in self.by_kind.values() {
            for (reason, n) in &counts.rejected_by_reason {
                *all.entry(reason.clone()).or_insert(0) += n;
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn rejected(reason: &str) -> Outcome {
        Outcome::Rejected {
            reason: reason.into(),
        }
    }

    #[test]
    fn an_outcome_completes_its_order_with_latency_from_the_scheduled_time() {
        let mut t = Tracker::new();
        assert_eq!(t.placed("a".into(), OrderKind::Happy, ms(100)), None);
        assert_eq!(t.in_flight(), 1);
        let Observation::Completed(c) = t.observe("a", Outcome::Approved, ms(145)) else {
            panic!("not completed");
        };
        assert_eq!(c.kind, OrderKind::Happy);
        assert_eq!(c.latency(), ms(45));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_duplicate_outcome_is_counted_once() {
        let mut t = Tracker::new();
        t.placed("a".into(), OrderKind::OutOfStock, ms(0));
        let first = t.observe("a", rejected("reserve_stock: OUT_OF_STOCK"), ms(10));
        assert!(matches!(first, Observation::Completed(_)));
        assert_eq!(
            t.observe("a", rejected("reserve_stock: OUT_OF_STOCK"), ms(20)),
            Observation::Duplicate
        );
        assert_eq!(
            t.observe("a", Outcome::Approved, ms(30)),
            Observation::Duplicate
        );
        assert_eq!(t.duplicates(), 2);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn an_unknown_order_is_ignored_and_counted() {
        let mut t = Tracker::new();
        t.placed("mine".into(), OrderKind::Happy, ms(0));
        assert_eq!(
            t.observe("someone-elses", Outcome::Approved, ms(5)),
            Observation::Unknown
        );
        assert_eq!(t.unknown(), 1);
        assert_eq!(t.in_flight(), 1);
        // A second event of that unknown order is a duplicate, not a second unknown.
        assert_eq!(
            t.observe("someone-elses", Outcome::Approved, ms(6)),
            Observation::Duplicate
        );
        assert_eq!(t.unknown(), 1);
    }

    #[test]
    fn an_outcome_that_overtakes_the_create_answer_still_matches() {
        let mut t = Tracker::new();
        assert_eq!(
            t.observe("a", Outcome::Approved, ms(40)),
            Observation::Unknown
        );
        let c = t
            .placed("a".into(), OrderKind::Happy, ms(10))
            .expect("completed on placement");
        assert_eq!(c.latency(), ms(30));
        assert_eq!(t.unknown(), 0);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(
            t.observe("a", Outcome::Approved, ms(50)),
            Observation::Duplicate
        );
    }

    #[test]
    fn events_after_closing_are_late_and_leave_the_order_never_ended() {
        let mut t = Tracker::new();
        t.placed("a".into(), OrderKind::Happy, ms(0));
        t.placed("b".into(), OrderKind::Undeliverable, ms(5));
        t.observe("b", rejected("create_shipment: UNDELIVERABLE"), ms(9));
        t.close();
        assert_eq!(
            t.observe("a", Outcome::Approved, ms(99_000)),
            Observation::Late
        );
        assert_eq!(t.late(), 1);
        assert_eq!(
            t.never_ended(),
            vec![("a".to_owned(), OrderKind::Happy, ms(0))]
        );
    }

    #[test]
    fn placing_the_same_order_twice_tracks_it_once() {
        let mut t = Tracker::new();
        t.placed("a".into(), OrderKind::Happy, ms(0));
        t.placed("a".into(), OrderKind::Happy, ms(7));
        assert_eq!(t.in_flight(), 1);
        let Observation::Completed(c) = t.observe("a", Outcome::Approved, ms(10)) else {
            panic!("not completed");
        };
        assert_eq!(c.scheduled, ms(0));
    }

    #[test]
    fn the_tally_counts_outcomes_by_kind_and_reason_and_flags_surprises() {
        let mut tally = SagaTally::default();
        let completion = |kind, outcome, received| Completion {
            order_id: "x".into(),
            kind,
            scheduled: ms(0),
            received: ms(received),
            outcome,
        };
        tally.record(&completion(OrderKind::Happy, Outcome::Approved, 20));
        tally.record(&completion(OrderKind::Happy, Outcome::Approved, 30));
        tally.record(&completion(
            OrderKind::OutOfStock,
            rejected("reserve_stock: OUT_OF_STOCK"),
            10,
        ));
        tally.record(&completion(
            OrderKind::Happy,
            rejected("process_payment: INSUFFICIENT_FUNDS"),
            40,
        ));
        tally.record(&completion(OrderKind::Undeliverable, Outcome::Approved, 50));
        assert_eq!(tally.completed(), 5);
        assert_eq!(tally.approved(), 3);
        assert_eq!(tally.rejected(), 2);
        assert_eq!(tally.unexpected, 2);
        assert_eq!(tally.by_kind[&OrderKind::Happy].approved, 2);
        assert_eq!(tally.by_kind[&OrderKind::Happy].rejected, 1);
        assert_eq!(
            tally.rejected_by_reason(),
            BTreeMap::from([
                ("process_payment: INSUFFICIENT_FUNDS".to_owned(), 1),
                ("reserve_stock: OUT_OF_STOCK".to_owned(), 1),
            ])
        );
        assert_eq!(tally.first_received, Some(ms(10)));
        assert_eq!(tally.last_received, ms(50));
        assert_eq!(tally.approved_latency.len(), 3);
    }

    #[test]
    fn outcome_events_are_decoded_by_message_type_and_keyed_by_order_id() {
        let approved = msg::OrderApproved {
            order_id: "in-payload".into(),
            customer_id: "c".into(),
        }
        .encode_to_vec();
        assert_eq!(
            decode_outcome(
                Some(b"the-key"),
                Some("ordersaga.messages.v1.OrderApproved"),
                &approved
            ),
            Some(("the-key".to_owned(), Outcome::Approved))
        );
        assert_eq!(
            decode_outcome(None, Some("ordersaga.messages.v1.OrderApproved"), &approved),
            Some(("in-payload".to_owned(), Outcome::Approved))
        );
        let rejected_event = msg::OrderRejected {
            order_id: "o".into(),
            customer_id: "c".into(),
            reason: "reserve_stock: OUT_OF_STOCK".into(),
        }
        .encode_to_vec();
        assert_eq!(
            decode_outcome(
                Some(b"o"),
                Some("ordersaga.messages.v1.OrderRejected"),
                &rejected_event
            ),
            Some(("o".to_owned(), rejected("reserve_stock: OUT_OF_STOCK")))
        );
        let created = msg::OrderCreated::default().encode_to_vec();
        assert_eq!(
            decode_outcome(
                Some(b"o"),
                Some("ordersaga.messages.v1.OrderCreated"),
                &created
            ),
            None
        );
        assert_eq!(decode_outcome(Some(b"o"), None, &approved), None);
        assert_eq!(
            decode_outcome(
                Some(b"o"),
                Some("ordersaga.messages.v1.OrderRejected"),
                &[0xff, 0xff]
            ),
            None
        );
    }
}
