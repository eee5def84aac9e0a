//! The enrollment client: one signed request to fleetd's `POST /api/v1/enroll` (with the
//! enrollment token as bearer when the device has one), and the reading of the answer. The
//! caller retries: a pending request is asked again until an operator decides, a refused one
//! only rarely (an operator may still reset the device).

use super::record::EnrollmentRecord;
use fleet_schema::api::ApiError;
use fleet_schema::signing::TrustedKey;
use fleet_schema::trust::enroll::{complete, EnrollRequest, EnrollResponse};
use fleet_schema::trust::SigningKey;
use fleet_schema::{DeviceId, Inventory};
use std::io::Read;
use std::sync::Arc;

/// Largest answer read from the enrollment endpoint.
const MAX_ANSWER: u64 = 256 * 1024;

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt {
    /// Enrolled: the record to save.
    Enrolled(EnrollmentRecord),
    /// Waiting for an operator; the controller's message.
    Pending(String),
    /// Refused (bad token, another key, revoked, rejected); the controller's reason.
    Refused(String),
    /// The controller could not be reached or answered nonsense; try again soon.
    Failed(String),
}

/// Who is asking, and how.
#[derive(Clone)]
pub struct Asker {
    /// fleetd's HTTP base URL.
    pub server: String,
    /// This device.
    pub device: DeviceId,
    /// Its key.
    pub key: Arc<SigningKey>,
    /// The enrollment token, if the device has one (a secret: never logged).
    pub token: Option<String>,
    /// The controller key pinned by an earlier enrollment (a re-enrollment must match it).
    pub pinned: Option<TrustedKey>,
    /// The `at` of the previous request, which this one must exceed.
    pub last_at: u64,
    /// Agent build version.
    pub agent_version: String,
}

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Asker({} at {}, token {})",
            self.device,
            self.server,
            if self.token.is_some() {
                "given"
            } else {
                "none"
            }
        )
    }
}

/// Makes one enrollment request (blocking).
pub fn attempt(a: &Asker, inventory: Inventory, now_ms: u64) -> Attempt {
    let at = now_ms.max(a.last_at + 1);
    let (req, exchange) =
        match EnrollRequest::new_signed(&a.device, &a.key, inventory, &a.agent_version, at) {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
    let url = format!("{}/api/v1/enroll", a.server.trim_end_matches('/'));
    let body = match serde_json::to_vec(&req) {
        Ok(b) => b,
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    let mut call = crate::http::client()
        .post(&url)
        .header("content-type", "application/json");
    if let Some(t) = &a.token {
        call = call.header("authorization", format!("Bearer {}", t.trim()));
    }
    let resp = match call.send(&body[..]) {
        Ok(r) => r,
        Err(e) => return Attempt::Failed(format!("cannot reach {url}: {e}")),
    };
    let status = resp.status().as_u16();
    let mut text = String::new();
    if let Err(e) = resp
        .into_body()
        .into_reader()
        .take(MAX_ANSWER)
        .read_to_string(&mut text)
    {
        return Attempt::Failed(format!("reading the answer of {url}: {e}"));
    }
    let error_text = || {
        serde_json::from_str::<ApiError>(&text)
            .map(|e| e.error)
            .unwrap_or_else(|_| text.trim().chars().take(300).collect())
    };
    match status {
        200 => {
            let resp: EnrollResponse = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => return Attempt::Failed(format!("malformed enrollment answer: {e}")),
            };
            match complete(&req, exchange, &resp, a.pinned.as_ref()) {
                Ok(enrolled) => {
                    let mut rec = EnrollmentRecord::from_enrolled(&enrolled, at);
                    rec.last_request_at = at;
                    Attempt::Enrolled(rec)
                }
                // A bad signature or another controller key is an attack or a misconfiguration,
                // not a network hiccup.
                Err(e) => Attempt::Refused(e.to_string()),
            }
        }
        202 => match serde_json::from_str::<EnrollResponse>(&text) {
            Ok(r) => Attempt::Pending(r.message),
            Err(_) => Attempt::Pending("waiting for an operator".into()),
        },
        400 | 401 | 403 | 404 | 409 => Attempt::Refused(format!("HTTP {status}: {}", error_text())),
        _ => Attempt::Failed(format!("HTTP {status} from {url}: {}", error_text())),
    }
}
