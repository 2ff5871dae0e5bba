//! Latency percentiles in constant memory, so a daemon that runs for months does not grow.

use std::time::Duration;

/// Buckets per doubling: neighbouring buckets differ by 2^(1/64), about 1.1%.
const PER_OCTAVE: f64 = 64.0;
/// Enough buckets for latencies up to 2^40 ns (about 18 minutes).
const BUCKETS: usize = 40 * 64 + 1;

/// A log-scale histogram of latencies: percentiles are within 1.1% of the exact ones (the
/// maximum is exact).
#[derive(Debug, Clone)]
pub struct Latencies {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
            sum_ns: 0,
        }
    }
}

fn bucket(ns: u64) -> usize {
    let i = ((ns.max(1) as f64).log2() * PER_OCTAVE).round();
    (i as usize).min(BUCKETS - 1)
}

impl Latencies {
    /// Counts one latency.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    /// Latencies counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The sum of every latency counted.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(u64::try_from(self.sum_ns).unwrap_or(u64::MAX))
    }

    /// The `p`th percentile (nearest rank) in microseconds; 0 when nothing was counted.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let ns = 2f64.powf(i as f64 / PER_OCTAVE);
                return ns.min(self.max_ns as f64) / 1000.0;
            }
        }
        self.max_us()
    }

    /// The largest latency counted, in microseconds.
    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1000.0
    }
}

/// The median of a few durations, in microseconds (the per-input figure under `--repeat`).
pub fn median_us(durations: &mut [Duration]) -> f64 {
    if durations.is_empty() {
        return 0.0;
    }
    durations.sort_unstable();
    let mid = durations.len() / 2;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    if durations.len() % 2 == 1 {
        us(durations[mid])
    } else {
        (us(durations[mid - 1]) + us(durations[mid])) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_the_bucket_resolution() {
        let mut l = Latencies::default();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.count(), 1000);
        for (p, exact) in [(50.0, 500.0), (90.0, 900.0), (99.0, 990.0)] {
            let got = l.percentile_us(p);
            assert!(
                (got - exact).abs() / exact < 0.012,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(l.max_us(), 1000.0);
        assert_eq!(l.percentile_us(100.0), 1000.0);
    }

    #[test]
    fn empty_and_median() {
        assert_eq!(Latencies::default().percentile_us(50.0), 0.0);
        let mut d = [3, 1, 2, 10].map(Duration::from_micros);
        assert_eq!(median_us(&mut d), 2.5);
    }
}
