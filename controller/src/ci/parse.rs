//! Reading one CI request (pure): JSON or CBOR, strict, with an answer address even for a
//! request that is refused, so the job waiting on its reply topic learns what was wrong.

use fleet_schema::ci::{validate_request_id, CiRequest, ANONYMOUS_OWNER, INVALID_ID};
use fleet_schema::trust::tokens::token_username;
use fleet_schema::trust::Credential;
use fleet_schema::DEFAULT_MAX_PAYLOAD;

/// How the request was encoded; the answers use the same encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON (what `mosquitto_pub -m` sends).
    Json,
    /// CBOR.
    Cbor,
}

/// Where the answers to a request go: `fleet/_ci/replies/<owner>/<id>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// `_token-<id>` of the request's token, or `_anonymous` without one.
    pub owner: String,
    /// The request id, or `_invalid` when it cannot be read.
    pub id: String,
}

/// A request that was read, or why not, always with its reply address when one can be derived.
#[derive(Debug)]
pub struct Parsed {
    /// The encoding to answer in.
    pub format: Format,
    /// The reply address; `None` when the payload names no token id at all and fleetd is not
    /// insecure (nowhere safe to answer: the refusal is only logged and counted).
    pub reply: Option<ReplyTo>,
    /// The request, or the error naming the field.
    pub request: Result<CiRequest, String>,
}

/// Reads a payload. `signer` is the token id of a signed request's topic (its answers go to
/// that token's replies); `insecure` lets a request without a token be answered as
/// `_anonymous`.
pub fn parse(payload: &[u8], signer: Option<&str>, insecure: bool) -> Parsed {
    let format = match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Format::Json,
        _ => Format::Cbor,
    };
    let fail = |reply, e: String| Parsed {
        format,
        reply,
        request: Err(e),
    };
    if payload.is_empty() {
        return fail(None, "request is empty".into());
    }
    if payload.len() > DEFAULT_MAX_PAYLOAD {
        return fail(
            None,
            format!(
                "request of {} bytes exceeds {DEFAULT_MAX_PAYLOAD}",
                payload.len()
            ),
        );
    }
    let value: serde_json::Value = match format {
        Format::Json => match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => return fail(None, format!("malformed JSON: {e}")),
        },
        Format::Cbor => {
            match fleet_schema::decode::<serde_json::Value>(payload, DEFAULT_MAX_PAYLOAD) {
                Ok(v) => v,
                Err(e) => {
                    return fail(
                        None,
                        format!("malformed CBOR (or JSON not starting with '{{'): {e}"),
                    )
                }
            }
        }
    };
    let reply = reply_to(&value, signer, insecure);
    let request = serde_json::from_value::<CiRequest>(value)
        .map_err(|e| format!("invalid request: {e}"))
        .and_then(|r| {
            validate_request_id(&r.id)?;
            Ok(r)
        });
    Parsed {
        format,
        reply,
        request,
    }
}

/// The reply address read leniently from a request that may be invalid: the token id is part of
/// the token string (not its secret), the id is used only when it follows the id rules.
fn reply_to(value: &serde_json::Value, signer: Option<&str>, insecure: bool) -> Option<ReplyTo> {
    let owner = match (signer, value.get("token").and_then(|t| t.as_str())) {
        (Some(id), _) => token_username(id),
        (None, Some(t)) => match Credential::parse(t) {
            Ok(Credential::Api { id, .. }) => token_username(&id),
            _ if insecure => ANONYMOUS_OWNER.to_string(),
            _ => return None,
        },
        (None, None) if insecure => ANONYMOUS_OWNER.to_string(),
        (None, None) => return None,
    };
    let id = value
        .get("id")
        .and_then(|i| i.as_str())
        .filter(|i| validate_request_id(i).is_ok())
        .unwrap_or(INVALID_ID)
        .to_string();
    Some(ReplyTo { owner, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str =
        "fleet_0123abcd_cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn json(extra: &str) -> String {
        format!(
            r#"{{"id":"b-1","token":"{TOKEN}","deployment":{{"application":"web","version":"1.0.0","target":{{"devices":["d1"]}}}}{extra}}}"#
        )
    }

    #[test]
    fn json_requests_parse_with_their_reply_address() {
        let p = parse(json("").as_bytes(), None, false);
        assert_eq!(p.format, Format::Json);
        let reply = p.reply.expect("reply");
        assert_eq!(
            (reply.owner.as_str(), reply.id.as_str()),
            ("_token-0123abcd", "b-1")
        );
        assert_eq!(p.request.expect("valid").deployment.application, "web");
    }

    #[test]
    fn cbor_requests_parse_too() {
        let v: serde_json::Value = serde_json::from_str(&json("")).expect("json");
        let cbor = fleet_schema::encode(&v).expect("cbor");
        let p = parse(&cbor, None, false);
        assert_eq!(p.format, Format::Cbor);
        assert!(p.request.is_ok());
    }

    #[test]
    fn errors_name_the_field_and_still_have_an_address() {
        let p = parse(json(r#","colour":"red""#).as_bytes(), None, false);
        assert!(p.reply.is_some());
        let err = p.request.expect_err("unknown field");
        assert!(err.contains("colour"), "{err}");
        let p = parse(
            format!(r#"{{"id":"a/b","token":"{TOKEN}","deployment":{{}}}}"#).as_bytes(),
            None,
            false,
        );
        assert_eq!(p.reply.expect("reply").id, INVALID_ID);
        let err = p.request.expect_err("bad");
        assert!(err.contains("application") || err.contains("id"), "{err}");
    }

    #[test]
    fn unreadable_requests_have_no_address_unless_insecure() {
        assert!(parse(b"{nope", None, false).reply.is_none());
        assert!(parse(b"", None, false).request.is_err());
        assert!(parse(br#"{"id":"x"}"#, None, false).reply.is_none());
        let p = parse(br#"{"id":"x"}"#, None, true);
        assert_eq!(p.reply.expect("reply").owner, ANONYMOUS_OWNER);
        let big = vec![b' '; DEFAULT_MAX_PAYLOAD + 1];
        assert!(parse(&big, None, true).request.is_err());
    }

    #[test]
    fn signed_requests_are_answered_to_the_signing_token() {
        let body = br#"{"id":"b-2","issued_at":1,"deployment":{"application":"web","version":"1.0.0","target":{"devices":["d1"]}}}"#;
        let p = parse(body, Some("89abcdef"), false);
        assert_eq!(p.reply.expect("reply").owner, "_token-89abcdef");
        assert!(p.request.is_ok());
    }
}
