//! Summaries of timing samples.

use std::time::{Duration, Instant};

/// Samples of one measurement, in the unit the caller chose (milliseconds for latencies).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<f64>,
}

impl Samples {
    pub fn new() -> Samples {
        Samples::default()
    }

    pub fn push(&mut self, value: f64) {
        self.values.push(value);
    }

    /// Records the time since `start` in milliseconds.
    pub fn push_since(&mut self, start: Instant) {
        self.push_duration(start.elapsed());
    }

    pub fn push_duration(&mut self, d: Duration) {
        self.push(d.as_secs_f64() * 1000.0);
    }

    /// The nearest-rank percentile (`q` in 0..=100): the smallest sample with at least q % of the
    /// samples at or below it. NaN when empty.
    pub fn percentile(&self, q: f64) -> f64 {
        if self.values.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn p95(&self) -> f64 {
        self.percentile(95.0)
    }

    pub fn p99(&self) -> f64 {
        self.percentile(99.0)
    }

    pub fn max(&self) -> f64 {
        self.values.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// Runs `f` and returns its result with the milliseconds it took.
pub fn time_ms<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64() * 1000.0)
}

/// Three significant digits, without exponent noise for the sizes we print.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[f64]) -> Samples {
        let mut s = Samples::new();
        values.iter().for_each(|v| s.push(*v));
        s
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = of(&[5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.percentile(0.0), 1.0);
        assert_eq!(s.percentile(20.0), 1.0);
        assert_eq!(s.percentile(21.0), 2.0);
        assert_eq!(s.p95(), 5.0);
        assert_eq!(s.max(), 5.0);
        let hundred = of(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!(hundred.p99(), 99.0);
        assert_eq!(hundred.p95(), 95.0);
        assert_eq!(hundred.median(), 50.0);
    }

    #[test]
    fn empty_and_single() {
        assert!(Samples::new().median().is_nan());
        assert_eq!(of(&[7.0]).p99(), 7.0);
    }
}
