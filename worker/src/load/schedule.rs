//! The open-loop send schedule: request `n` is due at `start + n / rate`, whatever happened
//! to the requests before it.

use std::time::Duration;

/// When each request of a run is due, relative to the start of the run.
///
/// The rate is kept in milli-requests per second and offsets are computed in integers, so
/// request `n` is due exactly at `floor(n × 10⁹ / rate)` nanoseconds (no float drift over a
/// long run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Offered rate in requests per 1000 s (rate × 1000), never 0.
    rate_milli: u64,
    /// Requests in the run: `floor(rate × duration)`.
    total: u64,
}

impl Schedule {
    /// The schedule of `rate` requests per second for `duration` (`rate` must be positive
    /// and finite; [`super::LoadConfig::validate`] checks it).
    pub fn new(rate: f64, duration: Duration) -> Self {
        let rate_milli = ((rate * 1000.0).round() as u64).max(1);
        let total = (u128::from(rate_milli) * duration.as_millis() / 1_000_000) as u64;
        Self { rate_milli, total }
    }

    /// Number of requests in the run.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The offered rate, in requests per second.
    pub fn rate(&self) -> f64 {
        self.rate_milli as f64 / 1000.0
    }

    /// When request `n` is due, after the start of the run.
    pub fn offset(&self, n: u64) -> Duration {
        let nanos = u128::from(n) * 1_000_000_000_000 / u128::from(self.rate_milli);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The gap between two requests.
    pub fn interval(&self) -> Duration {
        self.offset(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_schedule_times_are_exact() {
        let s = Schedule::new(1000.0, Duration::from_secs(20));
        assert_eq!(s.total(), 20_000);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(1000), Duration::from_secs(1));
        assert_eq!(s.offset(19_999), Duration::from_millis(19_999));

        let third = Schedule::new(3.0, Duration::from_secs(10));
        assert_eq!(third.total(), 30);
        assert_eq!(third.offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(third.offset(3), Duration::from_secs(1));
        assert_eq!(third.offset(29), Duration::from_nanos(9_666_666_666));

        let slow = Schedule::new(0.5, Duration::from_secs(10));
        assert_eq!((slow.total(), slow.offset(1)), (5, Duration::from_secs(2)));
        assert_eq!(Schedule::new(50.0, Duration::from_secs(2)).total(), 100);
    }

    #[test]
    fn load_schedule_is_evenly_spaced_and_increasing() {
        let s = Schedule::new(7_777.0, Duration::from_secs(3));
        assert_eq!(s.total(), 23_331);
        for n in 1..s.total() {
            let gap = s.offset(n) - s.offset(n - 1);
            assert!(gap.as_nanos().abs_diff(s.interval().as_nanos()) <= 1, "gap {gap:?} at {n}");
        }
        assert!((s.rate() - 7_777.0).abs() < 1e-9);
    }
}
