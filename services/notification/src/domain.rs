//! Notifications as the business sees them: one per order outcome, and the
//! rules of delivering it to the webhook (which answers count as delivered,
//! which are worth retrying, how long to wait). No IO, no SQL, no proto.

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use domain_types::{CustomerId, OrderId};

/// Longest rejection reason kept.
pub const MAX_REASON_LEN: usize = 500;
/// Longest delivery error kept.
pub const MAX_ERROR_LEN: usize = 500;

domain_types::uuid_id! {
    /// A notification: one per order outcome.
    pub struct NotificationId;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "APPROVED" => Some(Self::Approved),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its (next) delivery attempt.
    Pending,
    /// The webhook accepted it.
    Delivered,
    /// Given up: a permanent refusal, or every attempt failed.
    Failed,
    /// No webhook configured when it was recorded; never delivered.
    NotConfigured,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Delivered => "DELIVERED",
            Self::Failed => "FAILED",
            Self::NotConfigured => "NOT_CONFIGURED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "PENDING" => Some(Self::Pending),
            "DELIVERED" => Some(Self::Delivered),
            "FAILED" => Some(Self::Failed),
            "NOT_CONFIGURED" => Some(Self::NotConfigured),
            _ => None,
        }
    }

    /// The state a new notification starts in.
    pub fn initial(webhook_configured: bool) -> Self {
        if webhook_configured {
            Self::Pending
        } else {
            Self::NotConfigured
        }
    }
}

/// What to tell the customer about an order, from its outcome event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub outcome: Outcome,
    /// Why the order was rejected; empty when approved.
    pub reason: String,
}

impl NewNotification {
    pub fn approved(order_id: OrderId, customer_id: CustomerId) -> Self {
        Self {
            order_id,
            customer_id,
            outcome: Outcome::Approved,
            reason: String::new(),
        }
    }

    /// A rejection; an overlong reason is cut at a character boundary.
    pub fn rejected(order_id: OrderId, customer_id: CustomerId, reason: &str) -> Self {
        Self {
            order_id,
            customer_id,
            outcome: Outcome::Rejected,
            reason: truncate(reason, MAX_REASON_LEN),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: NotificationId,
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub outcome: Outcome,
    pub reason: String,
    pub delivery_state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Where a page of a customer's notifications continues: the creation
/// time and id of the last one seen (tokens of `ListNotifications`).
pub type PageCursor = domain_types::NewestFirst<NotificationId>;

/// How one delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The webhook answered 2xx.
    Accepted,
    /// May succeed later: connection error, timeout, 5xx, 408, 429.
    Retryable(String),
    /// Will never succeed: any other answer (e.g. 400, 404, a redirect).
    Refused(String),
}

impl AttemptResult {
    /// Classifies the webhook's HTTP status code.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=299 => Self::Accepted,
            408 | 429 | 500..=599 => Self::Retryable(format!("webhook answered HTTP {status}")),
            _ => Self::Refused(format!("webhook answered HTTP {status}")),
        }
    }
}

/// What happens to a notification after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    /// Try again after this delay; keep the error.
    RetryAfter {
        delay: Duration,
        error: String,
    },
    /// Give up; keep the error.
    Failed {
        error: String,
    },
}

/// Retry limits of webhook deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// Delay ceiling after the first failed attempt; doubles after each.
    pub base: Duration,
    /// Largest delay between two attempts.
    pub max: Duration,
}

impl DeliveryPolicy {
    /// The ceiling of the delay after `attempt` failed attempts (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay after `attempt` failures with "equal jitter": the upper half
    /// of the ceiling, placed by `jitter` in `0.0..=1.0`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// The next step once `attempts` attempts (this one included) were made
    /// and the last one ended as `result`.
    pub fn next_step(&self, attempts: u32, result: AttemptResult, jitter: f64) -> NextStep {
        match result {
            AttemptResult::Accepted => NextStep::Delivered,
            AttemptResult::Refused(error) => NextStep::Failed {
                error: truncate(&error, MAX_ERROR_LEN),
            },
            AttemptResult::Retryable(error) if attempts >= self.max_attempts => NextStep::Failed {
                error: truncate(&error, MAX_ERROR_LEN),
            },
            AttemptResult::Retryable(error) => NextStep::RetryAfter {
                delay: self.delay(attempts, jitter),
                error: truncate(&error, MAX_ERROR_LEN),
            },
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(500),
            max: Duration::from_secs(3),
        }
    }

    #[test]
    fn two_hundreds_are_delivered_transient_answers_retried_and_other_answers_refused() {
        for status in [200, 201, 204, 299] {
            assert_eq!(AttemptResult::from_status(status), AttemptResult::Accepted);
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    AttemptResult::from_status(status),
                    AttemptResult::Retryable(_)
                ),
                "{status}"
            );
        }
        for status in [301, 400, 401, 403, 404, 410, 422] {
            assert!(
                matches!(
                    AttemptResult::from_status(status),
                    AttemptResult::Refused(_)
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn the_delay_doubles_from_the_base_up_to_the_maximum() {
        let ceilings: Vec<u128> = (1..=6).map(|a| policy().ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(policy().ceiling(u32::MAX), Duration::from_secs(3));
    }

    #[test]
    fn jitter_keeps_the_delay_in_the_upper_half_of_the_ceiling() {
        let policy = policy();
        assert_eq!(policy.delay(2, 0.0), Duration::from_millis(500));
        assert_eq!(policy.delay(2, 1.0), Duration::from_millis(1000));
        assert_eq!(policy.delay(2, 7.0), Duration::from_millis(1000));
        let middle = policy.delay(2, 0.5);
        assert!(middle > Duration::from_millis(500) && middle < Duration::from_millis(1000));
    }

    #[test]
    fn a_transient_failure_is_retried_until_the_last_attempt_then_fails() {
        let policy = policy();
        let failure = || AttemptResult::Retryable("webhook answered HTTP 503".into());
        for attempts in 1..policy.max_attempts {
            assert!(
                matches!(
                    policy.next_step(attempts, failure(), 0.5),
                    NextStep::RetryAfter { .. }
                ),
                "attempt {attempts}"
            );
        }
        assert_eq!(
            policy.next_step(policy.max_attempts, failure(), 0.5),
            NextStep::Failed {
                error: "webhook answered HTTP 503".into()
            }
        );
    }

    #[test]
    fn a_refusal_fails_at_once_and_an_acceptance_delivers() {
        let policy = policy();
        assert!(matches!(
            policy.next_step(1, AttemptResult::Refused("HTTP 400".into()), 0.5),
            NextStep::Failed { .. }
        ));
        assert_eq!(
            policy.next_step(3, AttemptResult::Accepted, 0.5),
            NextStep::Delivered
        );
    }

    #[test]
    fn overlong_reasons_and_errors_are_cut_at_a_character_boundary() {
        let reason = "é".repeat(400);
        let rejected = NewNotification::rejected(
            OrderId::new(),
            CustomerId::parse("c-1").expect("valid"),
            &reason,
        );
        assert!(rejected.reason.len() <= MAX_REASON_LEN);
        assert!(reason.starts_with(&rejected.reason));
    }

    #[test]
    fn a_new_notification_waits_for_delivery_only_when_a_webhook_is_configured() {
        assert_eq!(DeliveryState::initial(true), DeliveryState::Pending);
        assert_eq!(DeliveryState::initial(false), DeliveryState::NotConfigured);
    }
}
