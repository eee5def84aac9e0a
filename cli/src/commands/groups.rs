//! `fleetctl group create|list|show|delete`: named device groups (`/api/v1/groups`) that
//! deployments target with `--group` (a group is one more filter: with `--selector` a deployment
//! reaches the group's members that also match it).

use super::print_json;
use crate::api::{encode, ApiClient};
use crate::table::Table;
use crate::{Global, Output};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fleet_schema::api::GroupSpec;
use fleet_schema::manifest::LabelRequirement;
use std::collections::BTreeMap;

/// Subcommands of `group`.
#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create (or replace) a group from device ids and/or label filters.
    ///
    /// Prints `group NAME saved`; --output json prints the stored group.
    Create(CreateArgs),
    /// List groups. Table columns: NAME, DEVICES, SELECTOR, EXPRESSIONS.
    List,
    /// Show one group (--output json: the API's answer).
    Show {
        /// Group name.
        name: String,
    },
    /// Delete a group. Deployments that named it keep the devices they have.
    Delete {
        /// Group name.
        name: String,
    },
}

/// Arguments of `group create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Group name, e.g. edge-stores.
    pub name: String,
    /// Static member ids, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = crate::args::device_id)]
    pub devices: Vec<String>,
    /// Members by label KEY=VALUE (repeatable; every pair must match).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = crate::args::label)]
    pub selector: Vec<(String, String)>,
    /// Set-based requirements as JSON, e.g.
    /// '[{"key":"tier","operator":"In","values":["edge","core"]}]', or @FILE.
    #[arg(long, value_name = "JSON")]
    pub match_expressions: Option<String>,
}

/// Runs a `group` subcommand.
pub fn run(g: &Global, cmd: &GroupCmd) -> Result<()> {
    let api = ApiClient::new(g)?;
    match cmd {
        GroupCmd::Create(args) => {
            let group = spec(args)?;
            let saved: GroupSpec = api.post_json("/api/v1/groups", &group)?;
            match g.output {
                Output::Json => print_json(&saved),
                Output::Table => {
                    println!("group {} saved", saved.name);
                    Ok(())
                }
            }
        }
        GroupCmd::List => {
            let groups: Vec<GroupSpec> = api.get("/api/v1/groups")?;
            if g.output == Output::Json {
                return print_json(&groups);
            }
            if groups.is_empty() {
                println!("no groups");
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "DEVICES", "SELECTOR", "EXPRESSIONS"]);
            for gr in &groups {
                t.row(vec![
                    gr.name.clone(),
                    dash(gr.devices.join(",")),
                    dash(selector_text(&gr.selector)),
                    gr.match_expressions.len().to_string(),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        GroupCmd::Show { name } => {
            let gr: GroupSpec = api.get(&format!("/api/v1/groups/{}", encode(name)))?;
            if g.output == Output::Json {
                return print_json(&gr);
            }
            println!("group        {}", gr.name);
            println!("devices      {}", dash(gr.devices.join(",")));
            println!("selector     {}", dash(selector_text(&gr.selector)));
            let exprs = serde_json::to_string(&gr.match_expressions)?;
            println!("expressions  {exprs}");
            Ok(())
        }
        GroupCmd::Delete { name } => {
            let gr: GroupSpec = api.delete(&format!("/api/v1/groups/{}", encode(name)))?;
            match g.output {
                Output::Json => print_json(&gr),
                Output::Table => {
                    println!("group {} deleted", gr.name);
                    Ok(())
                }
            }
        }
    }
}

/// Builds the group from the flags; fleetd validates the rest and names what is wrong.
fn spec(args: &CreateArgs) -> Result<GroupSpec> {
    let selector = crate::args::labels(&args.selector)?;
    let match_expressions: Vec<LabelRequirement> = match &args.match_expressions {
        None => Vec::new(),
        Some(text) => {
            let json = match text.strip_prefix('@') {
                Some(path) => {
                    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
                }
                None => text.clone(),
            };
            serde_json::from_str(&json)
                .context("--match-expressions is not a JSON list of {key, operator, values}")?
        }
    };
    if args.devices.is_empty() && selector.is_empty() && match_expressions.is_empty() {
        bail!("a group needs --devices, --selector and/or --match-expressions");
    }
    Ok(GroupSpec {
        name: args.name.clone(),
        devices: args.devices.clone(),
        selector,
        match_expressions,
    })
}

fn selector_text(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}
