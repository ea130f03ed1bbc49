//! Latency histograms (HdrHistogram, microseconds, 3 significant digits) and
//! the per-second timeline of a run.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest recordable latency; longer ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Percentiles of a histogram in milliseconds; all 0 when it is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .unwrap_or_else(|_| unreachable!("constant bounds are valid"));
        Self { histogram }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        self.histogram.saturating_record(micros);
    }

    /// Records a raw value in microseconds (for tests and merging).
    pub fn record_micros(&mut self, micros: u64) {
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The value at quantile `q` (0.0 to 1.0), in microseconds.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.histogram.value_at_quantile(q)
        }
    }

    pub fn summary(&self) -> Summary {
        if self.is_empty() {
            return Summary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Summary {
            count: self.histogram.len(),
            min_ms: ms(self.histogram.min()),
            mean_ms: self.histogram.mean() / 1000.0,
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p90_ms: ms(self.histogram.value_at_quantile(0.90)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            p999_ms: ms(self.histogram.value_at_quantile(0.999)),
            max_ms: ms(self.histogram.max()),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the start: this point covers `[second, second + 1)`.
    pub second: u64,
    /// Sends scheduled in this second (open loop) or made (closed loop).
    pub scheduled: u64,
    /// Saga outcomes received in this second.
    pub completed: u64,
    /// Saga latency of the orders scheduled in this second (0 if none ended).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Per-second counts and saga latency. Latency is filed under the second the
/// order was *scheduled* in, so each saga counts once and a stall shows up at
/// the sends it delayed; completions are counted in the second they arrived.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    scheduled: Vec<u64>,
    completed: Vec<u64>,
    latency: Vec<LatencyHistogram>,
}

fn slot<T: Default>(v: &mut Vec<T>, at: Duration) -> &mut T {
    let second = usize::try_from(at.as_secs())
        .unwrap_or(usize::MAX)
        .min(86_400);
    if v.len() <= second {
        v.resize_with(second + 1, T::default);
    }
    &mut v[second]
}

impl Timeline {
    pub fn scheduled(&mut self, at: Duration) {
        *slot(&mut self.scheduled, at) += 1;
    }

    pub fn completed(&mut self, scheduled: Duration, received: Duration) {
        *slot(&mut self.completed, received) += 1;
        slot(&mut self.latency, scheduled).record(received.saturating_sub(scheduled));
    }

    /// Outcomes received before `end`.
    pub fn completed_before(&self, end: Duration) -> u64 {
        let whole = usize::try_from(end.as_secs()).unwrap_or(usize::MAX);
        self.completed.iter().take(whole).sum()
    }

    pub fn points(&self) -> Vec<TimelinePoint> {
        let len = self
            .scheduled
            .len()
            .max(self.completed.len())
            .max(self.latency.len());
        (0..len)
            .map(|i| {
                let latency = self.latency.get(i);
                let q = |q: f64| latency.map_or(0, |h| h.quantile_micros(q)) as f64 / 1000.0;
                TimelinePoint {
                    second: i as u64,
                    scheduled: self.scheduled.get(i).copied().unwrap_or(0),
                    completed: self.completed.get(i).copied().unwrap_or(0),
                    p50_ms: q(0.50),
                    p99_ms: q(0.99),
                    max_ms: q(1.0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HdrHistogram with 3 significant digits: a value is known to 1 part in 1000.
    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want * 0.001 + 1e-9
    }

    #[test]
    fn one_to_a_thousand_milliseconds_gives_the_textbook_percentiles() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!(close(s.p50_ms, 500.0), "p50 {}", s.p50_ms);
        assert!(close(s.p90_ms, 900.0), "p90 {}", s.p90_ms);
        assert!(close(s.p99_ms, 990.0), "p99 {}", s.p99_ms);
        assert!(close(s.p999_ms, 999.0), "p99.9 {}", s.p999_ms);
        assert!(close(s.max_ms, 1000.0), "max {}", s.max_ms);
        assert!(close(s.min_ms, 1.0), "min {}", s.min_ms);
        assert!(close(s.mean_ms, 500.5), "mean {}", s.mean_ms);
    }

    #[test]
    fn a_constant_latency_is_every_percentile() {
        let mut h = LatencyHistogram::new();
        for _ in 0..10_000 {
            h.record(Duration::from_micros(12_345));
        }
        let s = h.summary();
        for p in [s.min_ms, s.p50_ms, s.p99_ms, s.max_ms] {
            assert!(close(p, 12.345), "{p}");
        }
    }

    #[test]
    fn a_tail_of_one_percent_moves_p99_but_not_p50() {
        let mut h = LatencyHistogram::new();
        for i in 0..10_000 {
            let ms = if i % 100 == 0 { 2_000 } else { 10 };
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert!(close(s.p50_ms, 10.0), "p50 {}", s.p50_ms);
        // 99 % of the values are 10 ms: p99 is still 10, p99.9 is the tail.
        assert!(close(s.p99_ms, 10.0), "p99 {}", s.p99_ms);
        assert!(close(s.p999_ms, 2_000.0), "p99.9 {}", s.p999_ms);
        assert!(close(s.max_ms, 2_000.0), "max {}", s.max_ms);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        assert_eq!(LatencyHistogram::new().summary(), Summary::default());
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(100_000));
        assert_eq!(h.len(), 2);
        assert!(h.summary().max_ms >= 3_600_000.0 * 0.999);
    }

    #[test]
    fn the_timeline_files_latency_by_schedule_and_completions_by_arrival() {
        let mut t = Timeline::default();
        t.scheduled(Duration::from_millis(100));
        t.scheduled(Duration::from_millis(900));
        t.scheduled(Duration::from_millis(1_100));
        // Scheduled in second 0, arrived in second 2.
        t.completed(Duration::from_millis(100), Duration::from_millis(2_100));
        t.completed(Duration::from_millis(900), Duration::from_millis(910));
        t.completed(Duration::from_millis(1_100), Duration::from_millis(1_150));
        let points = t.points();
        assert_eq!(points.len(), 3);
        assert_eq!(
            points.iter().map(|p| p.scheduled).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        assert_eq!(
            points.iter().map(|p| p.completed).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        assert!(close(points[0].max_ms, 2_000.0), "{}", points[0].max_ms);
        assert!(close(points[0].p50_ms, 10.0), "{}", points[0].p50_ms);
        assert!(close(points[1].p99_ms, 50.0), "{}", points[1].p99_ms);
        assert_eq!(points[2].p99_ms, 0.0);
        assert_eq!(t.completed_before(Duration::from_secs(2)), 2);
        assert_eq!(t.completed_before(Duration::from_secs(3)), 3);
    }
}
