//! The API token fleetctl authenticates with (`--token` / `FLEET_TOKEN`), kept out of debug
//! output and error messages, and the hints shown when fleetd refuses a request for want of
//! credentials (401) or rights (403).

use anyhow::{bail, Result};
use fleet_schema::trust::tokens::ID_LEN;
use fleet_schema::trust::Credential;
use std::convert::Infallible;
use std::str::FromStr;

/// The token as given on the command line or in the environment. Parsing never fails (a clap
/// error would print the value); [`ApiToken::validated`] checks it without repeating it.
#[derive(Clone)]
pub struct ApiToken(String);

impl FromStr for ApiToken {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(ApiToken(s.trim().to_string()))
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// The token if it has the form of an API token (`fleet_<id>_<secret>`); the error names
    /// what is wrong without repeating the secret.
    pub fn validated(&self) -> Result<ApiToken> {
        match Credential::parse(&self.0) {
            Ok(Credential::Api { .. }) => Ok(self.clone()),
            Ok(Credential::Enroll { .. }) => bail!(
                "the token given with --token or FLEET_TOKEN is an enrollment token, which only \
                 devices use; fleetctl needs an API token (fleet_<id>_<secret>, from `fleetctl token create`)"
            ),
            Ok(Credential::Device { .. }) => bail!(
                "the token given with --token or FLEET_TOKEN is a device credential; fleetctl \
                 needs an API token (fleet_<id>_<secret>, from `fleetctl token create`)"
            ),
            Err(_) => bail!(
                "the token given with --token or FLEET_TOKEN is not a FleetD API token \
                 (expected fleet_<{ID_LEN} hex id>_<64 hex secret>)"
            ),
        }
    }

    /// The token's public id (safe to show).
    pub fn id(&self) -> &str {
        match Credential::parse(&self.0) {
            Ok(Credential::Api { .. }) => self.0.split('_').nth(1).unwrap_or("?"),
            _ => "?",
        }
    }

    /// The `Authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// What to tell the operator besides fleetd's message, for a status; `sent_token` says whether
/// the request carried a token.
pub fn hint(status: u16, sent_token: bool) -> Option<&'static str> {
    match (status, sent_token) {
        (401, false) => Some("give a token with --token or FLEET_TOKEN"),
        (401, true) => Some(
            "the token was not accepted; give a token with --token or FLEET_TOKEN that fleetd knows",
        ),
        (403, _) => Some("an admin can create a token with the needed scope: fleetctl token create"),
        _ => None,
    }
}

/// Checks an id of an API or enrollment token (as listed) before it goes into a URL.
pub fn check_token_id(id: &str) -> Result<()> {
    if id.starts_with("fleet_") || id.starts_with("enroll_") {
        bail!("give the token's id (the ID column of the list), not the token itself");
    }
    if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("token id {id:?} is not {ID_LEN} hex characters (the ID column of the list)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn tokens_are_checked_without_repeating_them() {
        let good: ApiToken = format!(" fleet_0123abcd_{SECRET}\n")
            .parse()
            .expect("infallible");
        let ok = good.validated().expect("an API token");
        assert_eq!(ok.id(), "0123abcd");
        assert_eq!(ok.bearer(), format!("Bearer fleet_0123abcd_{SECRET}"));
        assert!(!format!("{good:?}").contains(SECRET));
        for bad in [
            format!("enroll_0123abcd_{SECRET}"),
            format!("fleet_0123abcd_{SECRET}x"),
            format!("device:rpi-1:{SECRET}"),
            "hunter2".to_string(),
        ] {
            let t: ApiToken = bad.parse().expect("infallible");
            let e = t.validated().expect_err(&bad).to_string();
            assert!(e.contains("--token or FLEET_TOKEN"), "{e}");
            assert!(!e.contains(SECRET) && !e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn hints_name_the_flag() {
        assert_eq!(
            hint(401, false),
            Some("give a token with --token or FLEET_TOKEN")
        );
        assert!(hint(403, true).is_some_and(|h| h.contains("scope")));
        assert_eq!(hint(404, true), None);
    }

    #[test]
    fn token_ids_are_checked() {
        assert!(check_token_id("0123abcd").is_ok());
        assert!(check_token_id("0123abc").is_err());
        assert!(check_token_id("../../x").is_err());
        let e = check_token_id(&format!("fleet_0123abcd_{SECRET}")).expect_err("a token");
        assert!(!e.to_string().contains(SECRET));
    }
}
