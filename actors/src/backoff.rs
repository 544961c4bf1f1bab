//! Exponential backoff, shared by every reconnect and restart loop.

use std::time::Duration;

/// `min · 2^attempt`, capped at `max` (attempt 0 waits `min`).
pub fn exponential(min: Duration, max: Duration, attempt: u32) -> Duration {
    min.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(exponential(min, max, 0), min);
        assert_eq!(exponential(min, max, 1), min * 2);
        assert_eq!(exponential(min, max, 3), min * 8);
        assert_eq!(exponential(min, max, 40), max);
    }
}
