//! The review queue: a person's decision on a transaction whose outcome could not be proven,
//! audited.

use super::*;

/// A person's decision on a transaction in the review queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// The upstream has it (checked by a person): count it as applied.
    Applied,
    /// The upstream does not have it: send it again.
    Resend,
    /// It must not count: drop it.
    Discard,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Applied => "applied",
            Resolution::Resend => "resend",
            Resolution::Discard => "discard",
        }
    }
}

#[derive(Debug)]
pub enum ResolveOutcome {
    Done { customer_id: String },
    NotFound,
    NotResolvable(State),
}

/// One audited review decision.
#[derive(Debug, Clone, Serialize)]
pub struct ResolutionRow {
    pub txn_id: String,
    pub from_state: String,
    pub action: String,
    pub resolved_by: String,
    pub note: String,
    pub at: i64,
}

impl Store {
    /// Applies a person's decision, with an audit row, in one transaction. Only
    /// `needs_review` rows take any decision; `rejected` rows may be resent or discarded.
    pub async fn resolve(
        &self,
        txn_id: &str,
        res: Resolution,
        by: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<ResolveOutcome, StoreError> {
        let (txn_id, by, note) = (txn_id.to_string(), by.to_string(), note.to_string());
        self.write(move |c| {
            let Some(t) = txn_by_id(c, &txn_id)? else {
                return Ok(ResolveOutcome::NotFound);
            };
            let allowed = matches!(
                (t.state, res),
                (State::NeedsReview, _)
                    | (State::Rejected, Resolution::Resend | Resolution::Discard)
            );
            if !allowed {
                return Ok(ResolveOutcome::NotResolvable(t.state));
            }
            let new_state = match res {
                Resolution::Applied => State::Applied,
                Resolution::Resend => State::Pending,
                Resolution::Discard => State::Discarded,
            };
            c.prepare_cached("UPDATE txns SET state = ?2, resolved_by = ?3, resolution_note = ?4, updated_at = ?5, \
                   next_attempt_at = ?5 WHERE seq = ?1")?.execute(params![t.seq, new_state.as_str(), by, note, now_ms])?;
            c.prepare_cached("INSERT INTO resolutions(txn_id, from_state, action, resolved_by, note, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![txn_id, t.state.as_str(), res.as_str(), by, note, now_ms])?;
            Ok(ResolveOutcome::Done {
                customer_id: t.customer_id,
            })
        })
        .await
    }

    pub async fn resolutions(&self, txn_id: &str) -> Result<Vec<ResolutionRow>, StoreError> {
        let id = txn_id.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT txn_id, from_state, action, resolved_by, note, at FROM resolutions \
                 WHERE txn_id = ?1 ORDER BY id",
            )?;
            st.query_map([id], |r| {
                Ok(ResolutionRow {
                    txn_id: r.get(0)?,
                    from_state: r.get(1)?,
                    action: r.get(2)?,
                    resolved_by: r.get(3)?,
                    note: r.get(4)?,
                    at: r.get(5)?,
                })
            })?
            .collect()
        })
        .await
    }
}
