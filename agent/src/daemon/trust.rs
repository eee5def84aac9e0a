//! The daemon's side of the trust model: every message it acts on must be sealed by the
//! controller key it pinned at enrollment, for this very topic; desired states and requests
//! must also be addressed to this device's key and decrypt under its bus key; presence and
//! requests must be newer than the last ones accepted. Anything else is refused, logged,
//! counted, and shown in the device's status (`refused`). When the broker keeps refusing the
//! device's credentials, the agent asks to enroll again with the same key.

use super::Daemon;
use crate::bus::{now_millis, Credentials};
use crate::identity::enroll::{Asker, Attempt};
use crate::identity::record::EnrollmentRecord;
use fleet_schema::signing::TrustedKey;
use fleet_schema::trust::{open, OpenParams, Stamp};
use fleet_schema::{Refusal, DEFAULT_MAX_PAYLOAD};
use tokio::sync::watch;

/// The envelope may be a little larger than the message it carries.
const MAX_SEALED: usize = DEFAULT_MAX_PAYLOAD + 4096;

/// Least time between two re-enrollment attempts.
const REENROLL_EVERY_MS: u64 = 60_000;

/// How long fresh credentials may be refused before that counts: an external broker learns of
/// them only when fleetd has rewritten its password file and reloaded it.
const FRESH_CREDENTIALS_GRACE_MS: u64 = 10_000;

/// What the daemon trusts and what it refused.
pub(super) struct AgentTrust {
    /// The pinned controller key.
    pub(super) controller: TrustedKey,
    /// The bus key desired states and requests are encrypted with.
    pub(super) bus: fleet_schema::trust::BusKey,
    /// This device's key id (messages to it must be addressed to it).
    pub(super) me: String,
    /// Newest presence and request stamps accepted.
    presence: Option<Stamp>,
    requests: Option<Stamp>,
    /// The last refused message, for the status.
    pub(super) refused: Option<Refusal>,
    /// For re-enrollment: who asks, and where the record goes.
    pub(super) asker: Asker,
    pub(super) record: EnrollmentRecord,
    pub(super) creds: watch::Sender<Credentials>,
    reenroll_at: Option<u64>,
}

impl AgentTrust {
    /// The trust state from an enrollment record.
    pub(super) fn new(
        record: EnrollmentRecord,
        asker: Asker,
        creds: watch::Sender<Credentials>,
    ) -> Result<AgentTrust, String> {
        Ok(AgentTrust {
            controller: record.controller()?,
            bus: record.bus()?,
            me: asker.key.id().to_string(),
            presence: None,
            requests: None,
            refused: None,
            asker,
            record,
            creds,
            reenroll_at: None,
        })
    }
}

/// What a message must be to be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A desired state: addressed to us, encrypted.
    Desired,
    /// The controller's presence: signed, newer than the last.
    Presence,
    /// A request: addressed to us, newer than the last.
    Request,
}

impl Daemon {
    /// Verifies (and decrypts) a message on `topic`; returns its body, or refuses it.
    pub(super) fn open_sealed(
        &mut self,
        topic: &str,
        payload: &[u8],
        kind: Kind,
    ) -> Option<Vec<u8>> {
        let t = &self.trust;
        let addressed = matches!(kind, Kind::Desired | Kind::Request);
        let opened = match open(
            OpenParams {
                topic,
                signer: &t.controller,
                me: addressed.then_some(t.me.as_str()),
                decrypt: Some(&t.bus),
            },
            payload,
            MAX_SEALED,
        ) {
            Ok(o) => o,
            Err(e) => {
                self.refuse(topic, &e.to_string());
                return None;
            }
        };
        if kind == Kind::Desired && !opened.encrypted {
            self.refuse(topic, "desired state is not encrypted to this device");
            return None;
        }
        let last = match kind {
            Kind::Presence => &mut self.trust.presence,
            Kind::Request => &mut self.trust.requests,
            // Desired states are ordered by their generation.
            Kind::Desired => return Some(opened.body),
        };
        if last.is_some_and(|l| opened.stamp <= l) {
            self.refuse(topic, "replayed: not newer than the last message accepted");
            return None;
        }
        *last = Some(opened.stamp);
        Some(opened.body)
    }

    /// Records and logs a refused message; it shows in the next status.
    pub(super) fn refuse(&mut self, topic: &str, reason: &str) {
        self.rejected_payloads += 1;
        let count = self.rejected_payloads;
        if count <= 20 || count.is_multiple_of(1000) {
            tracing::warn!(%topic, rejected_total = count, "refused message: {reason}");
        }
        self.trust.refused = Some(Refusal {
            topic: topic.to_string(),
            reason: reason.to_string(),
            at: now_millis(),
            count,
        });
        self.publish_status();
    }

    /// The broker refused our credentials several times: ask fleetd to enroll this key again
    /// (at most once a minute, and not while the credentials are fresh); the answer comes back
    /// as [`super::Event::Reenrolled`].
    pub(super) fn reenroll(&mut self) {
        let now = now_millis();
        if !reenroll_due(
            now,
            self.trust.record.last_request_at,
            self.trust.reenroll_at,
        ) {
            return;
        }
        self.trust.reenroll_at = Some(now);
        let mut asker = self.trust.asker.clone();
        asker.last_at = asker.last_at.max(self.trust.record.last_request_at);
        tracing::warn!(
            "the broker keeps refusing this device's credentials; asking fleetd to enroll again"
        );
        self.exec.reenroll(asker, self.inventory.clone(), now);
    }

    /// Applies the answer of a re-enrollment.
    pub(super) fn on_reenrolled(&mut self, outcome: Attempt) {
        match outcome {
            Attempt::Enrolled(rec) => {
                if let Err(e) = self.exec.save_enrollment(&rec) {
                    tracing::error!(error = %e, "cannot save the new enrollment record");
                    return;
                }
                match (rec.controller(), rec.bus()) {
                    (Ok(c), Ok(b)) => {
                        self.trust.controller = c;
                        self.trust.bus = b;
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(error = %e, "new enrollment record is unusable");
                        return;
                    }
                }
                self.trust.asker.last_at = rec.last_request_at;
                let _ = self.trust.creds.send(Credentials {
                    username: rec.mqtt_username.clone(),
                    password: rec.mqtt_password.clone(),
                });
                self.trust.record = rec;
                tracing::info!("enrolled again; reconnecting with the new credentials");
            }
            Attempt::Pending(m) => tracing::warn!("re-enrollment pending: {m}"),
            Attempt::Refused(m) => tracing::error!("re-enrollment refused: {m}"),
            Attempt::Failed(m) => tracing::warn!("re-enrollment failed: {m}"),
        }
    }
}

/// Whether to ask for a re-enrollment at `now`: the credentials obtained at `enrolled_at` are
/// past their grace, and the last attempt (if any) is at least a minute old.
fn reenroll_due(now: u64, enrolled_at: u64, last_attempt: Option<u64>) -> bool {
    now >= enrolled_at.saturating_add(FRESH_CREDENTIALS_GRACE_MS)
        && last_attempt.is_none_or(|t| now >= t.saturating_add(REENROLL_EVERY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_credentials_get_a_grace_and_attempts_are_spaced() {
        let enrolled = 1_000_000;
        assert!(!reenroll_due(enrolled + 500, enrolled, None), "fresh");
        assert!(
            reenroll_due(enrolled + 10_000, enrolled, None),
            "past the grace"
        );
        let tried = enrolled + 20_000;
        assert!(!reenroll_due(tried + 59_999, enrolled, Some(tried)));
        assert!(reenroll_due(tried + 60_000, enrolled, Some(tried)));
    }
}
