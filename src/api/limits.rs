//! Requests in progress, counted per key (a token's name, a client address): past a key's cap
//! a new request is refused at once (429 `too_many_requests_in_progress`), so one device, or
//! one stolen token, cannot hold every request slot the daemon has.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts per key; a key with nothing in progress is forgotten (memory follows the load).
pub struct InProgress<K: Hash + Eq + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Default for InProgress<K> {
    fn default() -> Self {
        InProgress {
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K: Hash + Eq + Clone> InProgress<K> {
    /// A slot for `key` while the guard lives, or `None` when `cap` are in progress already.
    pub fn enter(&self, key: K, cap: usize) -> Option<Slot<K>> {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.counts.clone(),
            key,
        })
    }
}

/// One request in progress; its count goes down when dropped, on every path out.
pub struct Slot<K: Hash + Eq + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_cap_and_a_dropped_slot_frees_one() {
        let p = InProgress::default();
        let held: Vec<_> = (0..3).map(|_| p.enter("ipad", 3).unwrap()).collect();
        assert!(p.enter("ipad", 3).is_none());
        assert!(p.enter("till", 3).is_some(), "another key is unaffected");
        drop(held);
        assert!(p.enter("ipad", 3).is_some());
        assert!(
            p.counts.lock().unwrap().is_empty(),
            "idle keys are forgotten"
        );
    }
}
