//! Enrollment on the controller: the rule that decides a request ([`decide`], pure) and the
//! transaction that applies it ([`enroll`]). A device id is bound to the first key accepted for
//! it; another key for an enrolled id is refused until an operator revokes or resets the
//! device, and a revoked or rejected key is never accepted again.

use super::records::{EnrollTokenRecord, IdentityRecord};
use super::Trust;
use crate::db::{Db, DbError, EnrollWrite};
use fleet_schema::trust::enroll::{accept, EnrollRequest, EnrollResponse, EnrollState};
use fleet_schema::trust::keys::{constant_time_eq, new_secret_hex, secret_hash};
use fleet_schema::trust::tokens::EnrollmentState;
use fleet_schema::trust::Credential;
use fleet_schema::UnixMillis;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Default bound on devices waiting for an operator.
pub const DEFAULT_MAX_PENDING: usize = 1000;

/// The enrollment token as checked against its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// No token was presented.
    Absent,
    /// A usable token.
    Valid(EnrollTokenRecord),
    /// A token that cannot enroll: unknown, wrong secret, revoked, expired, used up.
    Invalid(String),
}

/// What the request asks, with the facts the rule needs.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Id of the key in the request.
    pub key_id: String,
    /// The request's time.
    pub at: UnixMillis,
    /// The token.
    pub token: TokenCheck,
    /// `--insecure`: requests without a token are accepted at once.
    pub insecure: bool,
    /// No room for another pending request.
    pub pending_full: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Enroll (or re-enroll the same key) now: issue credentials.
    Issue {
        /// The token to consume a use of (a new enrollment with a token).
        consume: Option<EnrollTokenRecord>,
    },
    /// Keep (or record) the request for an operator.
    Pending,
    /// Refuse with an HTTP status and a message for the device's log.
    Refuse(u16, String),
}

/// Decides an enrollment request given the device's current identity (pure).
pub fn decide(current: Option<&IdentityRecord>, ask: &Ask) -> Verdict {
    if let TokenCheck::Invalid(why) = &ask.token {
        return Verdict::Refuse(401, why.clone());
    }
    let with_token = match &ask.token {
        TokenCheck::Valid(t) => Some(t.clone()),
        _ => None,
    };
    let new_device = |refused_keys: &[String]| -> Verdict {
        if refused_keys.contains(&ask.key_id) {
            return Verdict::Refuse(
                403,
                format!(
                    "key {} of this device was revoked or rejected by an operator",
                    ask.key_id
                ),
            );
        }
        match &with_token {
            Some(t) => Verdict::Issue {
                consume: Some(t.clone()),
            },
            None if ask.insecure => Verdict::Issue { consume: None },
            None if ask.pending_full => Verdict::Refuse(
                429,
                "too many enrollment requests are waiting for an operator; try again later".into(),
            ),
            None => Verdict::Pending,
        }
    };
    let Some(cur) = current else {
        return new_device(&[]);
    };
    if cur.key_id != ask.key_id {
        return match cur.state {
            EnrollmentState::Accepted => Verdict::Refuse(
                409,
                format!(
                    "device {} is enrolled with another key ({}); an operator must revoke or reset it first (fleetctl device revoke|reset {})",
                    cur.device_id, cur.key_id, cur.device_id
                ),
            ),
            EnrollmentState::Pending => Verdict::Refuse(
                409,
                format!(
                    "device {} has a pending request with another key ({}); an operator must reject it first",
                    cur.device_id, cur.key_id
                ),
            ),
            EnrollmentState::Rejected | EnrollmentState::Revoked => new_device(&cur.refused_keys),
        };
    }
    if ask.at <= cur.last_request_at {
        return Verdict::Refuse(
            409,
            format!(
                "request time {} is not newer than the last request of this key ({}): a replay, or a device clock that went back",
                ask.at, cur.last_request_at
            ),
        );
    }
    match cur.state {
        // Re-enrollment of the same key (credentials lost, or rotated): no token needed.
        EnrollmentState::Accepted => Verdict::Issue { consume: None },
        EnrollmentState::Pending => match &with_token {
            Some(t) => Verdict::Issue {
                consume: Some(t.clone()),
            },
            None if ask.insecure => Verdict::Issue { consume: None },
            None => Verdict::Pending,
        },
        EnrollmentState::Rejected => Verdict::Refuse(
            403,
            "this device's enrollment was rejected by an operator".into(),
        ),
        EnrollmentState::Revoked => {
            Verdict::Refuse(403, "this device was revoked by an operator".into())
        }
    }
}

/// A refused enrollment: status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// Why.
    pub message: String,
}

/// Checks the presented token (if any) against its record.
fn check_token(
    presented: Option<&Credential>,
    record: Option<EnrollTokenRecord>,
    now: UnixMillis,
) -> TokenCheck {
    let Some(Credential::Enroll { id, secret }) = presented else {
        return TokenCheck::Absent;
    };
    let unknown = || TokenCheck::Invalid(format!("enrollment token {id} is not known"));
    let Some(rec) = record else {
        return unknown();
    };
    if !constant_time_eq(secret_hash(secret).as_bytes(), rec.hash.as_bytes()) {
        return unknown();
    }
    match rec.unusable(now) {
        Some(why) => TokenCheck::Invalid(format!("{why} ({id})")),
        None => TokenCheck::Valid(rec),
    }
}

/// What an enrollment transaction produced.
enum Outcome {
    Answer(Box<(EnrollResponse, Option<IdentityRecord>)>),
    Refused(Refused),
}

/// Handles one enrollment request: verifies it, decides, commits, updates the registry.
pub async fn enroll(
    db: &Db,
    trust: &Arc<Trust>,
    bearer: Option<&str>,
    req: EnrollRequest,
    max_pending: usize,
) -> Result<EnrollResponse, Refused> {
    let refused = |status, message: String| Refused { status, message };
    let (device, key) = req.verify().map_err(|e| refused(400, e.to_string()))?;
    let presented = match bearer {
        Some(b) => match Credential::parse(b) {
            Ok(c @ Credential::Enroll { .. }) => Some(c),
            Ok(_) | Err(_) => {
                return Err(refused(
                    401,
                    "the bearer token of an enrollment must be an enrollment token (enroll_<id>_<secret>)".into(),
                ))
            }
        },
        None => None,
    };
    let token_id = match &presented {
        Some(Credential::Enroll { id, .. }) => Some(id.clone()),
        _ => None,
    };
    let insecure = trust.insecure();
    let pending_full = trust.pending_count() >= max_pending;
    let trust2 = trust.clone();
    let id = device.to_string();
    let outcome = db
        .call(move |db| {
            db.enroll_txn(&id, token_id.as_deref(), |current, token_rec| {
                let now = crate::clock::now_ms();
                let ask = Ask {
                    key_id: key.id.clone(),
                    at: req.at,
                    token: check_token(presented.as_ref(), token_rec, now),
                    insecure,
                    pending_full,
                };
                apply(&trust2, current, &req, &ask, now)
            })
        })
        .await
        .map_err(|e| refused(500, format!("enrollment failed: {e}")))?;
    match outcome {
        Outcome::Answer(answer) => {
            let (resp, rec) = *answer;
            if let Some(rec) = rec {
                trust.identity_changed(&rec.device_id, Some(&rec));
                tracing::info!(device = %rec.device_id, key_id = %rec.key_id, state = rec.state.as_str(), token = ?rec.token_id, "enrollment");
            }
            Ok(resp)
        }
        Outcome::Refused(r) => {
            tracing::warn!(device = %device, status = r.status, reason = %r.message, "enrollment refused");
            Err(r)
        }
    }
}

fn apply(
    trust: &Trust,
    current: Option<IdentityRecord>,
    req: &EnrollRequest,
    ask: &Ask,
    now: UnixMillis,
) -> Result<(EnrollWrite, Outcome), DbError> {
    let verdict = decide(current.as_ref(), ask);
    let refused_keys = current
        .as_ref()
        .map(|c| c.refused_keys.clone())
        .unwrap_or_default();
    let same_key = current.as_ref().is_some_and(|c| c.key_id == ask.key_id);
    let base = |state| IdentityRecord {
        device_id: req.device_id.clone(),
        state,
        public_key: req.public_key.clone(),
        key_id: ask.key_id.clone(),
        at: now,
        last_request_at: req.at,
        bus_key: None,
        password_hash: None,
        mosquitto_hash: None,
        token_id: None,
        labels: BTreeMap::new(),
        agent_version: req.agent_version.clone(),
        inventory: req.inventory.clone(),
        refused_keys: refused_keys.clone(),
    };
    match verdict {
        Verdict::Refuse(status, message) => Ok((
            EnrollWrite::default(),
            Outcome::Refused(Refused { status, message }),
        )),
        Verdict::Pending => {
            let mut rec = base(EnrollmentState::Pending);
            if let Some(cur) = current.filter(|_| same_key) {
                rec.at = cur.at;
            }
            let resp = EnrollResponse {
                state: EnrollState::Pending,
                message: format!(
                    "waiting for an operator to accept device {} (key {}): fleetctl device accept {}",
                    req.device_id, ask.key_id, req.device_id
                ),
                device_id: req.device_id.clone(),
                controller_key: None,
                exchange_key: None,
                credentials: None,
                mqtt_username: None,
                signature: None,
            };
            Ok((
                EnrollWrite {
                    identity: Some(rec.clone()),
                    token: None,
                },
                Outcome::Answer(Box::new((resp, Some(rec)))),
            ))
        }
        Verdict::Issue { consume } => {
            let internal = |e: String| DbError::Encode(e);
            let password = new_secret_hex().map_err(|e| internal(e.to_string()))?;
            let issued = accept(req, trust.key(), &req.device_id, &password)
                .map_err(|e| internal(e.to_string()))?;
            let mut rec = base(EnrollmentState::Accepted);
            // A re-enrollment keeps what the first enrollment gave.
            if let Some(cur) = current.filter(|_| same_key) {
                rec.token_id = cur.token_id;
                rec.labels = cur.labels;
            }
            rec.bus_key = Some(issued.bus_key.to_hex());
            rec.password_hash = Some(secret_hash(&password));
            rec.mosquitto_hash = Some(
                super::mosquitto::hash_password(&password).map_err(|e| internal(e.to_string()))?,
            );
            let token = consume.map(|mut t| {
                rec.token_id = Some(t.id.clone());
                rec.labels = t.labels.clone();
                t.used += 1;
                t.uses_left = t.uses_left.map(|n| n.saturating_sub(1));
                t
            });
            Ok((
                EnrollWrite {
                    identity: Some(rec.clone()),
                    token,
                },
                Outcome::Answer(Box::new((issued.response, Some(rec)))),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: EnrollmentState, key: &str) -> IdentityRecord {
        IdentityRecord {
            device_id: "d1".into(),
            state,
            public_key: String::new(),
            key_id: key.into(),
            at: 1,
            last_request_at: 10,
            bus_key: None,
            password_hash: None,
            mosquitto_hash: None,
            token_id: None,
            labels: BTreeMap::new(),
            agent_version: String::new(),
            inventory: Default::default(),
            refused_keys: vec!["old".into()],
        }
    }

    fn token() -> EnrollTokenRecord {
        EnrollTokenRecord {
            id: "t1".into(),
            name: String::new(),
            labels: BTreeMap::new(),
            created_at: 0,
            expires_at: None,
            uses_left: Some(1),
            used: 0,
            revoked: false,
            hash: String::new(),
        }
    }

    fn ask(key: &str, at: u64, token: TokenCheck) -> Ask {
        Ask {
            key_id: key.into(),
            at,
            token,
            insecure: false,
            pending_full: false,
        }
    }

    #[test]
    fn new_devices_enroll_with_a_token_or_wait_for_an_operator() {
        assert_eq!(
            decide(None, &ask("k", 11, TokenCheck::Valid(token()))),
            Verdict::Issue {
                consume: Some(token())
            }
        );
        assert_eq!(
            decide(None, &ask("k", 11, TokenCheck::Absent)),
            Verdict::Pending
        );
        let mut lab = ask("k", 11, TokenCheck::Absent);
        lab.insecure = true;
        assert_eq!(decide(None, &lab), Verdict::Issue { consume: None });
        let mut full = ask("k", 11, TokenCheck::Absent);
        full.pending_full = true;
        assert!(matches!(decide(None, &full), Verdict::Refuse(429, _)));
        assert!(matches!(
            decide(None, &ask("k", 11, TokenCheck::Invalid("expired".into()))),
            Verdict::Refuse(401, m) if m == "expired"
        ));
    }

    #[test]
    fn an_enrolled_id_keeps_its_key_until_revoked() {
        let cur = record(EnrollmentState::Accepted, "k");
        assert!(matches!(
            decide(Some(&cur), &ask("other", 11, TokenCheck::Valid(token()))),
            Verdict::Refuse(409, m) if m.contains("revoke or reset")
        ));
        assert_eq!(
            decide(Some(&cur), &ask("k", 11, TokenCheck::Absent)),
            Verdict::Issue { consume: None },
            "the same key re-enrolls without a token"
        );
        assert!(matches!(
            decide(Some(&cur), &ask("k", 10, TokenCheck::Absent)),
            Verdict::Refuse(409, m) if m.contains("replay")
        ));
        let revoked = record(EnrollmentState::Revoked, "k");
        assert!(matches!(
            decide(Some(&revoked), &ask("k", 11, TokenCheck::Valid(token()))),
            Verdict::Refuse(403, _)
        ));
        assert_eq!(
            decide(Some(&revoked), &ask("new", 11, TokenCheck::Valid(token()))),
            Verdict::Issue {
                consume: Some(token())
            },
            "a new key after a revoke enrolls with a token"
        );
        assert!(matches!(
            decide(Some(&revoked), &ask("old", 11, TokenCheck::Valid(token()))),
            Verdict::Refuse(403, _)
        ));
        let pending = record(EnrollmentState::Pending, "k");
        assert_eq!(
            decide(Some(&pending), &ask("k", 11, TokenCheck::Absent)),
            Verdict::Pending
        );
        assert!(matches!(
            decide(Some(&pending), &ask("x", 11, TokenCheck::Absent)),
            Verdict::Refuse(409, _)
        ));
    }

    #[test]
    fn tokens_are_checked_against_their_record() {
        let secret = "a".repeat(64);
        let mut rec = token();
        rec.hash = secret_hash(&secret);
        let good = Credential::Enroll {
            id: "t1".into(),
            secret: secret.clone(),
        };
        assert!(matches!(
            check_token(Some(&good), Some(rec.clone()), 0),
            TokenCheck::Valid(_)
        ));
        let bad = Credential::Enroll {
            id: "t1".into(),
            secret: "b".repeat(64),
        };
        assert!(
            matches!(check_token(Some(&bad), Some(rec.clone()), 0), TokenCheck::Invalid(m) if m.contains("not known"))
        );
        rec.uses_left = Some(0);
        assert!(
            matches!(check_token(Some(&good), Some(rec.clone()), 0), TokenCheck::Invalid(m) if m.contains("no uses left"))
        );
        rec.uses_left = None;
        rec.expires_at = Some(5);
        assert!(
            matches!(check_token(Some(&good), Some(rec), 5), TokenCheck::Invalid(m) if m.contains("expired"))
        );
        assert_eq!(check_token(None, None, 0), TokenCheck::Absent);
    }
}
