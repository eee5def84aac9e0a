//! `fleetctl apply -f app.yaml`: registers an application version from its manifest. The file
//! is checked locally first (same parser as the controller) so a typo is reported before any
//! network call, naming the field.

use super::print_json;
use crate::api::ApiClient;
use crate::{Global, Output};
use anyhow::{Context, Result};
use fleet_schema::api::ApplicationView;
use std::path::Path;

/// Validates and uploads the manifest.
pub fn apply(g: &Global, file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let json = file.extension().is_some_and(|e| e == "json");
    let parsed = if json {
        fleet_schema::manifest::parse_json(&text)
    } else {
        fleet_schema::manifest::parse_yaml(&text)
    };
    parsed.with_context(|| format!("{} is not a valid application manifest", file.display()))?;
    let api = ApiClient::new(g)?;
    let ct = if json {
        "application/json"
    } else {
        "application/yaml"
    };
    let bytes = text.as_bytes();
    let view: ApplicationView = api.post_stream(
        "/api/v1/applications",
        ct,
        bytes.len() as u64,
        &mut &bytes[..],
    )?;
    match g.output {
        Output::Json => print_json(&view),
        Output::Table => {
            let a = &view.application;
            let runs: Vec<String> = a
                .components()
                .iter()
                .map(|c| {
                    format!(
                        "{}@{} ({})",
                        c.artifact.name, c.artifact.version, c.artifact.kind
                    )
                })
                .collect();
            println!(
                "application {}@{} registered ({} artifact(s); runs {})",
                a.name,
                a.version,
                a.artifacts.len(),
                runs.join(", ")
            );
            Ok(())
        }
    }
}
