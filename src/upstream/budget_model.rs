//! The chain drain model and its tests (test-only; a child of `budget`, so it drives the
//! private lanes directly).

/// A chain's drain in virtual time: the write lanes of N agents, idle through an outage, each
/// with a backlog, against the simulator's contract-wide write limit (the same sliding
/// window, the same `Retry-After`). It exercises the lane exactly as `acquire` and the
/// upstream wrapper do, without processes or real time, so the sharing rules can be judged in
/// milliseconds and replayed from a seed.
mod chain_model {
    use super::super::*;
    use crate::sim::limits::{Class as SimClass, ContractLimits};
    use rand::{Rng, SeedableRng};

    pub struct Outcome {
        /// Writes admitted per second while every agent still had a backlog, over the limit.
        pub throughput: f64,
        /// Jain's index of the agents' admitted writes in that window.
        pub fairness: f64,
        /// 429s over all write requests of the drain.
        pub share_429: f64,
        /// When the first agent's backlog emptied (s after the link came back).
        pub window_s: f64,
    }

    struct Agent {
        lane: Lane,
        backlog: u32,
        start: Duration,
        paused_until: Duration,
        /// (answer due at, the id its answer carries if admitted) of each request in flight.
        in_flight: Vec<(Duration, Option<u64>)>,
        admitted: u32,
    }

    /// How the lanes behave in the model.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Mode {
        /// As built, but without the counter's share: every lane restarts at 2/s, slow start.
        Blind,
        /// As built: each lane restarts at the share the counter showed before the outage.
        Share,
        /// No adaptation at all: every lane sends at this fixed rate (it still waits out
        /// Retry-After). What the contract's strict window costs, whatever the algorithm.
        Fixed(f64),
    }

    pub fn drain(n: usize, backlog: u32, limit: u32, seed: u64, mode: Mode) -> Outcome {
        let use_seq = mode == Mode::Share;
        const TICK: Duration = Duration::from_millis(5);
        const RTT: Duration = Duration::from_millis(60);
        const CONCURRENCY: usize = 4;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let base = Instant::now();
        // The outage: a minute of silence, so each lane's idle rule applies at its first slot.
        let outage = Duration::from_secs(60);
        let mut agents: Vec<Agent> = (0..n)
            .map(|i| Agent {
                lane: {
                    // Before the outage: a quiet steady state, every store writing now and
                    // then (the counter shows each lane its share, 1/n).
                    let mut l = Lane::new(limit);
                    if let Mode::Fixed(r) = mode {
                        l.rate = r;
                        l.forgets_idle_rate = false;
                    }
                    if use_seq {
                        for j in 0..6u64 {
                            l.observe_seq(1_000 + j * n as u64 + i as u64);
                        }
                    }
                    l
                },
                backlog: backlog + rng.random_range(0..=backlog / 4),
                // Each agent's probe notices the link within its 5 s interval.
                start: outage + Duration::from_millis(rng.random_range(0..5_000)),
                paused_until: Duration::ZERO,
                in_flight: Vec::new(),
                admitted: 0,
            })
            .collect();
        let mut contract = ContractLimits::new(None, Some(limit), None);
        // The contract's transaction counter (`transactionHeadId`), as its answers show it.
        let mut seq = 1_000_000u64;
        let (mut requests, mut refused) = (0u64, 0u64);
        let mut first_empty: Option<Duration> = None;
        let mut t = outage;
        while first_empty.is_none() && t < outage + Duration::from_secs(1_800) {
            let now = base + t;
            for a in agents.iter_mut() {
                // Answers due now.
                let mut k = 0;
                while k < a.in_flight.len() {
                    let (due, ok) = a.in_flight[k];
                    if due > t {
                        k += 1;
                        continue;
                    }
                    a.in_flight.swap_remove(k);
                    let adapts = !matches!(mode, Mode::Fixed(_));
                    if let Some(id) = ok {
                        if use_seq {
                            a.lane.observe_seq(id);
                        }
                        if adapts {
                            a.lane.succeeded(now);
                        }
                        a.backlog -= 1;
                        a.admitted += 1;
                    } else if adapts {
                        a.lane.throttled(now);
                    }
                }
                if a.backlog == 0 {
                    first_empty.get_or_insert(t - outage);
                    continue;
                }
                if t < a.start || t < a.paused_until {
                    continue;
                }
                let waiting = a.backlog as usize > a.in_flight.len();
                if waiting
                    && a.in_flight.len() < CONCURRENCY
                    && a.lane.try_take(Priority::Push, now).is_ok()
                {
                    requests += 1;
                    // The request reaches the contract half a round trip later; its answer
                    // is back a round trip after it left.
                    let arrival = now + RTT / 2;
                    match contract.admit(SimClass::Write, arrival) {
                        Ok(()) => {
                            seq += 1;
                            a.in_flight.push((t + RTT, Some(seq)));
                        }
                        Err(retry_after_s) => {
                            refused += 1;
                            a.in_flight.push((t + RTT, None));
                            // `Observed::permit`: every request waits out Retry-After, plus
                            // a spread of up to a quarter of it (at most 250 ms).
                            let wait = Duration::from_secs(retry_after_s);
                            let spread = rng.random_range(0..=wait.as_millis().min(1_000) / 4);
                            a.paused_until = t + RTT + wait + Duration::from_millis(spread as u64);
                        }
                    }
                }
            }
            t += TICK;
        }
        let window = first_empty.unwrap_or(t - outage);
        let per: Vec<f64> = agents.iter().map(|a| a.admitted as f64).collect();
        let sum: f64 = per.iter().sum();
        let squares: f64 = per.iter().map(|x| x * x).sum();
        Outcome {
            throughput: sum / window.as_secs_f64() / limit as f64,
            fairness: if squares > 0.0 {
                sum * sum / (per.len() as f64 * squares)
            } else {
                0.0
            },
            share_429: refused as f64 / requests.max(1) as f64,
            window_s: window.as_secs_f64(),
        }
    }
}

mod chain_model_tests {
    use super::super::*;
    use super::chain_model::{Mode, drain};

    #[test]
    fn a_chain_draining_at_once_fills_the_contract_and_shares_it() {
        // Ten stores, then fifty, each with about a minute of backlog at its fair share: the
        // contract runs near its limit and no store starves. Fifty stores below one request a
        // second each pay for it in 429s (the frontier below and the README's chain section).
        for seed in 1..=3 {
            let o = drain(10, 120, 20, seed, Mode::Share);
            assert!(
                o.throughput >= 0.75,
                "seed {seed}: {:.3} of the limit",
                o.throughput
            );
            assert!(o.fairness >= 0.85, "seed {seed}: Jain {:.3}", o.fairness);
            assert!(o.share_429 < 0.1, "seed {seed}: {:.3} refused", o.share_429);
            assert!(o.window_s > 20.0, "seed {seed}: window {:.1} s", o.window_s);
            let o = drain(50, 60, 20, seed, Mode::Share);
            assert!(
                o.throughput >= 0.8,
                "seed {seed}: {:.3} of the limit",
                o.throughput
            );
            assert!(o.fairness >= 0.7, "seed {seed}: Jain {:.3}", o.fairness);
            // Restarting at the share the counter showed, not at the blind restart rate,
            // spares the burst of refusals fifty lanes in slow start meet together.
            let blind = drain(50, 60, 20, seed, Mode::Blind);
            assert!(
                o.share_429 < 0.8 * blind.share_429,
                "seed {seed}: {:.3} refused at share vs {:.3} blind",
                o.share_429,
                blind.share_429
            );
        }
    }

    #[test]
    fn the_counter_shows_a_lane_its_share_of_the_contract() {
        let mut l = Lane::new(20);
        // Alone on the contract: every id is ours.
        for id in 100..110 {
            l.observe_seq(id);
        }
        assert_eq!(l.seq.share(), Some(1.0));
        // One of fifty: each of our answers is fifty ids after the last; an answer that
        // arrives after a later one is ignored.
        let mut l = Lane::new(20);
        for k in 0..10u64 {
            l.observe_seq(1_000 + 50 * k);
        }
        l.observe_seq(1_010);
        let share = l.seq.share().unwrap();
        assert!((share - 0.02).abs() < 1e-9, "{share}");
        // Too few answers say nothing.
        let mut l = Lane::new(20);
        l.observe_seq(5);
        l.observe_seq(9);
        assert_eq!(l.seq.share(), None);
    }

    #[test]
    fn an_idle_lane_that_knows_its_share_restarts_there_without_slow_start() {
        let t0 = Instant::now();
        let mut l = Lane::new(20);
        for k in 0..10u64 {
            l.observe_seq(1_000 + 50 * k);
        }
        assert!(
            l.try_take(Priority::Push, t0 + Duration::from_secs(12))
                .is_ok()
        );
        assert!((l.rate - 0.4).abs() < 1e-9, "{}", l.rate);
        assert!(!l.slow_start);
        // A lone store's share (1.0) restarts at the restart rate, in slow start, as before.
        let mut l = Lane::new(20);
        for id in 1..10 {
            l.observe_seq(id);
        }
        assert!(
            l.try_take(Priority::Push, t0 + Duration::from_secs(12))
                .is_ok()
        );
        assert_eq!((l.rate, l.slow_start), (IDLE_RESTART, true));
    }

    /// `cargo test --lib chain_model_frontier -- --ignored --nocapture`: the drain at 5, 20
    /// and 50 stores (throughput, fairness, 429 share), three seeds each.
    #[test]
    #[ignore]
    fn chain_model_frontier() {
        println!("| stores | backlog each | throughput × limit | Jain | 429s of writes | window |");
        println!("|---|---|---|---|---|---|");
        let rows = [(5, 240), (20, 120), (50, 60)]
            .into_iter()
            .flat_map(|(n, b)| {
                [(1, Mode::Blind), (2, Mode::Blind)]
                    .into_iter()
                    .chain((1..=3).map(|seed| (seed, Mode::Share)))
                    .map(move |(seed, m)| (n, b, seed, m))
            });
        let fixed = [0.3, 0.34, 0.38].map(|r| (50, 60, 1, Mode::Fixed(r)));
        for (n, backlog, seed, mode) in rows.chain(fixed) {
            let o = drain(n, backlog, 20, seed, mode);
            let how = match mode {
                Mode::Blind => "restart blind".to_string(),
                Mode::Share => "restart at share".to_string(),
                Mode::Fixed(r) => format!("fixed {r}/s each"),
            };
            println!(
                "| {n}, {how} | {backlog} | {:.3} | {:.3} | {:.1}% | {:.0} s |",
                o.throughput,
                o.fairness,
                o.share_429 * 100.0,
                o.window_s
            );
        }
    }
}
