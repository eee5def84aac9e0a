//! `fleetctl token create|list|revoke`: API tokens for people and CI (`/api/v1/tokens`,
//! admin). The token string is printed once, by `create`; it cannot be shown again.

use super::print_json;
use crate::api::{encode, ApiClient};
use crate::display;
use crate::table::Table;
use crate::{Global, Output};
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use fleet_schema::trust::tokens::{CreateToken, TokenCreated, TokenView};
use fleet_schema::trust::Scope;

/// Subcommands of `token`.
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create an API token and print it (once: it cannot be shown again).
    ///
    /// Table output: FIELD/VALUE rows token, id, name, scope, apps, expires, mqtt user; then a
    /// warning on stderr that the token cannot be shown again. --output json prints the API's
    /// answer: {"token": "...", "info": {...}}.
    Create(CreateArgs),
    /// List API tokens (never their secrets).
    ///
    /// Table columns: ID, NAME, SCOPE, APPS (* for all), MQTT USER, CREATED, EXPIRES, STATE
    /// (active, expired, revoked). --output json prints the API's list.
    List,
    /// Revoke an API token: it is refused from then on (it stays listed as revoked).
    ///
    /// Prints `token ID (NAME) revoked`; --output json prints the token's listing.
    Revoke {
        /// The token's id (the ID column of `token list`), not the token itself.
        id: String,
    },
}

/// Arguments of `token create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A name for people, e.g. ci-web.
    #[arg(long)]
    pub name: String,
    /// What the token may do; each scope includes the ones before it.
    #[arg(long, value_enum)]
    pub scope: ScopeArg,
    /// Limit deploying to this application (repeatable); all applications when absent.
    #[arg(long = "app", value_name = "APP")]
    pub apps: Vec<String>,
    /// Lifetime, e.g. 90d or 24h; the token never expires when absent.
    #[arg(long, value_parser = crate::args::lifetime)]
    pub expires: Option<String>,
}

/// A scope on the command line.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeArg {
    /// Read artifacts, applications, deployments, devices, logs, metrics.
    Read,
    /// Also push artifacts, register applications, create and control deployments.
    Deploy,
    /// Also tokens, enrollment, device decisions and broker configuration.
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Read => Scope::Read,
            ScopeArg::Deploy => Scope::Deploy,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

/// Runs a `token` subcommand.
pub fn run(g: &Global, cmd: &TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create(args) => create(g, args),
        TokenCmd::List => list(g),
        TokenCmd::Revoke { id } => revoke(g, id),
    }
}

/// The request `token create` sends.
fn request(args: &CreateArgs) -> CreateToken {
    CreateToken {
        name: args.name.clone(),
        scopes: vec![args.scope.into()],
        apps: args.apps.clone(),
        expires_in: args.expires.clone(),
    }
}

fn create(g: &Global, args: &CreateArgs) -> Result<()> {
    let created: TokenCreated = ApiClient::new(g)?.post_json("/api/v1/tokens", &request(args))?;
    match g.output {
        Output::Json => print_json(&created)?,
        Output::Table => print!("{}", created_table(&created).render()),
    }
    eprintln!(
        "warning: keep this token now, it cannot be shown again; use it with --token or \
         FLEET_TOKEN (MQTT: user {}, the token as password)",
        created.info.mqtt_username
    );
    Ok(())
}

/// Scopes as one cell, "deploy" or "read,deploy".
fn scopes(s: &[Scope]) -> String {
    s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// Application limits as one cell ("*" when the token is not limited).
fn apps(a: &[String]) -> String {
    if a.is_empty() {
        "*".into()
    } else {
        a.join(",")
    }
}

fn created_table(c: &TokenCreated) -> Table {
    let i = &c.info;
    let mut t = Table::new(&["FIELD", "VALUE"]);
    t.row(vec!["token".into(), c.token.clone()]);
    t.row(vec!["id".into(), i.id.clone()]);
    t.row(vec!["name".into(), i.name.clone()]);
    t.row(vec!["scope".into(), scopes(&i.scopes)]);
    t.row(vec!["apps".into(), apps(&i.apps)]);
    t.row(vec!["expires".into(), expires(i.expires_at)]);
    t.row(vec!["mqtt user".into(), i.mqtt_username.clone()]);
    t
}

/// `fleetctl whoami`: who fleetd takes the token for.
pub fn whoami(g: &Global) -> Result<()> {
    let me: fleet_schema::trust::tokens::WhoAmI = ApiClient::new(g)?.get("/api/v1/whoami")?;
    match g.output {
        Output::Json => print_json(&me),
        Output::Table => {
            let mut t = Table::new(&["FIELD", "VALUE"]);
            t.row(vec!["kind".into(), me.kind.clone()]);
            t.row(vec![
                "id".into(),
                me.id.clone().unwrap_or_else(|| "-".into()),
            ]);
            t.row(vec![
                "name".into(),
                me.name.clone().unwrap_or_else(|| "-".into()),
            ]);
            t.row(vec![
                "scope".into(),
                me.scope
                    .map_or_else(|| "all (insecure)".into(), |s| s.as_str().to_string()),
            ]);
            t.row(vec!["apps".into(), apps(&me.apps)]);
            print!("{}", t.render());
            Ok(())
        }
    }
}

/// An expiry as one cell: the UTC date, or "never".
pub fn expires(at: Option<u64>) -> String {
    at.map_or_else(|| "never".into(), display::date)
}

/// A token's state: revoked, expired or active.
fn state(t: &TokenView, now: u64) -> &'static str {
    if t.revoked {
        "revoked"
    } else if t.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

fn list_table(tokens: &[TokenView], now: u64) -> Table {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "SCOPE",
        "APPS",
        "MQTT USER",
        "CREATED",
        "EXPIRES",
        "STATE",
    ]);
    for v in tokens {
        t.row(vec![
            v.id.clone(),
            v.name.clone(),
            scopes(&v.scopes),
            apps(&v.apps),
            v.mqtt_username.clone(),
            display::ago(now, v.created_at),
            expires(v.expires_at),
            state(v, now).into(),
        ]);
    }
    t
}

fn list(g: &Global) -> Result<()> {
    let mut tokens: Vec<TokenView> = ApiClient::new(g)?.get("/api/v1/tokens")?;
    tokens.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    if g.output == Output::Json {
        return print_json(&tokens);
    }
    if tokens.is_empty() {
        println!("no API tokens");
        return Ok(());
    }
    print!("{}", list_table(&tokens, display::now_ms()).render());
    Ok(())
}

fn revoke(g: &Global, id: &str) -> Result<()> {
    crate::auth::check_token_id(id)?;
    let view: TokenView = ApiClient::new(g)?.delete(&format!("/api/v1/tokens/{}", encode(id)))?;
    match g.output {
        Output::Json => print_json(&view),
        Output::Table => {
            println!("token {} ({}) revoked", view.id, view.name);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<TokenCmd, clap::Error> {
        let mut full = vec!["fleetctl", "token"];
        full.extend_from_slice(args);
        match crate::Cli::try_parse_from(full)?.command {
            crate::Command::Token(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn view() -> TokenView {
        TokenView {
            id: "0123abcd".into(),
            name: "ci-web".into(),
            scopes: vec![Scope::Deploy],
            apps: vec!["web".into()],
            created_at: 1,
            expires_at: Some(86_400_000),
            revoked: false,
            mqtt_username: "_token-0123abcd".into(),
        }
    }

    #[test]
    fn create_builds_the_request() {
        let cmd = parse(&[
            "create",
            "--name",
            "ci-web",
            "--scope",
            "deploy",
            "--app",
            "web",
            "--app",
            "api",
            "--expires",
            "90d",
        ])
        .expect("parses");
        let TokenCmd::Create(args) = cmd else {
            panic!("parsed as {cmd:?}")
        };
        assert_eq!(
            request(&args),
            CreateToken {
                name: "ci-web".into(),
                scopes: vec![Scope::Deploy],
                apps: vec!["web".into(), "api".into()],
                expires_in: Some("90d".into()),
            }
        );
        let cmd = parse(&["create", "--name", "x", "--scope", "admin"]).expect("parses");
        let TokenCmd::Create(args) = cmd else {
            panic!("parsed as {cmd:?}")
        };
        assert_eq!(request(&args).expires_in, None);
        assert!(parse(&["create", "--name", "x", "--scope", "root"]).is_err());
        assert!(parse(&["create", "--name", "x"]).is_err());
        assert!(parse(&[
            "create",
            "--name",
            "x",
            "--scope",
            "read",
            "--expires",
            "soon"
        ])
        .is_err());
    }

    #[test]
    fn revoke_and_list_parse() {
        assert!(matches!(parse(&["list"]), Ok(TokenCmd::List)));
        assert!(
            matches!(parse(&["revoke", "0123abcd"]), Ok(TokenCmd::Revoke { id }) if id == "0123abcd")
        );
        assert!(parse(&["revoke"]).is_err());
    }

    #[test]
    fn tables() {
        let created = TokenCreated {
            token: "fleet_0123abcd_secret".into(),
            info: view(),
        };
        assert_eq!(
            created_table(&created).render(),
            "FIELD      VALUE\n\
             token      fleet_0123abcd_secret\n\
             id         0123abcd\n\
             name       ci-web\n\
             scope      deploy\n\
             apps       web\n\
             expires    1970-01-02 00:00 UTC\n\
             mqtt user  _token-0123abcd\n"
        );
        let mut revoked = view();
        revoked.id = "feedbeef".into();
        revoked.revoked = true;
        revoked.apps.clear();
        revoked.expires_at = None;
        let text = list_table(&[view(), revoked], 90_000_000).render();
        assert_eq!(
            text,
            "ID        NAME    SCOPE   APPS  MQTT USER        CREATED  EXPIRES               STATE\n\
             0123abcd  ci-web  deploy  web   _token-0123abcd  1d ago   1970-01-02 00:00 UTC  expired\n\
             feedbeef  ci-web  deploy  *     _token-0123abcd  1d ago   never                 revoked\n"
        );
    }
}
