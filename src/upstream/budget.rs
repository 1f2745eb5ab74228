//! The agent's share of the contract's rate limit (DESIGN.md §9): Smaregi limits requests per
//! contract, summed over every store, so no agent owns its configured ceiling.
//!
//! - Reads and writes are paced separately ([`Class`]), each at a current rate between a floor
//!   and the configured ceiling.
//! - On a 429 the rate is cut in half (at most once a second: one burst of refusals is one
//!   signal); while requests succeed *and the pacer was what held them back* it grows by a
//!   fixed step per second (additive increase; an idle agent does not grow a rate it is not
//!   using, RFC 7661's rule for TCP). N agents doing the same converge on about 1/N each.
//! - Within the agent, waiting requests are served by [`Priority`]: pushes first, then a
//!   cashier's look-up, then the change feed, then full pulls — and full pulls get at most
//!   [`FULL_SHARE`] of the rate even when nothing else waits, so a drain never queues behind
//!   them. The priority is a task-local set by the caller ([`with_priority`]), so the
//!   `Upstream` trait stays as it is.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Read,
    Write,
}

/// Who is asking; lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Push = 0,
    Lookup = 1,
    Feed = 2,
    /// The background re-read of customers the feed marked.
    Reread = 3,
    #[default]
    Full = 4,
}

tokio::task_local! {
    static PRIORITY: Priority;
    /// Set by [`Budget::prepaid`]: the task's next request already holds its slot.
    static PREPAID: std::cell::Cell<bool>;
}

/// Runs `f` with its upstream requests at priority `p`.
pub async fn with_priority<F: Future>(p: Priority, f: F) -> F::Output {
    PRIORITY.scope(p, f).await
}

/// The priority of the running task's requests (a look-up's, unless set).
pub fn current_priority() -> Priority {
    PRIORITY.try_with(|p| *p).unwrap_or(Priority::Lookup)
}

/// Full pulls get at most this share of the current read rate.
pub const FULL_SHARE: f64 = 0.25;
/// The rate never falls below this (requests per second): an agent keeps making progress. Low
/// enough that a chain's floors alone stay under its contract (400 stores × 0.05 = 20/s).
const FLOOR: f64 = 0.05;
/// Additive increase (requests per second, per second of limited, refusal-free sending). Small
/// and absolute: fifty agents growing together add 2.5 requests a second to the contract.
const GROW_PER_S: f64 = 0.05;
/// A write lane that was not the bottleneck for this long forgets its rate (RFC 7661's rule for
/// an idle TCP window): it restarts from twice what it used, in slow start, instead of bursting
/// at a rate the other stores have since taken — a chain's drain after an outage. Reads keep
/// their rate: a cashier's look-up must not wait for a slot because the store was quiet.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Where a forgotten write rate restarts at least: two quick sales at the till still go
/// through within the write-through budget.
const IDLE_RESTART: f64 = 2.0;
/// The contract counter ([`SeqGauge`]): how many of our answers it keeps, and how many it
/// needs before it says anything.
const SEQ_KEEP: usize = 64;
const SEQ_MIN: usize = 4;
/// A cut counts once per this span: the refusals of one burst are one signal.
const CUT_SPAN: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Lane {
    ceiling: f64,
    rate: f64,
    /// The pacer's next free slot (GCRA's theoretical arrival time).
    next_at: Instant,
    /// The same for full pulls, at [`FULL_SHARE`] of the rate.
    full_next_at: Instant,
    waiting: [u32; 5],
    last_cut: Option<Instant>,
    last_grow: Instant,
    /// When a request last had to wait for the pacer (the rate was the bottleneck).
    limited_at: Option<Instant>,
    granted: u64,
    throttled: u64,
    /// Doubling each second of limited sending until a 429 or `ssthresh` (TCP's slow start).
    slow_start: bool,
    ssthresh: f64,
    /// Slots granted since `window_start` (for the idle rule).
    window_start: Instant,
    window_grants: u32,
    /// Whether the idle rule applies (the write lane).
    forgets_idle_rate: bool,
    /// The contract's transaction counter as our answers show it ([`Lane::observe_seq`]).
    seq: SeqGauge,
}

/// This lane's share of the contract, read off the `transactionHeadId`s in our `point/add`
/// answers. Smaregi numbers transactions in one sequence per contract (the list filters them
/// as a range), so the step between two of our answers counts every transaction the contract
/// took in between: every store's writes, the online shop's, the registers' sales. The share
/// is what a lane that sat through an outage knows of its chain: one store of fifty sees about
/// a fiftieth. It errs low (register sales use ids but not the write limit), which only makes
/// a restart gentler. (The rate of the counter would say how full the contract is, but
/// register sales swell it by an amount the agent cannot see at once, so it steers nothing.)
#[derive(Debug, Default)]
struct SeqGauge {
    /// (id) of our last [`SEQ_KEEP`] answers, oldest first, however old: a store that writes
    /// rarely still knows its share after a quiet hour or an outage.
    samples: std::collections::VecDeque<u64>,
}

impl SeqGauge {
    fn observe(&mut self, id: u64) {
        if self.samples.back().is_some_and(|&last| id <= last) {
            return; // An answer overtaken by a later one (sends run concurrently).
        }
        self.samples.push_back(id);
        if self.samples.len() > SEQ_KEEP {
            self.samples.pop_front();
        }
    }

    /// Our writes over the contract's transactions across the samples, once there are a few.
    fn share(&self) -> Option<f64> {
        let (&first, &last) = (self.samples.front()?, self.samples.back()?);
        (self.samples.len() >= SEQ_MIN && last > first)
            .then(|| ((self.samples.len() - 1) as f64 / (last - first) as f64).min(1.0))
    }
}

impl Lane {
    fn new(ceiling: u32) -> Lane {
        let now = Instant::now();
        let ceiling = ceiling.max(1) as f64;
        Lane {
            ceiling,
            rate: ceiling,
            next_at: now,
            full_next_at: now,
            waiting: [0; 5],
            last_cut: None,
            last_grow: now,
            limited_at: None,
            granted: 0,
            throttled: 0,
            slow_start: false,
            ssthresh: ceiling,
            window_start: now,
            window_grants: 0,
            forgets_idle_rate: true,
            seq: SeqGauge::default(),
        }
    }

    /// The idle rule: at the end of a window in which the pacer held nothing back, the rate
    /// falls to twice what was used (at least the floor) and slow start takes it up again.
    fn forget_unused_rate(&mut self, now: Instant) {
        let span = now.duration_since(self.window_start);
        if span < IDLE_WINDOW || !self.forgets_idle_rate {
            return;
        }
        let limited = self.limited_at.is_some_and(|t| t >= self.window_start);
        if !limited {
            let used = self.window_grants as f64 / span.as_secs_f64();
            // Restart at the share of the contract this lane last had (one store of fifty
            // restarts at a fiftieth of the limit, a lone store at the restart rate), so a
            // chain's stores coming back together do not start at fifty times the limit.
            // A lane that knows it is one of many skips slow start: the counter's room rule
            // grows it as fast as the contract has room, without fifty lanes doubling blind.
            let (restart, slow) = match self.seq.share() {
                Some(share) if share * self.ceiling < IDLE_RESTART => {
                    ((share * self.ceiling).max(FLOOR), false)
                }
                _ => (IDLE_RESTART, true),
            };
            let start = (2.0 * used).max(restart.min(self.ceiling));
            if start < self.rate {
                self.ssthresh = self.rate;
                self.rate = start;
                self.slow_start = slow;
            }
        }
        self.window_start = now;
        self.window_grants = 0;
    }

    /// The spacing of slots and the credit idle time may build up. Limits are counted per
    /// second, so no one-second span may see more than the rate: with a burst `b`, slots are
    /// paced at `rate - b` (a burst lets a sender whose timer woke late catch up; without one
    /// every late wake-up is lost capacity). From 100/s up, `b` is 2% of the rate.
    fn interval(&self) -> (Duration, Duration) {
        let burst = (self.rate / 50.0).floor();
        if burst <= 1.0 {
            return (Duration::from_secs_f64(1.0 / self.rate), Duration::ZERO);
        }
        let i = Duration::from_secs_f64(1.0 / (self.rate - burst));
        (i, i.mul_f64(burst))
    }

    /// The next slot if it comes within one pacing interval and nothing of a higher priority
    /// waits: reserved (the pacer moves past it) and the wait returned. `None`: the lane is
    /// spoken for; nothing is reserved.
    fn reserve_next(&mut self, prio: Priority, now: Instant) -> Option<Duration> {
        self.forget_unused_rate(now);
        let (interval, credit) = self.interval();
        let earliest = self.next_at.max(now.checked_sub(credit).unwrap_or(now));
        let higher_waiting = self.waiting[..prio as usize].iter().any(|&n| n > 0);
        let wait = earliest.saturating_duration_since(now);
        if higher_waiting || wait > interval {
            self.limited_at = Some(now);
            return None;
        }
        self.next_at = earliest + interval;
        self.granted += 1;
        self.window_grants += 1;
        Some(wait)
    }

    /// A slot now, or how long to wait for one.
    fn try_take(&mut self, prio: Priority, now: Instant) -> Result<(), Duration> {
        self.forget_unused_rate(now);
        let (interval, credit) = self.interval();
        let earliest = self.next_at.max(now.checked_sub(credit).unwrap_or(now));
        let higher_waiting = self.waiting[..prio as usize].iter().any(|&n| n > 0);
        let full_wait = if prio == Priority::Full {
            self.full_next_at.saturating_duration_since(now)
        } else {
            Duration::ZERO
        };
        if earliest <= now && !higher_waiting && full_wait.is_zero() {
            self.next_at = earliest + interval;
            if prio == Priority::Full {
                self.full_next_at = now.max(self.full_next_at) + interval.div_f64(FULL_SHARE);
            }
            self.granted += 1;
            self.window_grants += 1;
            return Ok(());
        }
        self.limited_at = Some(now);
        let pace = earliest.saturating_duration_since(now).max(full_wait);
        // Behind a higher priority: look again soon (it takes the slot first).
        Err(if higher_waiting {
            pace.max(Duration::from_millis(5)).min(interval)
        } else {
            pace.max(Duration::from_millis(1))
        })
    }

    /// A `transactionHeadId` from a `point/add` answer.
    fn observe_seq(&mut self, id: u64) {
        self.seq.observe(id);
    }

    fn throttled(&mut self, now: Instant) {
        self.throttled += 1;
        if self
            .last_cut
            .is_none_or(|t| now.duration_since(t) >= CUT_SPAN)
        {
            self.rate = (self.rate / 2.0).max(FLOOR);
            self.ssthresh = self.rate;
            self.slow_start = false;
            self.last_cut = Some(now);
            self.last_grow = now;
        }
    }

    fn succeeded(&mut self, now: Instant) {
        let dt = now.duration_since(self.last_grow).as_secs_f64();
        self.last_grow = now;
        let limited = self
            .limited_at
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(2));
        if !limited {
            return;
        }
        let dt = dt.min(1.0);
        if self.slow_start {
            self.rate = (self.rate * 2f64.powf(dt))
                .min(self.ssthresh)
                .min(self.ceiling);
            if self.rate >= self.ssthresh {
                self.slow_start = false;
            }
        } else {
            self.rate = (self.rate + GROW_PER_S * dt).min(self.ceiling);
        }
    }
}

/// A snapshot for `status` and `/metrics`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LaneSnapshot {
    /// The configured ceiling (requests per second).
    pub ceiling_per_s: f64,
    /// The rate the agent paces at now (cut on 429, grown back while it succeeds).
    pub rate_per_s: f64,
    pub granted_total: u64,
    /// 429 answers seen.
    pub throttled_total: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BudgetSnapshot {
    pub reads: LaneSnapshot,
    pub writes: LaneSnapshot,
}

#[derive(Debug)]
pub struct Budget {
    lanes: [Mutex<Lane>; 2],
}

/// Counts a waiting request until it is served or given up (a cancelled future).
struct Waiting<'a> {
    lane: &'a Mutex<Lane>,
    prio: Priority,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut l = self
            .lane
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        l.waiting[self.prio as usize] = l.waiting[self.prio as usize].saturating_sub(1);
    }
}

impl Budget {
    pub fn new(reads_per_s: u32, writes_per_s: u32) -> Budget {
        Budget {
            lanes: [
                Mutex::new(Lane {
                    forgets_idle_rate: false,
                    ..Lane::new(reads_per_s)
                }),
                Mutex::new(Lane::new(writes_per_s)),
            ],
        }
    }

    fn lane(&self, c: Class) -> &Mutex<Lane> {
        &self.lanes[c as usize]
    }

    /// Waits for a slot of `class` at the running task's priority.
    pub async fn acquire(&self, class: Class) {
        if PREPAID.try_with(|p| p.replace(false)).unwrap_or(false) {
            return;
        }
        let prio = current_priority();
        let lane = self.lane(class);
        lane.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .waiting[prio as usize] += 1;
        let _w = Waiting { lane, prio };
        loop {
            let wait = match lane
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .try_take(prio, Instant::now())
            {
                Ok(()) => return,
                Err(d) => d,
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes the next slot of `class` at the running task's priority if it comes within one
    /// pacing interval (waiting that long), else says no at once. A cashier's look-up refresh
    /// asks this way: when the agent's share of the contract is spoken for, the register is
    /// answered from the cache rather than after a queue (a flood of look-ups must not wait
    /// behind the rate limit, issue 22).
    pub async fn try_acquire(&self, class: Class) -> bool {
        let prio = current_priority();
        let wait = match self.lane(class).lock() {
            Ok(mut lane) => lane.reserve_next(prio, Instant::now()),
            Err(_) => None,
        };
        match wait {
            None => false,
            Some(w) => {
                if !w.is_zero() {
                    tokio::time::sleep(w).await;
                }
                true
            }
        }
    }

    /// Runs `f`, whose next request was paid for by [`Budget::try_acquire`].
    pub async fn prepaid<F: Future>(f: F) -> F::Output {
        PREPAID.scope(std::cell::Cell::new(true), f).await
    }

    /// A `transactionHeadId` from a `point/add` answer: the contract's transaction counter,
    /// from which the write lane learns its share of the contract ([`SeqGauge`]).
    pub fn observe_write_seq(&self, id: u64) {
        self.lane(Class::Write)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe_seq(id);
    }

    pub fn on_throttled(&self, class: Class) {
        self.lane(class)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .throttled(Instant::now());
    }

    pub fn on_success(&self, class: Class) {
        self.lane(class)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .succeeded(Instant::now());
    }

    /// How much a periodic reader (the change feed) should stretch its interval: the ceiling
    /// over the current rate while a 429 cut it within the last minute, else 1. (A rate the
    /// idle rule lowered is not a sign that the contract is short.)
    pub fn stretch(&self, class: Class) -> f64 {
        let l = self
            .lane(class)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match l.last_cut {
            Some(t) if t.elapsed() < Duration::from_secs(60) => {
                (l.ceiling / l.rate.max(0.01)).clamp(1.0, 8.0)
            }
            _ => 1.0,
        }
    }

    pub fn snapshot(&self) -> BudgetSnapshot {
        let s = |c: Class| {
            let l = self
                .lane(c)
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            LaneSnapshot {
                ceiling_per_s: l.ceiling,
                rate_per_s: (l.rate * 100.0).round() / 100.0,
                granted_total: l.granted,
                throttled_total: l.throttled,
            }
        };
        BudgetSnapshot {
            reads: s(Class::Read),
            writes: s(Class::Write),
        }
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "budget_model.rs"]
mod model;
