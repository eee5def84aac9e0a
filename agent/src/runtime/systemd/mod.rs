//! The `systemd` app runtime: instead of the agent's own supervisor, a systemd manager runs the
//! app. The agent renders one unit per installed version, `fleet-<app>@<version>.service`
//! ([`unit`]: ExecStart, Environment, WorkingDirectory, Restart= from the restart policy,
//! MemoryMax / CPUQuota / LimitNOFILE from the resources, the pre-start script as
//! ExecStartPre, output appended to the agent's log files), writes it atomically into the unit
//! directory and drives it with `systemctl` ([`systemctl`]); it follows each run of the unit
//! from `systemctl show` ([`watch`]) so restarts, crash loops and exits are reported like those
//! of any other app.
//!
//! Two scopes: `system` (`systemctl`, units in `/etc/systemd/system`) and `user`
//! (`systemctl --user`, units in `$XDG_CONFIG_HOME/systemd/user`). A device whose manager does
//! not answer does not report the `systemd` capability, and starting such an app fails with a
//! clear error.

pub mod systemctl;
pub mod unit;
pub mod watch;

pub use systemctl::{Systemctl, UnitState};
pub use unit::{render_unit, UnitInput};

use std::path::PathBuf;

/// Where units are written on a real device (system scope).
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
/// Prefix of every unit the agent writes; units without it are never touched.
pub const UNIT_PREFIX: &str = "fleet-";
/// Suffix of the units the agent writes.
pub const UNIT_SUFFIX: &str = ".service";
/// Longest unit name systemd accepts.
const UNIT_NAME_MAX: usize = 255;

/// Why the systemd runtime cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// The manager does not answer (no systemd, no user manager, no `systemctl`).
    #[error("runtime systemd is not available on this device: {0}")]
    Absent(String),
    /// An app name or version cannot become a unit name.
    #[error("cannot name a systemd unit after {0:?}: {1}")]
    BadName(String, String),
    /// A value cannot be written into a unit file.
    #[error("cannot write the systemd unit: {field} {problem}")]
    BadValue {
        /// Which setting.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Writing or removing the unit file failed.
    #[error("cannot write the systemd unit {path}: {message}")]
    Io {
        /// The unit file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// `systemctl` failed or timed out.
    #[error("systemctl {action} failed: {detail}")]
    Systemctl {
        /// The subcommand.
        action: String,
        /// Exit status and stderr.
        detail: String,
    },
}

/// Which systemd manager runs the apps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// The system manager (PID 1): `systemctl`, units in `/etc/systemd/system`.
    #[default]
    System,
    /// The calling user's manager: `systemctl --user`, units in
    /// `$XDG_CONFIG_HOME/systemd/user`.
    User,
}

impl Scope {
    /// Parses `system` or `user`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(Self::System),
            "user" => Ok(Self::User),
            other => Err(format!("{other:?} is not one of system, user")),
        }
    }

    /// The target that pulls enabled units in at boot (or login).
    pub fn wanted_by(self) -> &'static str {
        match self {
            Self::System => "multi-user.target",
            Self::User => "default.target",
        }
    }
}

/// The agent's systemd settings (flags `--systemd-scope`, `--systemd-unit-dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Which manager.
    pub scope: Scope,
    /// Where unit files go; `None` means the scope's default directory.
    pub unit_dir: Option<PathBuf>,
}

impl Settings {
    /// The unit directory: the configured one, or the scope's default (for `user`, from
    /// `XDG_CONFIG_HOME` or `HOME`).
    pub fn unit_dir(&self) -> Result<PathBuf, SystemdError> {
        if let Some(d) = &self.unit_dir {
            return Ok(d.clone());
        }
        match self.scope {
            Scope::System => Ok(PathBuf::from(DEFAULT_UNIT_DIR)),
            Scope::User => {
                let config = std::env::var_os("XDG_CONFIG_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME")
                            .filter(|v| !v.is_empty())
                            .map(|h| PathBuf::from(h).join(".config"))
                    })
                    .ok_or_else(|| {
                        SystemdError::Absent(
                            "neither XDG_CONFIG_HOME nor HOME is set for the user scope".into(),
                        )
                    })?;
                Ok(config.join("systemd").join("user"))
            }
        }
    }
}

/// True for the characters a unit name carries unescaped.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The unit of one version of an app: `fleet-<app>@<version>.service`. App names may not
/// contain `@`, so the split is unambiguous; a version's `+` (semver build metadata) is
/// escaped as `\x2b` the way `systemd-escape` does. Anything else odd is refused.
pub fn unit_name(app: &str, version: &str) -> Result<String, SystemdError> {
    let bad = |what: &str, v: &str, why: &str| {
        Err(SystemdError::BadName(
            v.to_string(),
            format!("the {what} {why}"),
        ))
    };
    if app.is_empty()
        || !app.chars().all(plain)
        || !app.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return bad(
            "app name",
            app,
            "must be ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
        );
    }
    if version.is_empty() {
        return bad("version", version, "is empty");
    }
    let mut escaped = String::with_capacity(version.len());
    for c in version.chars() {
        match c {
            c if plain(c) => escaped.push(c),
            '+' => escaped.push_str("\\x2b"),
            _ => {
                return bad(
                    "version",
                    version,
                    "may only hold ASCII letters, digits, '.', '_', '-' and '+'",
                )
            }
        }
    }
    let name = format!("{UNIT_PREFIX}{app}@{escaped}{UNIT_SUFFIX}");
    if name.len() > UNIT_NAME_MAX {
        return bad("unit name", &name, "is longer than 255 characters");
    }
    Ok(name)
}

/// The slice systemd puts every version of an app in (`fleet-<app>@` instances share it):
/// `app-fleet\x2d<app>.slice` for a user manager, `system-fleet\x2d<app>.slice` for PID 1.
pub fn app_slice(app: &str, scope: Scope) -> String {
    let parent = match scope {
        Scope::System => "system",
        Scope::User => "app",
    };
    format!(
        "{parent}-{}.slice",
        format!("{UNIT_PREFIX}{app}").replace('-', "\\x2d")
    )
}

/// The app and version of a unit the agent wrote (the inverse of [`unit_name`]); `None` for
/// any other file name.
pub fn parse_unit_name(name: &str) -> Option<(String, String)> {
    let body = name.strip_prefix(UNIT_PREFIX)?.strip_suffix(UNIT_SUFFIX)?;
    let (app, escaped) = body.split_once('@')?;
    let version = escaped.replace("\\x2b", "+");
    (unit_name(app, &version).ok()? == name).then(|| (app.to_string(), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_unambiguous_and_round_trip() {
        assert_eq!(
            unit_name("web", "1.2.0").expect("valid"),
            "fleet-web@1.2.0.service"
        );
        let n = unit_name("my-app", "1.0.0+build.7").expect("valid");
        assert_eq!(n, "fleet-my-app@1.0.0\\x2bbuild.7.service");
        assert_eq!(
            parse_unit_name(&n),
            Some(("my-app".to_string(), "1.0.0+build.7".to_string()))
        );
        assert_eq!(parse_unit_name("fleet-web.service"), None);
        assert_eq!(
            app_slice("my-app", Scope::User),
            "app-fleet\\x2dmy\\x2dapp.slice"
        );
        assert_eq!(parse_unit_name("sshd.service"), None);
        assert_eq!(parse_unit_name("fleet-a@b@c.service"), None);
    }

    #[test]
    fn odd_names_are_refused_not_mangled() {
        for (app, version) in [
            ("", "1.0.0"),
            ("a b", "1.0.0"),
            ("a@b", "1.0.0"),
            ("../x", "1.0.0"),
            ("-x", "1.0.0"),
            ("web", ""),
            ("web", "1.0.0/../x"),
            ("web", "1.0.0\n"),
        ] {
            let e = unit_name(app, version).expect_err("refused").to_string();
            assert!(e.contains("cannot name a systemd unit"), "{e}");
        }
        assert!(unit_name(&"a".repeat(300), "1.0.0").is_err());
    }

    #[test]
    fn scopes_and_unit_dirs() {
        assert_eq!(Scope::parse("user"), Ok(Scope::User));
        assert!(Scope::parse("session").is_err());
        assert_eq!(Scope::default(), Scope::System);
        let s = Settings::default();
        assert_eq!(s.unit_dir().expect("dir"), PathBuf::from(DEFAULT_UNIT_DIR));
        let s = Settings {
            scope: Scope::User,
            unit_dir: Some("/tmp/units".into()),
        };
        assert_eq!(s.unit_dir().expect("dir"), PathBuf::from("/tmp/units"));
        assert_eq!(Scope::User.wanted_by(), "default.target");
    }
}
