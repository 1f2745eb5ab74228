//! The write-through wait: a write registers interest in its transaction before the row
//! exists (so a fast push cannot settle it unseen), waits a short budget for the push worker
//! to settle it, and must always unregister. `Watch` makes the last step impossible to forget:
//! dropping it unwatches, on every path out of the handler (errors, replays, refusals).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::ledger::State;
use crate::sync::SyncEngine;

/// Interest in one transaction's settlement; unwatched when dropped.
pub(super) struct Watch {
    sync: Arc<SyncEngine>,
    txn_id: String,
    rx: Option<oneshot::Receiver<State>>,
}

impl Watch {
    pub(super) fn new(sync: &Arc<SyncEngine>, txn_id: &str) -> Watch {
        Watch {
            rx: Some(sync.watch(txn_id)),
            sync: sync.clone(),
            txn_id: txn_id.to_string(),
        }
    }

    /// Waits at most `budget` for the transaction to settle (the state it reached, if any).
    pub(super) async fn settled_within(mut self, budget: Duration) -> Option<State> {
        let rx = self.rx.take()?;
        tokio::time::timeout(budget, rx).await.ok()?.ok()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.sync.unwatch(&self.txn_id);
    }
}
