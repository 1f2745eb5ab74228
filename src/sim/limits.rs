//! The contract's rate limits and who used them.
//!
//! Smaregi limits requests **per contract**, summed over every store and app (DESIGN.md §4):
//! reads (every GET, and token requests, which count *(3P)*) and writes (`point/add`)
//! separately, `429` with `Retry-After` beyond them. The figure is "N per second"; the
//! simulator enforces it as a **sliding one-second window**: a request is admitted when fewer
//! than N requests of its class were admitted in the second before it. That is the strictest
//! reading of "N per second" — no one-second span ever holds more than N — where a fixed
//! per-second window lets 2N through across a boundary and a token bucket of depth N lets a
//! full bucket plus a second's refill (2N) into about one second. Refused requests do not use
//! the budget (only admitted ones are remembered), so a client that backs off gets its share
//! back at once.
//!
//! `Retry-After` is the whole seconds (at least 1, as HTTP's delta-seconds are whole) until the
//! oldest remembered request leaves the window, i.e. until a request of that class would be
//! admitted again if nobody else asked.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The class of a request, as the contract's limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// GETs and token requests.
    Read,
    /// `point/add`.
    Write,
}

/// What one `User-Agent` asked of the contract, counted at arrival whatever the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCounts {
    /// Read-class requests: GETs and token requests (the contract counts both as reads).
    pub reads: u64,
    /// Write-class requests: `point/add`.
    pub writes: u64,
    /// Token requests (also counted in `reads`).
    pub tokens: u64,
    /// Change-feed reads (also counted in `reads`): `GET /pos/transactions` other than one
    /// customer's (`customer_code`, a read-back), and `GET /pos/customers` with an
    /// `upd_date_time` window.
    #[serde(default)]
    pub feed: u64,
    /// Requests answered 429, by a limit or by the `throttle_rate` fault.
    pub throttled: u64,
    /// Of those, write-class requests refused by the write limit.
    #[serde(default)]
    pub throttled_writes: u64,
}

/// At most `limit` admitted requests in any one-second span.
#[derive(Debug)]
pub struct Window {
    limit: u32,
    admitted: VecDeque<Instant>,
}

const SPAN: Duration = Duration::from_secs(1);

impl Window {
    pub fn new(limit: u32) -> Window {
        Window {
            limit: limit.max(1),
            admitted: VecDeque::with_capacity(limit.max(1) as usize),
        }
    }

    /// `None` if a request would be admitted at `now`, else how long until one would be.
    fn wait(&mut self, now: Instant) -> Option<Duration> {
        while let Some(&t) = self.admitted.front() {
            if now.duration_since(t) >= SPAN {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
        if (self.admitted.len() as u32) < self.limit {
            return None;
        }
        let oldest = *self.admitted.front().expect("full window");
        Some(SPAN - now.duration_since(oldest))
    }

    fn admit(&mut self, now: Instant) {
        self.admitted.push_back(now);
    }
}

/// The contract's limits: reads, writes and (optionally) everything together.
#[derive(Debug, Default)]
pub struct ContractLimits {
    reads: Option<Window>,
    writes: Option<Window>,
    all: Option<Window>,
}

impl ContractLimits {
    pub fn new(reads: Option<u32>, writes: Option<u32>, all: Option<u32>) -> ContractLimits {
        ContractLimits {
            reads: reads.map(Window::new),
            writes: writes.map(Window::new),
            all: all.map(Window::new),
        }
    }

    /// Admits a request of `class` at `now`, or refuses it with the `Retry-After` seconds to
    /// answer (whole, at least 1). A request is admitted only if every limit it falls under
    /// has room; a refused one uses none of them.
    pub fn admit(&mut self, class: Class, now: Instant) -> Result<(), u64> {
        let own = match class {
            Class::Read => self.reads.as_mut(),
            Class::Write => self.writes.as_mut(),
        };
        let mut wait: Option<Duration> = None;
        if let Some(w) = own {
            wait = wait.max(w.wait(now));
        }
        if let Some(w) = self.all.as_mut() {
            wait = wait.max(w.wait(now));
        }
        if let Some(w) = wait {
            return Err(retry_after_s(w));
        }
        let own = match class {
            Class::Read => self.reads.as_mut(),
            Class::Write => self.writes.as_mut(),
        };
        if let Some(w) = own {
            w.admit(now);
        }
        if let Some(w) = self.all.as_mut() {
            w.admit(now);
        }
        Ok(())
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_s(wait: Duration) -> u64 {
    let ms = wait.as_millis() as u64;
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(l: &mut ContractLimits, class: Class, n: u32, at: Instant) -> (u32, Vec<u64>) {
        let mut ok = 0;
        let mut refused = Vec::new();
        for _ in 0..n {
            match l.admit(class, at) {
                Ok(()) => ok += 1,
                Err(s) => refused.push(s),
            }
        }
        (ok, refused)
    }

    #[test]
    fn reads_and_writes_have_separate_budgets() {
        let t0 = Instant::now();
        let mut l = ContractLimits::new(Some(50), Some(20), None);
        let (ok, refused) = run(&mut l, Class::Write, 30, t0);
        assert_eq!((ok, refused.len()), (20, 10));
        // The writes used up do not touch the read budget.
        let (ok, refused) = run(&mut l, Class::Read, 60, t0);
        assert_eq!((ok, refused.len()), (50, 10));
        // Every refusal names a whole Retry-After of at least one second.
        assert!(refused.iter().all(|&s| s == 1), "{refused:?}");
    }

    #[test]
    fn no_one_second_span_holds_more_than_the_limit() {
        let t0 = Instant::now();
        let mut l = ContractLimits::new(Some(10), None, None);
        // 10 at 0.9 s: the window is full until 1.9 s, not merely until the next whole second.
        let t = t0 + Duration::from_millis(900);
        assert_eq!(run(&mut l, Class::Read, 10, t).0, 10);
        let at_1_1 = t0 + Duration::from_millis(1_100);
        assert_eq!(l.admit(Class::Read, at_1_1), Err(1));
        let at_1_9 = t0 + Duration::from_millis(1_900);
        assert_eq!(run(&mut l, Class::Read, 11, at_1_9).0, 10);
        // Spread evenly, N per second is sustained indefinitely.
        let mut l = ContractLimits::new(Some(20), None, None);
        let mut admitted = 0;
        for i in 0..200u64 {
            if l.admit(Class::Read, t0 + Duration::from_millis(i * 50))
                .is_ok()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 200);
    }

    #[test]
    fn refused_requests_use_no_budget_and_retry_after_counts_up() {
        let t0 = Instant::now();
        let mut l = ContractLimits::new(None, Some(2), None);
        assert_eq!(run(&mut l, Class::Write, 2, t0).0, 2);
        // Hammering while refused does not push the reopening back.
        for i in 0..100 {
            assert!(
                l.admit(Class::Write, t0 + Duration::from_millis(i))
                    .is_err()
            );
        }
        assert!(l.admit(Class::Write, t0 + SPAN).is_ok());
        assert_eq!(retry_after_s(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_s(Duration::ZERO), 1);
    }

    #[test]
    fn the_combined_limit_applies_on_top_of_the_class_limits() {
        let t0 = Instant::now();
        let mut l = ContractLimits::new(Some(50), Some(20), Some(30));
        assert_eq!(run(&mut l, Class::Write, 20, t0).0, 20);
        // Reads have room of their own but only 10 of the combined 30 are left.
        assert_eq!(run(&mut l, Class::Read, 50, t0).0, 10);
        // Unlimited contract: everything passes.
        let mut l = ContractLimits::new(None, None, None);
        assert_eq!(run(&mut l, Class::Read, 10_000, t0).0, 10_000);
    }
}
