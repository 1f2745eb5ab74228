//! Transaction kinds and the states a transaction moves through (DESIGN.md §3).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Earn,
    Redeem,
    Adjust,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Earn => "earn",
            Kind::Redeem => "redeem",
            Kind::Adjust => "adjust",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "earn" => Some(Kind::Earn),
            "redeem" => Some(Kind::Redeem),
            "adjust" => Some(Kind::Adjust),
            _ => None,
        }
    }
}

/// What an outbox row is: a register's earn, redeem or adjustment ([`Kind`], the only kinds
/// `POST /v1/transactions` takes), or the net delta of a sale or a return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxKind {
    Earn,
    Redeem,
    Adjust,
    Sale,
    Return,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Earn => "earn",
            OutboxKind::Redeem => "redeem",
            OutboxKind::Adjust => "adjust",
            OutboxKind::Sale => "sale",
            OutboxKind::Return => "return",
        }
    }
    pub fn parse(s: &str) -> Option<OutboxKind> {
        match s {
            "earn" => Some(OutboxKind::Earn),
            "redeem" => Some(OutboxKind::Redeem),
            "adjust" => Some(OutboxKind::Adjust),
            "sale" => Some(OutboxKind::Sale),
            "return" => Some(OutboxKind::Return),
            _ => None,
        }
    }
}

impl From<Kind> for OutboxKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Earn => OutboxKind::Earn,
            Kind::Redeem => OutboxKind::Redeem,
            Kind::Adjust => OutboxKind::Adjust,
        }
    }
}

impl std::fmt::Display for OutboxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a transaction is on its way upstream (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Committed locally, waiting (possibly in backoff) to be sent.
    Pending,
    /// A request to the upstream is (or was, at a crash) in flight.
    Sending,
    /// The request left but no answer came back; must be verified before any resend.
    Ambiguous,
    /// The upstream applied it; the confirmed balance includes it.
    Applied,
    /// The upstream refused it for good; it no longer counts.
    Rejected,
    /// Exactly-once could not be proven; a person must decide.
    NeedsReview,
    /// A person decided it must not be applied.
    Discarded,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Sending,
        State::Ambiguous,
        State::Applied,
        State::Rejected,
        State::NeedsReview,
        State::Discarded,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sending => "sending",
            State::Ambiguous => "ambiguous",
            State::Applied => "applied",
            State::Rejected => "rejected",
            State::NeedsReview => "needs_review",
            State::Discarded => "discarded",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
    /// Counted in the pending part of the balance: not yet confirmed, still expected to apply.
    pub fn is_unconfirmed(self) -> bool {
        matches!(self, State::Pending | State::Sending | State::Ambiguous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert!(State::Sending.is_unconfirmed());
        assert!(!State::NeedsReview.is_unconfirmed());
    }
}
