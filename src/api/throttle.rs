//! Failed sign-ins, limited per client address: after `MAX_FAILURES` in `WINDOW` that address
//! gets 429 until its oldest failure is out of the window; other addresses are unaffected.
//!
//! No address is exempt unless the operator lists it (`api.signin_throttle_exempt`, empty by
//! default): the store PC's own loopback included, since any local process could otherwise
//! guess tokens without limit. An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, as a
//! dual-stack listener sees IPv4 clients) is its IPv4 address; an IPv6 client is counted by
//! its own address, not its /64: a store LAN is one /64 (and link-local is fe80::/64), so a
//! /64 would let one device's wrong tokens throttle every IPv6 register. The table is bounded
//! (`MAX_ADDRESSES`), so many addresses cannot grow memory.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const MAX_FAILURES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it the ones whose failures aged out are forgotten
/// first, then the map starts afresh (a spoofed-address flood cannot grow memory).
const MAX_ADDRESSES: usize = 65_536;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    exempt: Vec<IpAddr>,
}

/// The unit an address is counted in: an IPv4 address (mapped or not), or one IPv6 address.
pub fn unit(addr: IpAddr) -> IpAddr {
    super::server::client_unit(addr)
}

/// Whether `q` (failures, oldest first) blocks now, once aged-out failures are dropped.
fn full(q: &mut VecDeque<Instant>, now: Instant) -> bool {
    while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        q.pop_front();
    }
    q.len() >= MAX_FAILURES
}

impl Throttle {
    /// A throttle that never limits the addresses in `exempt` (the operator's explicit list).
    pub fn new(exempt: Vec<IpAddr>) -> Throttle {
        Throttle {
            failures: Mutex::default(),
            exempt: exempt.into_iter().map(unit).collect(),
        }
    }

    /// `Some(seconds to wait)` when `addr` may not try a token now.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<u64> {
        let addr = unit(addr);
        if self.exempt.contains(&addr) {
            return None;
        }
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let q = map.get_mut(&addr)?;
        if !full(q, now) {
            return None;
        }
        let oldest = *q.front()?;
        let left = WINDOW.saturating_sub(now.duration_since(oldest));
        Some(left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Notes a failed sign-in from `addr`; true when this failure throttles the address (it
    /// was not throttled before).
    pub fn failed(&self, addr: IpAddr, now: Instant) -> bool {
        let addr = unit(addr);
        if self.exempt.contains(&addr) {
            return false;
        }
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
        }
        let q = map.entry(addr).or_default();
        let was = full(q, now);
        q.push_back(now);
        // Only the last MAX_FAILURES matter for the rule.
        while q.len() > MAX_FAILURES {
            q.pop_front();
        }
        !was && q.len() >= MAX_FAILURES
    }

    /// Addresses throttled now (for the gauge); forgets the ones whose failures aged out.
    pub fn throttled_now(&self, now: Instant) -> usize {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        map.values_mut()
            .map(|q| full(q, now))
            .filter(|b| *b)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_address_is_exempt_by_default_and_a_listed_one_is() {
        let t = Throttle::default();
        let now = Instant::now();
        for addr in ["127.0.0.1", "::1"] {
            for i in 0..MAX_FAILURES {
                assert_eq!(t.failed(ip(addr), now), i + 1 == MAX_FAILURES, "{addr} {i}");
            }
            assert!(t.blocked(ip(addr), now).is_some(), "{addr}");
        }
        let t = Throttle::new(vec![ip("127.0.0.1")]);
        for _ in 0..MAX_FAILURES * 2 {
            assert!(!t.failed(ip("127.0.0.1"), now));
        }
        assert_eq!(t.blocked(ip("127.0.0.1"), now), None);
        assert_eq!(t.blocked(ip("::ffff:127.0.0.1"), now), None, "mapped too");
        assert_eq!(t.throttled_now(now), 0);
    }

    #[test]
    fn ten_failures_block_that_address_for_the_rest_of_the_minute() {
        let t = Throttle::default();
        let (a, b) = (ip("192.168.1.50"), ip("192.168.1.9"));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for i in 0..MAX_FAILURES as u64 {
            assert_eq!(t.blocked(a, at(i)), None);
            t.failed(a, at(i));
        }
        assert_eq!(t.blocked(a, at(10)), Some(50));
        assert_eq!(t.throttled_now(at(10)), 1);
        assert_eq!(t.blocked(b, at(10)), None, "another address is unaffected");
        assert_eq!(t.blocked(a, at(59)), Some(1));
        // The first failure aged out: one more try, which throttles it again.
        assert_eq!(t.blocked(a, at(60)), None);
        assert!(t.failed(a, at(60)), "throttled anew");
        assert_eq!(t.blocked(a, at(60)), Some(1));
        assert_eq!(t.blocked(a, at(61 + 9)), None);
        assert_eq!(t.throttled_now(at(200)), 0);
    }

    #[test]
    fn an_ipv6_host_counts_alone_and_a_mapped_address_is_its_ipv4() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            t.failed(ip("fe80::1"), now);
        }
        assert!(t.blocked(ip("fe80::1"), now).is_some());
        // Its neighbour in the same /64 (the whole store LAN) is unaffected.
        assert!(t.blocked(ip("fe80::2"), now).is_none());
        for _ in 0..MAX_FAILURES {
            t.failed(ip("::ffff:192.0.2.1"), now);
        }
        assert!(t.blocked(ip("192.0.2.1"), now).is_some());
        assert!(t.blocked(ip("192.0.2.9"), now).is_none());
    }
}
