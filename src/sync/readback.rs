//! The exactly-once verdict for a send whose answer was lost (DESIGN.md §2.2), as a pure
//! function of the evidence, so every case is a row of the table test below.
//!
//! Smaregi stamps `updDateTime` in whole seconds, so a change in the same second as the one
//! before it does not move the stamp: the balance is the evidence that matters. Where the
//! balance alone cannot decide (another writer may have changed the customer too), the
//! customer's transactions listed since the state the send started from decide — with the
//! ones this agent already knows to be its own left out. The list is taken as complete: every
//! change to a member's points is a transaction (divisions 1, 6, 7, 8; DESIGN.md §4).
//!
//! The key fact: if our send was applied, the list shows at least our own transaction, and
//! the balance moved by exactly our delta unless some other transaction also moved it. So:
//! - balance moved by exactly the delta, and at most one unknown transaction: ours was
//!   applied (unless another writer changed it by exactly the same amount while ours did not
//!   land — possible, so the evidence says so);
//! - balance not moved (or moved otherwise) and at most one unknown transaction: if ours had
//!   been applied the balance would show exactly our delta, so it was not: resend — except a
//!   balance that moved with nothing listed, which says the list is incomplete;
//! - several unknown transactions: some sum of them explains the balance either way: a person
//!   decides.

use serde::Serialize;

/// How the balance read back compares with the balance the send started from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceMove {
    /// read back = before + delta
    ByDelta,
    /// read back = before
    NotMoved,
    /// anything else: another writer surely changed it
    Otherwise,
}

/// Whether the upstream's last-change stamp moved (whole seconds: it may not within a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StampMove {
    Moved,
    Same,
}

/// The customer's transactions since the send's starting state, without the ones known to be
/// this agent's own earlier sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Feed {
    /// The list cannot be read (no `pos.transactions:read` scope, no starting stamp, a
    /// window over 31 days): the balance and the stamp are all there is.
    #[default]
    Unavailable,
    /// This many unknown transactions.
    Unknown(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The send was applied. `coincidence_possible`: another writer changing the balance by
    /// exactly the same amount while ours did not land would look the same.
    Applied {
        coincidence_possible: bool,
        why: &'static str,
    },
    /// The send was not applied: safe to send again.
    NotApplied { why: &'static str },
    /// The evidence cannot tell; a person decides.
    NeedsReview { why: &'static str },
}

/// The read-back rule. `before`/`read_back` are balances; `delta` is the send's signed change.
pub fn verdict(before: i64, delta: i64, read_back: i64, stamp: StampMove, feed: Feed) -> Verdict {
    use Verdict::*;
    if delta == 0 {
        return NeedsReview {
            why: "a zero change cannot be told apart from no change",
        };
    }
    let moved = if read_back == before + delta {
        BalanceMove::ByDelta
    } else if read_back == before {
        BalanceMove::NotMoved
    } else {
        BalanceMove::Otherwise
    };
    match (moved, feed) {
        (BalanceMove::ByDelta, Feed::Unknown(0)) => Applied {
            coincidence_possible: false,
            why: "the balance moved by exactly the delta and no other transaction is listed",
        },
        (BalanceMove::ByDelta, Feed::Unknown(1)) => Applied {
            coincidence_possible: true,
            why: "the balance moved by exactly the delta and one transaction is listed: ours, \
                  unless another writer changed it by the same amount while ours did not land",
        },
        (BalanceMove::ByDelta, Feed::Unavailable) => Applied {
            coincidence_possible: true,
            why: "the balance moved by exactly the delta (no transaction list to rule out \
                  another writer changing it by the same amount)",
        },
        (BalanceMove::ByDelta, Feed::Unknown(_)) => NeedsReview {
            why: "the balance moved by exactly the delta, but several other transactions are \
                  listed: they may have netted out with ours applied, or summed to the delta \
                  without it",
        },
        (BalanceMove::NotMoved, Feed::Unknown(0)) => NotApplied {
            why: "no transaction is listed since the send started: it did not land",
        },
        (BalanceMove::Otherwise, Feed::Unknown(0)) => NeedsReview {
            why: "the balance changed but no transaction is listed: the list is incomplete \
                  (an absolute set by another app?) and cannot rule ours in or out",
        },
        (BalanceMove::NotMoved | BalanceMove::Otherwise, Feed::Unknown(1)) => NotApplied {
            why: "one transaction is listed, and had it been ours the balance would have moved \
                  by exactly the delta: it is another writer's",
        },
        (BalanceMove::NotMoved | BalanceMove::Otherwise, Feed::Unknown(_)) => NeedsReview {
            why: "several transactions are listed: ours may be among them, offset by others",
        },
        (BalanceMove::NotMoved, Feed::Unavailable) => match stamp {
            StampMove::Same => NotApplied {
                why: "the balance and its stamp are as before (no transaction list: only an \
                      exactly offsetting change in the same second could hide ours)",
            },
            StampMove::Moved => NeedsReview {
                why: "the balance is as before but its stamp moved, and there is no transaction \
                      list to tell whether ours landed and was offset",
            },
        },
        (BalanceMove::Otherwise, Feed::Unavailable) => NeedsReview {
            why: "another writer changed the balance and there is no transaction list to tell \
                  whether ours landed too",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Feed::{Unavailable, Unknown};
    use super::StampMove::{Moved, Same};
    use super::*;

    #[derive(Debug, PartialEq)]
    enum V {
        Applied,
        AppliedNoted,
        Resend,
        Review,
    }

    fn short(v: Verdict) -> V {
        match v {
            Verdict::Applied {
                coincidence_possible: false,
                ..
            } => V::Applied,
            Verdict::Applied { .. } => V::AppliedNoted,
            Verdict::NotApplied { .. } => V::Resend,
            Verdict::NeedsReview { .. } => V::Review,
        }
    }

    /// Every combination of balance (moved by exactly the delta / not moved / moved
    /// otherwise) × stamp (moved / same second) × transactions since the send (unavailable /
    /// none / one / several), with the verdict and why. before = 100, delta = +30.
    #[test]
    fn verdict_table() {
        use V::*;
        #[rustfmt::skip]
        let rows: &[(i64, StampMove, Feed, V, &str)] = &[
            // Balance moved by exactly the delta.
            (130, Moved, Unknown(0), Applied, "only ours can have moved it; the list has not shown it yet"),
            (130, Same,  Unknown(0), Applied, "same second as the change before: whole-second stamps"),
            (130, Moved, Unknown(1), AppliedNoted, "the one transaction is ours, or a same-amount coincidence"),
            (130, Same,  Unknown(1), AppliedNoted, "the single-store case of the issue: same second, ours listed"),
            (130, Moved, Unknown(3), Review, "ours + others netting to 0, or others summing to +30"),
            (130, Same,  Unknown(2), Review, "as above, within one second"),
            (130, Moved, Unavailable, AppliedNoted, "the balance is the evidence; coincidence noted"),
            (130, Same,  Unavailable, AppliedNoted, "the stamp may not move within a second"),
            // Balance not moved.
            (100, Moved, Unknown(0), Resend, "nothing listed: the stamp moved for a directory edit"),
            (100, Same,  Unknown(0), Resend, "nothing happened"),
            (100, Moved, Unknown(1), Resend, "one foreign change that left the balance (e.g. a sale earning 0)"),
            (100, Same,  Unknown(1), Resend, "ours alone would have moved it by +30"),
            (100, Moved, Unknown(2), Review, "ours +30 and another -30 would look the same"),
            (100, Same,  Unknown(4), Review, "as above, within one second"),
            (100, Same,  Unavailable, Resend, "the rule without a list: balance and stamp as before"),
            (100, Moved, Unavailable, Review, "something changed; cannot tell what"),
            // Balance moved otherwise: another writer surely changed it.
            (150, Moved, Unknown(0), Review, "a change with no transaction: the list is incomplete"),
            (150, Same,  Unknown(0), Review, "as above"),
            (150, Moved, Unknown(1), Resend, "one foreign change of +50 explains it all"),
            (150, Same,  Unknown(1), Resend, "as above, in the same second"),
            (150, Moved, Unknown(2), Review, "ours +30 and another +20, or another +50 and one of 0"),
            (150, Same,  Unknown(2), Review, "as above"),
            (150, Moved, Unavailable, Review, "another writer, no list"),
            (150, Same,  Unavailable, Review, "another writer, no list"),
        ];
        for (read_back, stamp, feed, want, why) in rows {
            let got = short(verdict(100, 30, *read_back, *stamp, *feed));
            assert_eq!(
                &got, want,
                "read back {read_back}, stamp {stamp:?}, {feed:?}: {why}"
            );
        }
        // Negative deltas follow the same rule.
        assert_eq!(short(verdict(100, -30, 70, Same, Unknown(1))), AppliedNoted);
        assert_eq!(short(verdict(100, -30, 100, Same, Unknown(1))), Resend);
        assert_eq!(short(verdict(100, 0, 100, Same, Unknown(0))), Review);
    }
}
