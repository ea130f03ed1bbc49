//! Exponential backoff with jitter for retried messages.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay between two attempts.
    pub max: Duration,
    /// Attempts at a [`crate::HandlerError::Retryable`] failure before the
    /// message is dead-lettered. Transient failures are retried without limit.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the delay after `attempt` failures (1-based): doubles
    /// each time from `initial`, capped at `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A delay drawn uniformly from the upper half of the ceiling ("equal
    /// jitter"): spread out, yet never much shorter than intended.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_from_the_initial_delay_up_to_the_maximum() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: 5,
        };
        let ceilings: Vec<u128> = (1..=6).map(|a| policy.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jittered_delays_stay_within_the_upper_half_of_the_ceiling() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rng();
        for attempt in 1..=12 {
            let ceiling = policy.ceiling(attempt);
            for _ in 0..100 {
                let delay = policy.delay(attempt, &mut rng);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{delay:?} vs {ceiling:?}"
                );
            }
        }
    }
}
