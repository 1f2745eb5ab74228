//! The bounded in-memory window of snapshots not yet accepted by the receiver: oldest first,
//! trimmed by age (`telemetry.buffer_minutes`) and by a hard cap on samples, so an outage of any
//! length costs a fixed amount of memory. Nothing here touches the disk: telemetry must never
//! compete with the register's writes.

use std::collections::VecDeque;

use super::samples::Point;

/// At most this many samples are held, whatever the window (a few MB).
pub const MAX_SAMPLES: usize = 100_000;

pub struct Snapshot {
    /// When it was taken, ms since the epoch.
    pub at: i64,
    pub points: Vec<Point>,
}

pub struct Buffer {
    snapshots: VecDeque<Snapshot>,
    samples: usize,
    window_ms: i64,
    max_samples: usize,
}

impl Buffer {
    pub fn new(window_ms: i64, max_samples: usize) -> Buffer {
        Buffer {
            snapshots: VecDeque::new(),
            samples: 0,
            window_ms,
            max_samples,
        }
    }

    /// Adds a snapshot; returns how many samples were dropped to stay within the bounds.
    pub fn push(&mut self, s: Snapshot) -> usize {
        let now = s.at;
        self.samples += s.points.len();
        self.snapshots.push_back(s);
        let mut dropped = 0;
        while let Some(front) = self.snapshots.front() {
            let too_old = front.at < now - self.window_ms;
            let too_many = self.samples > self.max_samples && self.snapshots.len() > 1;
            if !(too_old || too_many) {
                break;
            }
            dropped += self.pop_front(1);
        }
        dropped
    }

    /// The oldest snapshots, as many as fit in `max_samples` (at least one).
    pub fn oldest(&self, max_samples: usize) -> impl Iterator<Item = &Snapshot> {
        let mut total = 0;
        self.snapshots
            .iter()
            .enumerate()
            .take_while(move |(i, s)| {
                total += s.points.len();
                *i == 0 || total <= max_samples
            })
            .map(|(_, s)| s)
    }

    /// Removes the `n` oldest snapshots; returns their sample count.
    pub fn pop_front(&mut self, n: usize) -> usize {
        let mut gone = 0;
        for _ in 0..n {
            match self.snapshots.pop_front() {
                Some(s) => gone += s.points.len(),
                None => break,
            }
        }
        self.samples -= gone;
        gone
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at: i64, n: usize) -> Snapshot {
        let points = (0..n)
            .map(|i| Point {
                labels: Vec::new(),
                value: i as f64,
            })
            .collect();
        Snapshot { at, points }
    }

    #[test]
    fn keeps_the_window_and_the_cap() {
        // (window ms, cap, snapshots (at, samples), buffered after, dropped in total)
        type Case = (i64, usize, &'static [(i64, usize)], usize, usize);
        let cases: &[Case] = &[
            (60_000, 100, &[(0, 10), (30_000, 10), (60_000, 10)], 30, 0),
            (60_000, 100, &[(0, 10), (30_000, 10), (61_000, 10)], 20, 10),
            (600_000, 25, &[(0, 10), (1, 10), (2, 10)], 20, 10),
            // One snapshot larger than the cap is still kept (and sent).
            (600_000, 5, &[(0, 10)], 10, 0),
        ];
        for (window, cap, pushes, left, dropped) in cases {
            let mut b = Buffer::new(*window, *cap);
            let d: usize = pushes.iter().map(|(at, n)| b.push(snap(*at, *n))).sum();
            assert_eq!((b.samples(), d), (*left, *dropped), "{pushes:?}");
        }
    }

    #[test]
    fn hands_out_oldest_first_within_a_size() {
        let mut b = Buffer::new(i64::MAX / 2, MAX_SAMPLES);
        for at in 0..5 {
            b.push(snap(at, 10));
        }
        let ats: Vec<i64> = b.oldest(25).map(|s| s.at).collect();
        assert_eq!(ats, vec![0, 1]);
        assert_eq!(b.oldest(1).count(), 1);
        assert_eq!(b.pop_front(2), 20);
        assert_eq!(b.oldest(1000).next().unwrap().at, 2);
        assert_eq!(b.samples(), 30);
    }
}
