//! Creating, listing and revoking API tokens and enrollment tokens, and the bootstrap of the
//! first admin token (`fleetd init`, the `FLEETD_ADMIN_TOKEN` environment variable, or a file
//! written once at first start). A token's secret is shown once, when it is created; only its
//! hash is stored.

use super::records::{EnrollTokenRecord, TokenRecord};
use super::Trust;
use crate::db::{Db, DbError};
use fleet_schema::manifest::units::duration_ms;
use fleet_schema::trust::keys::{new_secret_hex, random_bytes, secret_hash};
use fleet_schema::trust::tokens::{
    api_token, enroll_token, CreateEnrollToken, CreateToken, EnrollTokenCreated, Scope,
    TokenCreated,
};
use fleet_schema::trust::Credential;
use fleet_schema::UnixMillis;
use std::path::Path;

/// Why a token request is refused (400) or failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request is malformed; the text names the field.
    #[error("{0}")]
    Invalid(String),
    /// The named token does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn new_id() -> Result<String, TokenError> {
    random_bytes::<4>()
        .map(hex::encode)
        .map_err(|e| TokenError::Invalid(e.to_string()))
}

fn expiry(now: UnixMillis, expires_in: Option<&str>) -> Result<Option<UnixMillis>, TokenError> {
    match expires_in {
        None => Ok(None),
        Some(s) => {
            let ms = duration_ms(s).map_err(|e| TokenError::Invalid(format!("expires_in: {e}")))?;
            if ms == 0 {
                return Err(TokenError::Invalid(
                    "expires_in must be longer than 0".into(),
                ));
            }
            Ok(Some(now.saturating_add(ms)))
        }
    }
}

/// Builds a new API token record and its token string.
pub fn new_api_token(
    req: &CreateToken,
    now: UnixMillis,
) -> Result<(TokenRecord, String), TokenError> {
    if req.name.trim().is_empty() || req.name.len() > 100 {
        return Err(TokenError::Invalid(
            "name must be 1 to 100 characters".into(),
        ));
    }
    if req.scopes.is_empty() {
        return Err(TokenError::Invalid(
            "scopes must name at least one of read, deploy, admin".into(),
        ));
    }
    for app in &req.apps {
        fleet_schema::artifact::validate_name(app)
            .map_err(|e| TokenError::Invalid(format!("apps: {e}")))?;
    }
    let id = new_id()?;
    let secret = new_secret_hex().map_err(|e| TokenError::Invalid(e.to_string()))?;
    let token = api_token(&id, &secret);
    let rec = TokenRecord {
        id,
        name: req.name.trim().to_string(),
        scopes: req.scopes.clone(),
        apps: req.apps.clone(),
        created_at: now,
        expires_at: expiry(now, req.expires_in.as_deref())?,
        revoked: false,
        hash: secret_hash(&secret),
        mosquitto_hash: Some(
            super::mosquitto::hash_password(&token)
                .map_err(|e| TokenError::Invalid(e.to_string()))?,
        ),
    };
    Ok((rec, token))
}

/// Creates and stores an API token.
pub fn create(db: &Db, trust: &Trust, req: &CreateToken) -> Result<TokenCreated, TokenError> {
    let (rec, token) = new_api_token(req, crate::clock::now_ms())?;
    db.put_token(&rec)?;
    trust.token_changed(&rec);
    tracing::info!(id = %rec.id, name = %rec.name, scopes = ?rec.scopes, "API token created");
    Ok(TokenCreated {
        token,
        info: rec.view(),
    })
}

/// Revokes an API token (it stays listed).
pub fn revoke(db: &Db, trust: &Trust, id: &str) -> Result<TokenRecord, TokenError> {
    let mut rec = db
        .tokens()?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| TokenError::NotFound(format!("token {id:?} not found")))?;
    rec.revoked = true;
    db.put_token(&rec)?;
    trust.token_changed(&rec);
    tracing::info!(id = %rec.id, "API token revoked");
    Ok(rec)
}

/// Creates and stores an enrollment token.
pub fn create_enroll(db: &Db, req: &CreateEnrollToken) -> Result<EnrollTokenCreated, TokenError> {
    for (k, v) in &req.labels {
        if k.is_empty() || k.len() > 63 || v.len() > 256 {
            return Err(TokenError::Invalid(format!(
                "labels: {k:?} must be 1 to 63 characters, its value at most 256"
            )));
        }
    }
    if req.uses == Some(0) {
        return Err(TokenError::Invalid("uses must be at least 1".into()));
    }
    let now = crate::clock::now_ms();
    let id = new_id()?;
    let secret = new_secret_hex().map_err(|e| TokenError::Invalid(e.to_string()))?;
    let rec = EnrollTokenRecord {
        id: id.clone(),
        name: req.name.clone(),
        labels: req.labels.clone(),
        created_at: now,
        expires_at: expiry(now, req.expires_in.as_deref())?,
        uses_left: req.uses,
        used: 0,
        revoked: false,
        hash: secret_hash(&secret),
    };
    db.put_enroll_token(&rec)?;
    tracing::info!(id = %rec.id, uses = ?rec.uses_left, "enrollment token created");
    Ok(EnrollTokenCreated {
        token: enroll_token(&id, &secret),
        info: rec.view(),
    })
}

/// Revokes an enrollment token.
pub fn revoke_enroll(db: &Db, id: &str) -> Result<EnrollTokenRecord, TokenError> {
    let mut rec = db
        .enroll_token(id)?
        .ok_or_else(|| TokenError::NotFound(format!("enrollment token {id:?} not found")))?;
    rec.revoked = true;
    db.put_enroll_token(&rec)?;
    tracing::info!(id = %rec.id, "enrollment token revoked");
    Ok(rec)
}

/// Environment variable holding an admin token to install at start (automation, compose).
pub const ADMIN_TOKEN_ENV: &str = "FLEETD_ADMIN_TOKEN";

/// File the first admin token is written to when fleetd starts with no token at all.
pub const INITIAL_TOKEN_FILE: &str = "initial-admin.token";

/// Makes sure an admin can get in: installs the token in `FLEETD_ADMIN_TOKEN` (when set), or,
/// when no token exists at all, creates one and writes it to `<data>/initial-admin.token`
/// (0600). Never logs a secret.
pub fn bootstrap(
    db: &Db,
    trust: &Trust,
    data_dir: &Path,
    from_env: Option<&str>,
) -> Result<(), TokenError> {
    let now = crate::clock::now_ms();
    if let Some(text) = from_env {
        let Ok(Credential::Api { id, secret }) = Credential::parse(text) else {
            return Err(TokenError::Invalid(format!(
                "{ADMIN_TOKEN_ENV} must be a token of the form fleet_<8 hex>_<64 hex> (fleetctl token format)"
            )));
        };
        let existing = db.tokens()?.into_iter().find(|t| t.id == id);
        if existing
            .as_ref()
            .is_some_and(|t| t.hash == secret_hash(&secret) && !t.revoked)
        {
            return Ok(());
        }
        if existing.is_some_and(|t| t.revoked) {
            return Err(TokenError::Invalid(format!(
                "{ADMIN_TOKEN_ENV} names token {id}, which was revoked"
            )));
        }
        let rec = TokenRecord {
            id: id.clone(),
            name: format!("bootstrap ({ADMIN_TOKEN_ENV})"),
            scopes: vec![Scope::Admin],
            apps: vec![],
            created_at: now,
            expires_at: None,
            revoked: false,
            hash: secret_hash(&secret),
            mosquitto_hash: Some(
                super::mosquitto::hash_password(text.trim())
                    .map_err(|e| TokenError::Invalid(e.to_string()))?,
            ),
        };
        db.put_token(&rec)?;
        trust.token_changed(&rec);
        tracing::info!(id = %id, "admin token from {ADMIN_TOKEN_ENV} installed");
        return Ok(());
    }
    if !db.tokens()?.is_empty() {
        return Ok(());
    }
    let (rec, token) = new_api_token(
        &CreateToken {
            name: "initial admin".into(),
            scopes: vec![Scope::Admin],
            apps: vec![],
            expires_in: None,
        },
        now,
    )?;
    let path = data_dir.join(INITIAL_TOKEN_FILE);
    super::controller_key::write_private(&path, format!("{token}\n").as_bytes())
        .map_err(|e| TokenError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    db.put_token(&rec)?;
    trust.token_changed(&rec);
    tracing::warn!(id = %rec.id, file = %path.display(), "no API token existed: created an admin token and wrote it to this file (mode 0600); use it with fleetctl --token, then delete the file");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tokens_validate_their_request() {
        let ok = CreateToken {
            name: "ci".into(),
            scopes: vec![Scope::Deploy],
            apps: vec!["web".into()],
            expires_in: Some("30d".into()),
        };
        let (rec, token) = new_api_token(&ok, 1000).expect("valid");
        assert_eq!(rec.expires_at, Some(1000 + 30 * 86_400_000));
        assert!(token.starts_with(&format!("fleet_{}_", rec.id)));
        assert_eq!(rec.hash.len(), 64);
        assert!(!rec.hash.contains(token.rsplit('_').next().expect("secret")));
        for (bad, field) in [
            (
                CreateToken {
                    scopes: vec![],
                    ..ok.clone()
                },
                "scopes",
            ),
            (
                CreateToken {
                    name: " ".into(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                CreateToken {
                    expires_in: Some("soon".into()),
                    ..ok.clone()
                },
                "expires_in",
            ),
            (
                CreateToken {
                    apps: vec!["../x".into()],
                    ..ok.clone()
                },
                "apps",
            ),
        ] {
            let e = new_api_token(&bad, 0).expect_err(field);
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }
}
