//! The open-loop send schedule: send `n` is due at `start + n / rate`, whatever
//! the server did with the sends before it. A slow server therefore does not
//! lower the offered load, and latency measured from the due time includes
//! any time a send had to wait (no coordinated omission).

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("the rate must be a positive number of sends per second, got {0}")]
    BadRate(f64),
}

/// A fixed rate over a fixed duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    duration: Duration,
}

impl Schedule {
    pub fn new(rate: f64, duration: Duration) -> Result<Self, ScheduleError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ScheduleError::BadRate(rate));
        }
        Ok(Self { rate, duration })
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// When send `n` (from 0) is due, relative to the start.
    pub fn offset(&self, n: u64) -> Duration {
        // Nanoseconds as f64 are exact to 2^53 ns (104 days): ample.
        Duration::from_nanos((n as f64 * 1e9 / self.rate).round() as u64)
    }

    /// How many sends fall inside the duration: every `n` with
    /// `offset(n) < duration`.
    pub fn count(&self) -> u64 {
        let mut count = (self.duration.as_secs_f64() * self.rate).ceil() as u64;
        // Correct the float estimate against `offset` itself, so that the
        // count and the offsets can never disagree.
        while count > 0 && self.offset(count - 1) >= self.duration {
            count -= 1;
        }
        while self.offset(count) < self.duration {
            count += 1;
        }
        count
    }

    /// How many sends are due at or before `elapsed` (at most `count()`).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let count = self.count();
        let mut due = ((elapsed.as_secs_f64() * self.rate).floor() as u64 + 1).min(count);
        while due > 0 && self.offset(due - 1) > elapsed {
            due -= 1;
        }
        while due < count && self.offset(due) <= elapsed {
            due += 1;
        }
        due
    }

    /// Every send as `(n, offset)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Duration)> + '_ {
        (0..self.count()).map(|n| (n, self.offset(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate: f64, seconds: f64) -> Schedule {
        Schedule::new(rate, Duration::from_secs_f64(seconds)).expect("valid schedule")
    }

    #[test]
    fn the_nth_send_is_due_at_n_over_the_rate() {
        let s = schedule(500.0, 60.0);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(2));
        assert_eq!(s.offset(500), Duration::from_secs(1));
        assert_eq!(s.offset(29_999), Duration::from_micros(59_998_000));
        let third = schedule(3.0, 1.0);
        assert_eq!(third.offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(third.offset(2), Duration::from_nanos(666_666_667));
    }

    #[test]
    fn a_duration_holds_rate_times_seconds_sends() {
        assert_eq!(schedule(50.0, 60.0).count(), 3_000);
        assert_eq!(schedule(500.0, 60.0).count(), 30_000);
        assert_eq!(schedule(1.0, 1.0).count(), 1);
        // A fractional product rounds up: sends at 0, 0.4, 0.8 and 1.2 s in 1.5 s.
        assert_eq!(schedule(2.5, 1.5).count(), 4);
        assert_eq!(schedule(7.0, 0.0).count(), 0);
    }

    #[test]
    fn every_scheduled_send_is_inside_the_duration_and_the_next_is_not() {
        for (rate, seconds) in [(50.0, 60.0), (333.3, 7.0), (0.7, 10.0), (1234.5, 3.3)] {
            let s = schedule(rate, seconds);
            let count = s.count();
            assert!(count > 0);
            assert!(s.offset(count - 1) < s.duration(), "{rate}/s {seconds} s");
            assert!(s.offset(count) >= s.duration(), "{rate}/s {seconds} s");
        }
    }

    #[test]
    fn offsets_never_go_backwards_and_keep_the_rate() {
        let s = schedule(997.0, 5.0);
        let offsets: Vec<_> = s.iter().map(|(_, offset)| offset).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        let gaps: Vec<f64> = offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean - 1.0 / 997.0).abs() < 1e-9, "mean gap {mean}");
    }

    #[test]
    fn due_by_counts_the_sends_whose_time_has_come() {
        let s = schedule(10.0, 2.0);
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_by(Duration::from_millis(99)), 1);
        assert_eq!(s.due_by(Duration::from_millis(100)), 2);
        assert_eq!(s.due_by(Duration::from_millis(1_050)), 11);
        assert_eq!(s.due_by(Duration::from_secs(60)), 20);
    }

    #[test]
    fn a_rate_must_be_positive_and_finite() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                Schedule::new(rate, Duration::from_secs(1)).is_err(),
                "{rate}"
            );
        }
    }
}
