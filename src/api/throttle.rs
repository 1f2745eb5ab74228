//! Failed sign-ins, limited per client address: after `MAX_FAILURES` in `WINDOW` that address
//! gets 429 until its oldest failure is out of the window; other addresses are unaffected.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it the ones whose failures aged out are forgotten
/// first, then the map starts afresh (a spoofed-address flood cannot grow memory).
const MAX_ADDRESSES: usize = 65_536;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// The unit an address is counted in: an IPv4 address, or an IPv6 /64 (one host can pick
/// any address in its /64).
fn unit(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Throttle {
    /// `Some(seconds to wait)` when `addr` may not try a token now.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<u64> {
        // The store PC itself (127.0.0.1, ::1) is not throttled: whoever runs there can read
        // the config and the token file anyway, and a local tool's bad token must not lock the
        // machine's own register out. Other loopback addresses are, like the LAN.
        if addr == IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            || addr == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        {
            return None;
        }
        let addr = unit(addr);
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = map.get_mut(&addr)?;
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() < MAX_FAILURES {
            return None;
        }
        let oldest = *q.front()?;
        let left = WINDOW.saturating_sub(now.duration_since(oldest));
        Some(left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Notes a failed sign-in from `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let addr = unit(addr);
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
        }
        let q = map.entry(addr).or_default();
        q.push_back(now);
        // Only the last MAX_FAILURES matter for the rule.
        while q.len() > MAX_FAILURES {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_pc_itself_is_never_throttled_other_loopback_addresses_are() {
        let t = Throttle::default();
        let now = Instant::now();
        for addr in ["127.0.0.1", "::1", "127.0.0.2"] {
            let a: IpAddr = addr.parse().unwrap();
            for _ in 0..MAX_FAILURES {
                t.failed(a, now);
            }
        }
        assert_eq!(t.blocked("127.0.0.1".parse().unwrap(), now), None);
        assert_eq!(t.blocked("::1".parse().unwrap(), now), None);
        assert!(t.blocked("127.0.0.2".parse().unwrap(), now).is_some());
    }

    #[test]
    fn ten_failures_block_that_address_for_the_rest_of_the_minute() {
        let t = Throttle::default();
        let (a, b): (IpAddr, IpAddr) = (
            "192.168.1.50".parse().unwrap(),
            "192.168.1.9".parse().unwrap(),
        );
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for i in 0..MAX_FAILURES as u64 {
            assert_eq!(t.blocked(a, at(i)), None);
            t.failed(a, at(i));
        }
        assert_eq!(t.blocked(a, at(10)), Some(50));
        assert_eq!(t.blocked(b, at(10)), None, "another address is unaffected");
        assert_eq!(t.blocked(a, at(59)), Some(1));
        // The first failure aged out: one more try.
        assert_eq!(t.blocked(a, at(60)), None);
        t.failed(a, at(60));
        assert_eq!(t.blocked(a, at(60)), Some(1));
        assert_eq!(t.blocked(a, at(61 + 9)), None);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES {
            t.failed(format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap(), now);
        }
        assert!(
            t.blocked("2001:db8:1:2::ffff".parse().unwrap(), now)
                .is_some()
        );
        assert!(t.blocked("2001:db8:1:3::1".parse().unwrap(), now).is_none());
        // An IPv4-mapped address is the IPv4 address.
        t.failed("::ffff:192.0.2.1".parse().unwrap(), now);
        assert!(t.blocked("192.0.2.9".parse().unwrap(), now).is_none());
    }
}
