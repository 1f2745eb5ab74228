//! The register's caps (least privilege): every grant a register token causes is bounded, by
//! points (`api.register_max_earn_points`, whether the points are given or derived from an
//! amount by the earn rule) and by amount (`api.register_max_sale_amount`). Past either a
//! register gets 403 `forbidden_for_role` naming the key, before anything is written; a
//! manager may go past them (within the 10,000,000-point bound every delta keeps), and such a
//! grant is logged at WARN with the token's name so an unusual grant leaves a trace.

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::config::Role;

pub(super) const MAX_EARN_KEY: &str = "api.register_max_earn_points";
pub(super) const MAX_AMOUNT_KEY: &str = "api.register_max_sale_amount";

/// `points` granted by `what` (e.g. "one earn"): refused for a register past its cap.
pub(super) fn check_grant(
    st: &AppState,
    caller: &Caller,
    points: i64,
    what: &str,
) -> Result<(), ApiError> {
    let cap = st.settings.config.api.register_max_earn_points;
    if points <= cap {
        return Ok(());
    }
    match caller.role {
        Role::Register => Err(ApiError::RegisterCap {
            key: MAX_EARN_KEY,
            detail: format!(
                "A register token may grant at most {cap} points in {what} ({MAX_EARN_KEY}); this would grant {points}. Ask a manager, or use a manager token."
            ),
        }),
        Role::Manager => {
            warn_manager_grant(st, caller, points, what);
            Ok(())
        }
    }
}

/// A manager's grant past the register's cap, logged at WARN with the token's name (a
/// register's was refused before it was written).
pub(super) fn warn_manager_grant(st: &AppState, caller: &Caller, points: i64, what: &str) {
    let cap = st.settings.config.api.register_max_earn_points;
    if caller.role == Role::Manager && points > cap {
        tracing::warn!(token = %caller.name, points, cap, what, "a manager token granted more points than a register may ({MAX_EARN_KEY})");
    }
}

/// An amount in yen (`field`) a grant is computed from: refused for a register past its cap.
pub(super) fn check_amount(
    st: &AppState,
    caller: &Caller,
    amount: i64,
    field: &str,
) -> Result<(), ApiError> {
    let cap = st.settings.config.api.register_max_sale_amount;
    if amount <= cap {
        return Ok(());
    }
    match caller.role {
        Role::Register => Err(ApiError::RegisterCap {
            key: MAX_AMOUNT_KEY,
            detail: format!(
                "A register token may give at most {cap} yen as {field} ({MAX_AMOUNT_KEY}); this gives {amount}. Ask a manager, or use a manager token."
            ),
        }),
        Role::Manager => {
            tracing::warn!(token = %caller.name, amount, cap, field, "a manager token gave a larger amount than a register may ({MAX_AMOUNT_KEY})");
            Ok(())
        }
    }
}
