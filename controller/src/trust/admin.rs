//! An operator's decisions on a device's enrollment: accept or reject a pending request,
//! revoke an enrolled key (disconnected at once, refused from then on, never accepted again),
//! or reset the device (its binding is forgotten, so it may enroll anew).

use super::records::IdentityRecord;
use super::Trust;
use crate::db::{Db, DbError};
use fleet_schema::trust::tokens::EnrollmentState;

/// What an operator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Accept a pending request (the device gets its credentials at its next request).
    Accept,
    /// Reject a pending request.
    Reject,
    /// Revoke an enrolled (or pending) key.
    Revoke,
    /// Forget the device's binding.
    Reset,
}

impl Action {
    /// Parses the action of `POST /api/v1/devices/{id}/{action}`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "accept" => Some(Action::Accept),
            "reject" => Some(Action::Reject),
            "revoke" => Some(Action::Revoke),
            "reset" => Some(Action::Reset),
            _ => None,
        }
    }
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No enrollment for that device.
    #[error("device {0:?} has no enrollment")]
    NotFound(String),
    /// The action does not apply to the current state.
    #[error("device {device} is {state}; cannot {action}")]
    Conflict {
        /// Device.
        device: String,
        /// Its state.
        state: &'static str,
        /// The action.
        action: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The new record after `action` (pure); `Ok(None)` means forget the device.
pub fn transition(
    rec: &IdentityRecord,
    action: Action,
) -> Result<Option<IdentityRecord>, AdminError> {
    let conflict = |name| AdminError::Conflict {
        device: rec.device_id.clone(),
        state: rec.state.as_str(),
        action: name,
    };
    let mut next = rec.clone();
    match (action, rec.state) {
        (Action::Reset, _) => return Ok(None),
        (Action::Accept, EnrollmentState::Pending) => next.state = EnrollmentState::Accepted,
        (Action::Accept, _) => return Err(conflict("accept")),
        (Action::Reject, EnrollmentState::Pending) => next.state = EnrollmentState::Rejected,
        (Action::Reject, _) => return Err(conflict("reject")),
        (Action::Revoke, EnrollmentState::Accepted | EnrollmentState::Pending) => {
            next.state = EnrollmentState::Revoked
        }
        (Action::Revoke, _) => return Err(conflict("revoke")),
    }
    if matches!(
        next.state,
        EnrollmentState::Rejected | EnrollmentState::Revoked
    ) {
        if !next.refused_keys.contains(&next.key_id) {
            next.refused_keys.push(next.key_id.clone());
        }
        next.bus_key = None;
        next.password_hash = None;
        next.mosquitto_hash = None;
    }
    next.at = crate::clock::now_ms();
    Ok(Some(next))
}

/// What an operator's action changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The device's enrollment afterwards (`None` after a reset).
    pub record: Option<IdentityRecord>,
    /// Whether the device, online until now, was marked offline.
    pub went_offline: bool,
}

/// Applies an operator's action: commits it, updates the registry, and disconnects the device
/// when it may no longer be connected.
pub fn apply(db: &Db, trust: &Trust, device: &str, action: Action) -> Result<Applied, AdminError> {
    let rec = db
        .identity(device)?
        .ok_or_else(|| AdminError::NotFound(device.to_string()))?;
    let next = transition(&rec, action)?;
    match &next {
        Some(n) => db.put_identity(n)?,
        None => {
            db.delete_identity(device)?;
        }
    }
    trust.identity_changed(device, next.as_ref());
    let was_active = rec.is_active();
    let mut went_offline = false;
    if was_active && !next.as_ref().is_some_and(IdentityRecord::is_active) {
        went_offline = db.mark_offline(device)?;
        trust.request_kick(device);
    }
    tracing::info!(device, action = ?action, key_id = %rec.key_id, "device enrollment changed by an operator");
    Ok(Applied {
        record: next,
        went_offline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn rec(state: EnrollmentState) -> IdentityRecord {
        IdentityRecord {
            device_id: "d1".into(),
            state,
            public_key: String::new(),
            key_id: "k1".into(),
            at: 0,
            last_request_at: 0,
            bus_key: Some("00".into()),
            password_hash: Some("h".into()),
            mosquitto_hash: Some("m".into()),
            token_id: None,
            labels: BTreeMap::new(),
            agent_version: String::new(),
            inventory: Default::default(),
            refused_keys: vec![],
        }
    }

    #[test]
    fn transitions() {
        let accepted = transition(&rec(EnrollmentState::Pending), Action::Accept)
            .expect("ok")
            .expect("kept");
        assert_eq!(accepted.state, EnrollmentState::Accepted);
        let revoked = transition(&rec(EnrollmentState::Accepted), Action::Revoke)
            .expect("ok")
            .expect("kept");
        assert_eq!(revoked.state, EnrollmentState::Revoked);
        assert_eq!(revoked.refused_keys, ["k1"]);
        assert!(revoked.password_hash.is_none() && revoked.bus_key.is_none());
        assert!(transition(&rec(EnrollmentState::Accepted), Action::Accept).is_err());
        assert!(transition(&rec(EnrollmentState::Revoked), Action::Revoke).is_err());
        assert!(transition(&rec(EnrollmentState::Revoked), Action::Reset)
            .expect("ok")
            .is_none());
    }
}
