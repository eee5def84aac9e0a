//! `fleetctl deploy` (create a deployment, optionally `--wait` for its end), `deploy show ID`
//! and `deploy list`.

use super::deploy_wait::{self, tally, Outcome};
use super::print_json;
use crate::api::ApiClient;
use crate::display;
use crate::table::Table;
use crate::{DeployArgs, Global, Output};
use anyhow::{bail, Result};
use fleet_schema::api::{
    CreateDeployment, DeploymentCreated, DeploymentView, DeviceProgress, RollbackTriggerSpec,
    StrategySpec, TargetSpec,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Parses a label selector `k=v[,k2=v2]`.
fn parse_selector(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => bail!("selector term {pair:?} is not of the form key=value"),
        }
    }
    if out.is_empty() {
        bail!("selector {s:?} has no key=value terms");
    }
    Ok(out)
}

/// Builds a strategy from `--strategy TYPE` and `--param KEY=VALUE` pairs (integers and
/// booleans are sent as such); the controller names any unknown parameter.
fn strategy_spec(kind: &str, params: &[String]) -> Result<StrategySpec> {
    let mut map = serde_json::Map::new();
    map.insert("type".into(), serde_json::Value::String(kind.into()));
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--param {p:?} is not of the form key=value");
        };
        let value = if let Ok(n) = v.parse::<u64>() {
            serde_json::Value::from(n)
        } else if let Ok(b) = v.parse::<bool>() {
            serde_json::Value::Bool(b)
        } else {
            serde_json::Value::String(v.into())
        };
        map.insert(k.trim().into(), value);
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| anyhow::anyhow!("invalid strategy: {e}"))
}

/// Parses `--trigger TYPE:THRESHOLD[:DURATION[:ACTION]]`; fleetd validates the values and
/// names what is wrong.
fn parse_trigger(s: &str) -> Result<RollbackTriggerSpec> {
    let mut parts = s.split(':').map(str::trim);
    let kind = parts.next().filter(|k| !k.is_empty());
    let threshold = parts.next().map(str::parse::<f64>);
    let (Some(kind), Some(Ok(threshold))) = (kind, threshold) else {
        bail!("--trigger {s:?} is not TYPE:THRESHOLD[:DURATION[:ACTION]], e.g. high-error-rate:0.05:2m");
    };
    let duration = parts.next().filter(|d| !d.is_empty()).map(str::to_string);
    let action = parts.next().filter(|a| !a.is_empty()).map(str::to_string);
    if parts.next().is_some() {
        bail!("--trigger {s:?} has more than four ':'-separated parts");
    }
    Ok(RollbackTriggerSpec {
        kind: kind.into(),
        threshold,
        duration,
        action,
    })
}

/// Creates a deployment; with `--wait`, follows it to the end.
pub fn deploy(g: &Global, args: &DeployArgs) -> Result<()> {
    let selector = match &args.selector {
        Some(s) => parse_selector(s)?,
        None => BTreeMap::new(),
    };
    let (Some(app), Some(version)) = (args.app.clone(), args.version.clone()) else {
        bail!("deploy needs --app and --version (or a subcommand such as `deploy watch ID`)");
    };
    let mut strategy = match &args.strategy {
        Some(kind) => Some(strategy_spec(kind, &args.params)?),
        None if args.params.is_empty() && args.triggers.is_empty() => None,
        None => bail!("--param and --trigger need --strategy"),
    };
    if let Some(s) = strategy.as_mut() {
        s.rollback_triggers = args
            .triggers
            .iter()
            .map(|t| parse_trigger(t))
            .collect::<Result<_>>()?;
    }
    let request = CreateDeployment {
        application: app.clone(),
        version: version.clone(),
        strategy,
        target: TargetSpec {
            devices: args.devices.clone(),
            selector,
            group: args.group.clone(),
            match_expressions: Vec::new(),
        },
    };
    let api = ApiClient::new(g)?;
    let created: DeploymentCreated = api.post_json("/api/v1/deployments", &request)?;
    if !args.wait {
        return match g.output {
            Output::Json => print_json(&created),
            Output::Table => {
                println!(
                    "deployment {} created: {app}@{version} to {} device(s)",
                    created.id,
                    created.devices.len()
                );
                Ok(())
            }
        };
    }
    match g.output {
        Output::Json => deploy_wait::print_created(&created)?,
        Output::Table => println!(
            "deployment {} created: {app}@{version} to {} device(s)",
            created.id,
            created.devices.len()
        ),
    }
    let (view, outcome) =
        deploy_wait::follow(g, &api, &created, Duration::from_secs(args.timeout))?;
    let counts = tally(&view);
    if g.output == Output::Table {
        println!(
            "deployment {} {}: {} succeeded, {} failed, {} superseded",
            view.id,
            outcome.as_str(),
            counts.succeeded,
            counts.failed,
            counts.superseded
        );
        if counts.failed > 0 {
            print!(
                "{}",
                device_table(&view, |p| matches!(p, DeviceProgress::Failed { .. })).render()
            );
        }
    }
    if outcome != Outcome::Succeeded {
        let detail = match outcome {
            Outcome::TimedOut => format!(
                " after {}s ({} of {} succeeded); it goes on in fleetd: \
                 `fleetctl deploy show {}`",
                args.timeout,
                counts.succeeded,
                view.devices.len(),
                view.id
            ),
            _ => String::new(),
        };
        return Err(deploy_wait::Unsuccessful {
            id: view.id,
            outcome,
            detail,
        }
        .into());
    }
    Ok(())
}

/// A DEVICE/PROGRESS table of the devices whose progress matches `keep`.
fn device_table(view: &DeploymentView, keep: impl Fn(&DeviceProgress) -> bool) -> Table {
    let mut t = Table::new(&["DEVICE", "PROGRESS"]);
    for (device, p) in view.devices.iter().filter(|(_, p)| keep(p)) {
        t.row(vec![device.clone(), display::progress(p)]);
    }
    t
}

/// Shows one deployment: its state, the rollout's steps and trigger, and a per-device table.
pub fn show(g: &Global, id: &str) -> Result<()> {
    let api = ApiClient::new(g)?;
    let view: DeploymentView = api.get(&format!("/api/v1/deployments/{id}"))?;
    if g.output == Output::Json {
        return print_json(&view);
    }
    let counts = tally(&view);
    let now = display::now_ms();
    println!("deployment  {}", view.id);
    println!("app         {}@{}", view.application, view.version);
    println!("strategy    {}", view.strategy);
    println!(
        "state       {} ({} succeeded, {} failed, {} in progress, {} superseded of {})",
        view.state,
        counts.succeeded,
        counts.failed,
        counts.in_progress,
        counts.superseded,
        view.devices.len()
    );
    println!("created     {}", display::ago(now, view.created_at));
    super::watch::print_rollout(&view);
    println!();
    print!("{}", device_table(&view, |_| true).render());
    Ok(())
}

/// Lists deployments, newest first.
pub fn list(g: &Global) -> Result<()> {
    let api = ApiClient::new(g)?;
    let mut views: Vec<DeploymentView> = api.get("/api/v1/deployments")?;
    if g.output == Output::Json {
        return print_json(&views);
    }
    if views.is_empty() {
        println!("no deployments");
        return Ok(());
    }
    views.sort_by_key(|v| std::cmp::Reverse(v.created_at));
    let now = display::now_ms();
    let mut t = Table::new(&["ID", "APP", "VERSION", "STATE", "SUCCEEDED", "CREATED"]);
    for v in &views {
        let counts = tally(v);
        t.row(vec![
            v.id.clone(),
            v.application.clone(),
            v.version.clone(),
            v.state.to_string(),
            format!("{}/{}", counts.succeeded, v.devices.len()),
            display::ago(now, v.created_at),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_params_are_typed() {
        let s = strategy_spec(
            "canary",
            &[
                "initial_percentage=10".into(),
                "increment_interval=30s".into(),
            ],
        )
        .expect("valid");
        assert_eq!(s.initial_percentage, Some(10));
        assert_eq!(s.increment_interval.as_deref(), Some("30s"));
        let err = strategy_spec("canary", &["initial_pct=10".into()]).expect_err("typo");
        assert!(err.to_string().contains("initial_pct"), "{err}");
    }

    #[test]
    fn triggers_parse() {
        let t = parse_trigger("high-error-rate:0.05:2m:gradual").expect("valid");
        assert_eq!(t.kind, "high-error-rate");
        assert_eq!(t.threshold, 0.05);
        assert_eq!(t.duration.as_deref(), Some("2m"));
        assert_eq!(t.action.as_deref(), Some("gradual"));
        let t = parse_trigger("crash-loop:3").expect("valid");
        assert_eq!((t.duration, t.action), (None, None));
        assert!(parse_trigger("crash-loop").is_err());
        assert!(parse_trigger("crash-loop:many").is_err());
        assert!(parse_trigger(":3").is_err());
        assert!(parse_trigger("a:1:2m:gradual:x").is_err());
    }

    #[test]
    fn selectors_parse() {
        let s = parse_selector("site=a, env=prod").expect("valid");
        assert_eq!(s.get("site").map(String::as_str), Some("a"));
        assert_eq!(s.get("env").map(String::as_str), Some("prod"));
        assert!(parse_selector("site").is_err());
        assert!(parse_selector("=x").is_err());
        assert!(parse_selector(",").is_err());
    }
}
