//! Latency histograms, error tallies and the progress line on stderr.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency a histogram records exactly; longer ones are clamped to it.
const MAX_RECORDED: Duration = Duration::from_secs(3600);

/// An HDR histogram of latencies in microseconds (3 significant digits).
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // 1 µs to an hour at 3 significant digits: bounds that are valid by construction.
        let max = u64::try_from(MAX_RECORDED.as_micros()).unwrap_or(u64::MAX);
        Self(Histogram::new_with_bounds(1, max, 3).unwrap_or_else(|_| unreachable!("valid bounds")))
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail; clamp rather than lose counts.
        if self.0.add(&other.0).is_err() {
            for value in other.0.iter_recorded() {
                self.0
                    .saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Count and percentiles in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| (micros as f64 / 1000.0 * 1000.0).round() / 1000.0;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            p50_ms: Some(ms(self.0.value_at_quantile(0.50))),
            p90_ms: Some(ms(self.0.value_at_quantile(0.90))),
            p99_ms: Some(ms(self.0.value_at_quantile(0.99))),
            p999_ms: Some(ms(self.0.value_at_quantile(0.999))),
            max_ms: Some(ms(self.0.max())),
            mean_ms: Some((self.0.mean() / 1000.0 * 1000.0).round() / 1000.0),
        }
    }
}

/// Percentiles of a latency histogram, `null` when nothing was recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

/// Errors by kind (`upgrade_401`, `error_frame:rate_limited`, `timeout:reply`, ...).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Errors(BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        for (kind, count) in &other.0 {
            *self.0.entry(kind.clone()).or_default() += count;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Counters that the progress line shows while a mode runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Completed units of work (turns, connections, deltas, ...).
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints `label: N done (R/s), E errors` to stderr every `every` until dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(
        label: &'static str,
        unit: &'static str,
        counters: Arc<Counters>,
        every: Option<Duration>,
    ) -> Self {
        let task = tokio::spawn(async move {
            let Some(every) = every else { return };
            let started = Instant::now();
            let mut last = 0;
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let done = counters.done.load(Ordering::Relaxed);
                let errors = counters.errors.load(Ordering::Relaxed);
                let rate = (done - last) as f64 / every.as_secs_f64();
                last = done;
                eprintln!(
                    "[{:>6.1}s] {label}: {done} {unit} ({rate:.0}/s), {errors} errors",
                    started.elapsed().as_secs_f64()
                );
            }
        });
        Self { task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A rate per second rounded to one decimal.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (count as f64 / secs * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut latency = Latency::new();
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        let summary = latency.summary();
        assert_eq!(summary.count, 100);
        assert!(
            summary.p50_ms.is_some_and(|p| (49.9..=50.1).contains(&p)),
            "{summary:?}"
        );
        assert!(
            summary.p99_ms.is_some_and(|p| (98.9..=99.1).contains(&p)),
            "{summary:?}"
        );
        assert!(
            summary.max_ms.is_some_and(|p| (99.9..=100.1).contains(&p)),
            "{summary:?}"
        );
    }

    #[test]
    fn merged_histograms_count_both() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        a.record(Duration::from_millis(1));
        b.record(Duration::from_secs(7200));
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(Latency::new().summary().p50_ms, None);
    }
}
