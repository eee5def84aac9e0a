//! `fleetctl enroll create|list|revoke`: enrollment tokens, with which devices enroll without
//! waiting for an operator (`/api/v1/enrollment-tokens`, admin). The token string is printed
//! once, by `create`.

use super::print_json;
use super::tokens::expires;
use crate::api::{encode, ApiClient};
use crate::display;
use crate::table::Table;
use crate::{Global, Output};
use anyhow::Result;
use clap::{Args, Subcommand};
use fleet_schema::trust::tokens::{CreateEnrollToken, EnrollTokenCreated, EnrollTokenView};

/// Subcommands of `enroll`.
#[derive(Subcommand, Debug)]
pub enum EnrollCmd {
    /// Create an enrollment token and print it (once: it cannot be shown again).
    ///
    /// Table output: FIELD/VALUE rows token, id, name, labels, uses, expires; then where the
    /// token goes on a board. --output json prints the API's answer: {"token": "...", "info":
    /// {...}}. Either way a warning that it cannot be shown again goes to stderr.
    Create(CreateArgs),
    /// List enrollment tokens (never their secrets).
    ///
    /// Table columns: ID, NAME, LABELS, USED, USES LEFT (unlimited when not limited), CREATED,
    /// EXPIRES, STATE (active, used up, expired, revoked). --output json prints the API's list.
    List,
    /// Revoke an enrollment token: no device can enroll with it any more (devices already
    /// enrolled with it stay enrolled).
    ///
    /// Prints `enrollment token ID (NAME) revoked`; --output json prints its listing.
    Revoke {
        /// The token's id (the ID column of `enroll list`), not the token itself.
        id: String,
    },
}

/// Arguments of `enroll create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A name for people, e.g. "store-17 batch".
    #[arg(long, default_value = "")]
    pub name: String,
    /// A label KEY=VALUE every device enrolled with the token gets (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::args::label)]
    pub labels: Vec<(String, String)>,
    /// Lifetime, e.g. 24h or 7d; the token never expires when absent.
    #[arg(long, value_parser = crate::args::lifetime)]
    pub expires: Option<String>,
    /// How many devices may enroll with it; unlimited when absent.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub uses: Option<u32>,
}

/// Runs an `enroll` subcommand.
pub fn run(g: &Global, cmd: &EnrollCmd) -> Result<()> {
    match cmd {
        EnrollCmd::Create(args) => create(g, args),
        EnrollCmd::List => list(g),
        EnrollCmd::Revoke { id } => revoke(g, id),
    }
}

/// The request `enroll create` sends.
fn request(args: &CreateArgs) -> Result<CreateEnrollToken> {
    Ok(CreateEnrollToken {
        name: args.name.clone(),
        labels: crate::args::labels(&args.labels)?,
        expires_in: args.expires.clone(),
        uses: args.uses,
    })
}

fn create(g: &Global, args: &CreateArgs) -> Result<()> {
    let req = request(args)?;
    let created: EnrollTokenCreated =
        ApiClient::new(g)?.post_json("/api/v1/enrollment-tokens", &req)?;
    match g.output {
        Output::Json => print_json(&created)?,
        Output::Table => {
            print!("{}", created_table(&created).render());
            println!();
            print!("{}", WHERE_IT_GOES);
        }
    }
    eprintln!("warning: keep this enrollment token now, it cannot be shown again");
    Ok(())
}

/// How a board gets the token, printed after it.
const WHERE_IT_GOES: &str = "\
Give it to the agent on each board in one of these ways:
  fleet-agent --enroll-token-file FILE   (FILE holds the token, e.g. mode 0600)
  enroll_token_file = \"FILE\"             (in the agent's TOML configuration)
  FLEET_ENROLL_TOKEN=<token>             (in the agent's environment)
";

/// How many more devices may enroll, as one cell.
fn uses_left(u: Option<u32>) -> String {
    u.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

fn created_table(c: &EnrollTokenCreated) -> Table {
    let i = &c.info;
    let mut t = Table::new(&["FIELD", "VALUE"]);
    t.row(vec!["token".into(), c.token.clone()]);
    t.row(vec!["id".into(), i.id.clone()]);
    t.row(vec!["name".into(), or_dash(&i.name)]);
    t.row(vec!["labels".into(), display::labels(&i.labels)]);
    t.row(vec!["uses".into(), uses_left(i.uses_left)]);
    t.row(vec!["expires".into(), expires(i.expires_at)]);
    t
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// An enrollment token's state: revoked, expired, used up or active.
fn state(t: &EnrollTokenView, now: u64) -> &'static str {
    if t.revoked {
        "revoked"
    } else if t.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else if t.uses_left == Some(0) {
        "used up"
    } else {
        "active"
    }
}

fn list_table(tokens: &[EnrollTokenView], now: u64) -> Table {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "LABELS",
        "USED",
        "USES LEFT",
        "CREATED",
        "EXPIRES",
        "STATE",
    ]);
    for v in tokens {
        t.row(vec![
            v.id.clone(),
            or_dash(&v.name),
            display::labels(&v.labels),
            v.used.to_string(),
            uses_left(v.uses_left),
            display::ago(now, v.created_at),
            expires(v.expires_at),
            state(v, now).into(),
        ]);
    }
    t
}

fn list(g: &Global) -> Result<()> {
    let mut tokens: Vec<EnrollTokenView> = ApiClient::new(g)?.get("/api/v1/enrollment-tokens")?;
    tokens.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    if g.output == Output::Json {
        return print_json(&tokens);
    }
    if tokens.is_empty() {
        println!("no enrollment tokens");
        return Ok(());
    }
    print!("{}", list_table(&tokens, display::now_ms()).render());
    Ok(())
}

fn revoke(g: &Global, id: &str) -> Result<()> {
    crate::auth::check_token_id(id)?;
    let view: EnrollTokenView =
        ApiClient::new(g)?.delete(&format!("/api/v1/enrollment-tokens/{}", encode(id)))?;
    match g.output {
        Output::Json => print_json(&view),
        Output::Table => {
            println!(
                "enrollment token {} ({}) revoked",
                view.id,
                or_dash(&view.name)
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<EnrollCmd, clap::Error> {
        let mut full = vec!["fleetctl", "enroll"];
        full.extend_from_slice(args);
        match crate::Cli::try_parse_from(full)?.command {
            crate::Command::Enroll(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        match parse(&full).expect("parses") {
            EnrollCmd::Create(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn create_builds_the_request() {
        let a = create_args(&[
            "--name",
            "batch",
            "--label",
            "site=a",
            "--label",
            "rack=3",
            "--expires",
            "24h",
            "--uses",
            "5",
        ]);
        let req = request(&a).expect("valid");
        assert_eq!(req.name, "batch");
        assert_eq!(req.labels.get("site").map(String::as_str), Some("a"));
        assert_eq!(req.labels.get("rack").map(String::as_str), Some("3"));
        assert_eq!(req.expires_in.as_deref(), Some("24h"));
        assert_eq!(req.uses, Some(5));
        assert_eq!(
            request(&create_args(&[])).expect("valid"),
            CreateEnrollToken::default()
        );
        let dup = create_args(&["--label", "a=1", "--label", "a=2"]);
        assert!(request(&dup).is_err());
        assert!(parse(&["create", "--uses", "0"]).is_err());
        assert!(parse(&["create", "--label", "novalue"]).is_err());
        assert!(parse(&["create", "--expires", "tomorrow"]).is_err());
        assert!(matches!(
            parse(&["revoke", "0123abcd"]),
            Ok(EnrollCmd::Revoke { .. })
        ));
        assert!(matches!(parse(&["list"]), Ok(EnrollCmd::List)));
    }

    fn view() -> EnrollTokenView {
        EnrollTokenView {
            id: "0123abcd".into(),
            name: "batch".into(),
            labels: [("site".to_string(), "a".to_string())].into(),
            created_at: 1,
            expires_at: None,
            uses_left: Some(2),
            used: 1,
            revoked: false,
        }
    }

    #[test]
    fn tables() {
        let created = EnrollTokenCreated {
            token: "enroll_0123abcd_s".into(),
            info: view(),
        };
        assert_eq!(
            created_table(&created).render(),
            "FIELD    VALUE\n\
             token    enroll_0123abcd_s\n\
             id       0123abcd\n\
             name     batch\n\
             labels   site=a\n\
             uses     2\n\
             expires  never\n"
        );
        let mut used_up = view();
        used_up.uses_left = Some(0);
        used_up.name.clear();
        assert_eq!(
            list_table(&[view(), used_up], 60_001).render(),
            "ID        NAME   LABELS  USED  USES LEFT  CREATED  EXPIRES  STATE\n\
             0123abcd  batch  site=a  1     2          1m ago   never    active\n\
             0123abcd  -      site=a  1     0          1m ago   never    used up\n"
        );
    }

    #[test]
    fn the_token_placement_names_every_way() {
        for way in [
            "--enroll-token-file",
            "enroll_token_file",
            "FLEET_ENROLL_TOKEN",
        ] {
            assert!(WHERE_IT_GOES.contains(way), "{way}");
        }
    }
}
