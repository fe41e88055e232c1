//! Latency statistics of one closed-loop run.

use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of sorted samples: the smallest sample at or below
/// which at least p% of the samples lie. `None` without samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Debug, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub seconds: f64,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
}

impl Summary {
    pub fn new(mut latencies_ns: Vec<u64>, errors: u64, reconnects: u64, window: Duration) -> Self {
        latencies_ns.sort_unstable();
        Self {
            requests: latencies_ns.len() as u64,
            errors,
            reconnects,
            seconds: window.as_secs_f64(),
            p50_ns: percentile(&latencies_ns, 50.0),
            p99_ns: percentile(&latencies_ns, 99.0),
        }
    }

    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn to_json(&self) -> serde_json::Value {
        let us = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1000.0);
        serde_json::json!({
            "requests": self.requests,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "seconds": self.seconds,
            "rps": self.rps(),
            "p50_us": us(self.p50_ns),
            "p99_us": us(self.p99_ns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&samples, 0.0), Some(1));
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten: Vec<u64> = (10..20).collect();
        assert_eq!(percentile(&ten, 99.0), Some(19));
        assert_eq!(percentile(&ten, 50.0), Some(14));
        assert_eq!(percentile(&[7], 99.0), Some(7));
    }

    #[test]
    fn no_samples_or_bad_rank_give_none() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1, 2], 101.0), None);
        assert_eq!(percentile(&[1, 2], f64::NAN), None);
    }

    #[test]
    fn summary_sorts_and_reports_per_second() {
        let s = Summary::new(vec![3000, 1000, 2000, 4000], 1, 2, Duration::from_secs(2));
        assert_eq!(s.requests, 4);
        assert_eq!(s.p50_ns, Some(2000));
        assert_eq!(s.p99_ns, Some(4000));
        assert!((s.rps() - 2.0).abs() < 1e-9);
        let json = s.to_json();
        assert_eq!(json["p50_us"], 2.0);
        assert_eq!(json["errors"], 1);
        assert_eq!(json["reconnects"], 2);
    }
}
