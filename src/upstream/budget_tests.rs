//! Table tests of the budget's lanes: AIMD, the idle rule, priorities, a look-up's slot
//! (a child module of `budget.rs`, as `budget_model.rs` is).

use super::*;

#[test]
fn a_lookup_takes_the_next_slot_within_one_interval_or_none_at_all() {
    let mut l = Lane::new(10);
    let t0 = Instant::now();
    let cases: &[(u64, Option<u64>)] = &[
        // (ms after t0, the wait a look-up gets, or None when it is refused)
        (0, Some(0)),
        (0, Some(100)),
        (0, None),
        (50, None),
        (100, Some(100)),
        (450, Some(0)),
    ];
    for &(at, want) in cases {
        let got = l
            .reserve_next(Priority::Lookup, t0 + Duration::from_millis(at))
            .map(|d| d.as_millis() as u64);
        assert_eq!(got, want, "at +{at} ms");
    }
    // A push waiting goes first: a look-up is refused even with the slot free.
    l.waiting[Priority::Push as usize] = 1;
    assert_eq!(
        l.reserve_next(Priority::Lookup, t0 + Duration::from_secs(5)),
        None
    );
}

#[test]
fn a_429_halves_the_rate_once_per_burst_and_success_grows_it_back_only_when_limited() {
    let mut l = Lane::new(20);
    let t0 = Instant::now();
    l.throttled(t0);
    l.throttled(t0 + Duration::from_millis(100));
    assert_eq!(l.rate, 10.0, "one burst of refusals is one cut");
    l.throttled(t0 + Duration::from_millis(1_200));
    assert_eq!(l.rate, 5.0);
    // Idle successes (the pacer never held anything back) do not grow the rate.
    l.succeeded(t0 + Duration::from_secs(3));
    assert_eq!(l.rate, 5.0);
    // Limited, refusal-free seconds grow it by GROW_PER_S per second.
    let mut t = t0 + Duration::from_secs(3);
    for _ in 0..10 {
        t += Duration::from_secs(1);
        l.limited_at = Some(t);
        l.succeeded(t);
    }
    assert!(
        (l.rate - (5.0 + 10.0 * GROW_PER_S)).abs() < 1e-9,
        "{}",
        l.rate
    );
    for _ in 0..1000 {
        t += Duration::from_secs(1);
        l.limited_at = Some(t);
        l.succeeded(t);
    }
    assert_eq!(l.rate, 20.0, "never above the ceiling");
    for _ in 0..400 {
        t += Duration::from_secs(1);
        l.limited_at = Some(t);
        l.succeeded(t);
    }
    for i in 0..20 {
        l.throttled(t + Duration::from_secs(2 * i));
    }
    assert_eq!(l.rate, FLOOR, "never below the floor");
}

#[test]
fn an_idle_lane_forgets_its_rate_and_slow_starts_back() {
    let mut l = Lane::new(20);
    let t0 = Instant::now();
    // Two requests in 12 s, never held back: the rate falls to the restart rate (2/s: more
    // than twice the 0.17/s used), then doubles each limited second up to the old rate.
    assert!(l.try_take(Priority::Push, t0).is_ok());
    assert!(
        l.try_take(Priority::Push, t0 + Duration::from_secs(2))
            .is_ok()
    );
    assert!(
        l.try_take(Priority::Push, t0 + Duration::from_secs(12))
            .is_ok()
    );
    let start = l.rate;
    assert_eq!(start, IDLE_RESTART, "{start}");
    assert!(l.slow_start);
    let mut t = t0 + Duration::from_secs(12);
    let mut seconds = 0;
    while l.rate < 20.0 {
        t += Duration::from_secs(1);
        l.limited_at = Some(t);
        l.succeeded(t);
        seconds += 1;
    }
    assert!(seconds <= 4, "slow start took {seconds} s");
    assert!(!l.slow_start);
    // A 429 during slow start ends it at half the rate.
    let mut l = Lane::new(20);
    l.rate = 4.0;
    l.slow_start = true;
    l.throttled(t);
    assert_eq!((l.rate, l.slow_start), (2.0, false));
}

#[test]
fn a_quiet_read_lane_keeps_its_rate() {
    let b = Budget::new(50, 20);
    let mut l = b.lanes[Class::Read as usize].lock().unwrap();
    let t0 = Instant::now();
    assert!(l.try_take(Priority::Lookup, t0).is_ok());
    assert!(
        l.try_take(Priority::Lookup, t0 + Duration::from_secs(30))
            .is_ok()
    );
    assert_eq!(l.rate, 50.0);
}

#[test]
fn a_lower_priority_waits_while_a_higher_one_is_waiting() {
    let mut l = Lane::new(10);
    let now = Instant::now();
    l.waiting[Priority::Push as usize] = 1;
    assert!(l.try_take(Priority::Feed, now).is_err());
    assert!(l.try_take(Priority::Push, now).is_ok());
    l.waiting[Priority::Push as usize] = 0;
    // The slot after a push is 100 ms later.
    assert!(
        l.try_take(Priority::Feed, now).is_ok()
            || l.try_take(Priority::Feed, now + Duration::from_millis(100))
                .is_ok()
    );
}

#[test]
fn pacing_keeps_to_the_rate_and_full_pulls_to_their_share() {
    let mut l = Lane::new(10);
    let start = Instant::now();
    let (mut any, mut full) = (0, 0);
    // 10 s of requests asked for every millisecond: any priority, then full pulls only.
    for ms in 0..10_000 {
        if l.try_take(Priority::Feed, start + Duration::from_millis(ms))
            .is_ok()
        {
            any += 1;
        }
    }
    let mut l = Lane::new(10);
    for ms in 0..10_000 {
        if l.try_take(Priority::Full, start + Duration::from_millis(ms))
            .is_ok()
        {
            full += 1;
        }
    }
    assert!((95..=105).contains(&any), "{any} in 10 s at 10/s");
    assert!(
        (23..=28).contains(&full),
        "{full} full-pull slots in 10 s at 10/s × {FULL_SHARE}"
    );
}

#[tokio::test]
async fn priority_is_task_local() {
    assert_eq!(current_priority(), Priority::Lookup);
    let p = with_priority(Priority::Full, async { current_priority() }).await;
    assert_eq!(p, Priority::Full);
}
