//! Who is calling the API, as established from the `Authorization` header, and what that
//! caller may do: a scope check for every route and an application check for tokens limited to
//! named applications (CI tokens).

use fleet_schema::trust::Scope;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// fleetd runs with `--insecure`: no credentials are checked (a lab network).
    Insecure,
    /// An API token.
    Token {
        /// Its id (safe to log).
        id: String,
        /// Its name.
        name: String,
        /// Its strongest scope.
        scope: Scope,
        /// Applications it is limited to (empty: all).
        apps: Vec<String>,
    },
    /// A device, with its own credential (only for its fresh download URLs).
    Device(String),
}

/// Why a caller may not do something: the text names the missing right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Principal {
    /// Fails unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Forbidden> {
        match self {
            Principal::Insecure => Ok(()),
            Principal::Token { scope: have, .. } if *have >= scope => Ok(()),
            Principal::Token {
                scope: have, id, ..
            } => Err(Forbidden(format!(
                "token {id} has scope {:?}; this needs {:?}",
                have.as_str(),
                scope.as_str()
            ))),
            Principal::Device(d) => Err(Forbidden(format!(
                "device credentials ({d}) may only ask for their own download URLs; this needs an API token with scope {:?}",
                scope.as_str()
            ))),
        }
    }

    /// Fails unless the caller may deploy (push, register, create or control deployments of)
    /// application or artifact `app`.
    pub fn require_app(&self, app: &str) -> Result<(), Forbidden> {
        self.require(Scope::Deploy)?;
        match self {
            Principal::Token { apps, id, .. }
                if !apps.is_empty() && !apps.iter().any(|a| a == app) =>
            {
                Err(Forbidden(format!(
                    "token {id} is limited to applications {}; {app:?} is not one of them",
                    apps.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether secret configuration values may be shown to the caller (admin only).
    pub fn sees_secrets(&self) -> bool {
        matches!(
            self,
            Principal::Insecure
                | Principal::Token {
                    scope: Scope::Admin,
                    ..
                }
        )
    }

    /// A short description for logs (never a secret).
    pub fn label(&self) -> String {
        match self {
            Principal::Insecure => "insecure".into(),
            Principal::Token { id, name, .. } => format!("token {id} ({name})"),
            Principal::Device(d) => format!("device {d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(scope: Scope, apps: &[&str]) -> Principal {
        Principal::Token {
            id: "0123abcd".into(),
            name: "t".into(),
            scope,
            apps: apps.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn scopes_include_weaker_ones_and_app_limits_hold() {
        assert!(token(Scope::Admin, &[]).require(Scope::Deploy).is_ok());
        assert!(token(Scope::Deploy, &[]).require(Scope::Read).is_ok());
        let e = token(Scope::Read, &[])
            .require(Scope::Deploy)
            .expect_err("read");
        assert!(
            e.0.contains("\"read\"") && e.0.contains("\"deploy\""),
            "{e}"
        );
        assert!(token(Scope::Deploy, &["web"]).require_app("web").is_ok());
        let e = token(Scope::Deploy, &["web"])
            .require_app("db")
            .expect_err("limited");
        assert!(e.0.contains("\"db\""), "{e}");
        assert!(token(Scope::Read, &[]).require_app("web").is_err());
        assert!(Principal::Device("d1".into()).require(Scope::Read).is_err());
        assert!(Principal::Insecure.require(Scope::Admin).is_ok());
        assert!(token(Scope::Admin, &[]).sees_secrets());
        assert!(!token(Scope::Deploy, &[]).sees_secrets());
    }
}
