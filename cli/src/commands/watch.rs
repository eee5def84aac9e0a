//! `fleetctl deploy watch|pause|resume|abort|rollback|promote ID`: the rollout's lifecycle
//! from the command line, with live progress bars per step.

use super::print_json;
use crate::api::ApiClient;
use crate::{Global, Output};
use anyhow::Result;
use fleet_schema::api::DeploymentView;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Sends an operator action and prints the deployment afterwards.
pub fn action(g: &Global, id: &str, action: &str, gradual: bool) -> Result<()> {
    let api = ApiClient::new(g)?;
    let q = if gradual { "?mode=gradual" } else { "" };
    let view: DeploymentView = api.post_json(
        &format!("/api/v1/deployments/{id}/{action}{q}"),
        &serde_json::json!({}),
    )?;
    match g.output {
        Output::Json => print_json(&view),
        Output::Table => {
            println!("deployment {} is now {}", view.id, view.state);
            print_rollout(&view);
            Ok(())
        }
    }
}

/// One line per step, the trigger that fired, and late joiners that cannot run the release.
pub fn print_rollout(view: &DeploymentView) {
    let Some(r) = &view.rollout else { return };
    for (i, s) in r.steps.iter().enumerate() {
        println!(
            "step {}/{}  {:<12} {}/{} healthy, {} failed",
            i + 1,
            r.steps.len(),
            s.state.as_str(),
            s.healthy,
            s.devices.len(),
            s.failed
        );
    }
    if let Some(t) = &r.trigger {
        println!(
            "trigger     {} ({}, {}): {}",
            t.kind, t.action, t.observed, t.detail
        );
    }
    for (device, why) in &r.ineligible {
        println!("ineligible  {device}: {why}");
    }
}

/// Follows a deployment with one progress bar per step until it stops changing.
pub fn watch(g: &Global, id: &str) -> Result<()> {
    let api = ApiClient::new(g)?;
    let path = format!("/api/v1/deployments/{id}");
    let multi = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: Vec<ProgressBar> = Vec::new();
    let mut last_line = String::new();
    let view = loop {
        let view: DeploymentView = api.get(&path)?;
        let steps = view
            .rollout
            .as_ref()
            .map(|r| r.steps.as_slice())
            .unwrap_or(&[]);
        while bars.len() < steps.len() {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(style.clone());
            bar.set_prefix(format!("step {}", bars.len() + 1));
            bars.push(bar);
        }
        for (bar, s) in bars.iter().zip(steps) {
            bar.set_length(s.devices.len() as u64);
            bar.set_position(s.healthy as u64);
            bar.set_message(format!("{} · {} failed", s.state, s.failed));
        }
        let line = format!("{}: {}", view.id, view.state);
        if line != last_line && !std::io::stderr().is_terminal() && g.output == Output::Table {
            println!("{line}");
        }
        last_line = line;
        if view.state.outcome().is_some() {
            break view;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for b in &bars {
        b.finish();
    }
    match g.output {
        Output::Json => print_json(&view),
        Output::Table => {
            println!("deployment {} {}", view.id, view.state);
            print_rollout(&view);
            Ok(())
        }
    }
}
