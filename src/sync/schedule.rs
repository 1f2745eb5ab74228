//! The retry schedule, and nothing else. The `backoff` crate supplies exponential delays with
//! jitter; the attempt count that feeds it lives in SQLite, so a restart neither resets the
//! schedule nor makes every queued transaction fire at once.
//!
//! `backoff` 0.4 is unmaintained (RUSTSEC-2025-0012; its `instant` dependency is
//! RUSTSEC-2024-0384). It is used here only as a pure schedule, behind this one module, so a
//! swap to `backon` touches this file alone. See `deny.toml` for the recorded exception.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
}

impl Schedule {
    /// Delay before attempt `attempt + 1`, given `attempt` attempts already made (≥ 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut eb = ExponentialBackoff {
            current_interval: self.initial,
            initial_interval: self.initial,
            randomization_factor: 0.5,
            multiplier: self.multiplier,
            max_interval: self.max,
            max_elapsed_time: None,
            ..Default::default()
        };
        // Past the point where the interval reaches `max`, more steps change nothing.
        let steps = attempt.clamp(1, 64);
        let mut d = self.initial;
        for _ in 0..steps {
            d = eb.next_backoff().unwrap_or(self.max);
        }
        d.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_attempts_and_stays_within_bounds() {
        let s = Schedule {
            initial: Duration::from_millis(1000),
            max: Duration::from_secs(60),
            multiplier: 2.0,
        };
        for _ in 0..50 {
            let d1 = s.delay(1);
            assert!(
                d1 >= Duration::from_millis(500) && d1 <= Duration::from_millis(1500),
                "{d1:?}"
            );
            let d4 = s.delay(4); // around 8 s ± 50 %
            assert!(
                d4 >= Duration::from_secs(4) && d4 <= Duration::from_secs(12),
                "{d4:?}"
            );
            assert!(s.delay(1000) <= Duration::from_secs(60));
            assert!(s.delay(1000) >= Duration::from_secs(30));
        }
    }
}
