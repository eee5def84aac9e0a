//! `oci-image` artifacts: an image tarball (`docker save` / `podman save`) loaded with
//! `<engine> load -i` into the first usable engine (or the one `runtime.type` names). The
//! version directory keeps no tarball, only the engine and image id (`oci-image`) and `<app>`,
//! a launcher script the supervisor runs: it removes a leftover container of the same name,
//! runs the image in the foreground (`run --rm --pull never`, output to the app's log) and, on
//! SIGTERM, stops the container with `<engine> stop -t GRACE` before exiting. The previous
//! version's image stays loaded (rollback needs no download) until its directory is pruned.

use crate::container::{self, Engine, Installed, IMAGE_FILE};
use crate::install::InstallError;
use fleet_schema::app_spec::RuntimeKind;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn run(cmd: &mut Command, what: &str) -> Result<String, InstallError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InstallError::Package(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        return Err(InstallError::Package(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The image named by `load`'s output ("Loaded image: x", "Loaded image ID: sha256:..",
/// podman's "Loaded image(s): x"); the last one when several were loaded.
pub fn loaded_reference(output: &str) -> Option<String> {
    output
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(k, _)| k.starts_with("Loaded image"))
        .filter_map(|(_, v)| v.split(',').next_back().map(|s| s.trim().to_string()))
        .rfind(|s| !s.is_empty())
}

/// The launcher script for `engine` and container `name` (see the module documentation).
fn launcher_script(engine: Engine, name: &str) -> String {
    format!(
        r#"#!/bin/sh
# Written by fleet-agent: runs this version's image as container {name} in the foreground.
# Arguments: STOP_GRACE_SECONDS, then run options, image and command (given by the agent).
engine={engine}
name={name}
grace=$1
shift
"$engine" rm -f "$name" >/dev/null 2>&1
trap '"$engine" stop -t "$grace" "$name" >/dev/null 2>&1' TERM INT
"$engine" run --rm --pull never --sig-proxy=false --name "$name" "$@" &
child=$!
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break
done
exit "$status"
"#,
        engine = engine.as_str(),
    )
}

/// Loads the image tarball `downloaded` and writes the record and launcher into `staging`.
/// The tarball is deleted once loaded.
pub fn stage_oci(
    app: &str,
    version: &str,
    downloaded: &Path,
    staging: &Path,
    runtime: &RuntimeKind,
) -> Result<(), InstallError> {
    let engine = container::choose(runtime).map_err(InstallError::Package)?;
    let what = format!("{} load", engine.as_str());
    let out = run(
        Command::new(engine.as_str())
            .args(["load", "-i"])
            .arg(downloaded),
        &what,
    )?;
    let reference = loaded_reference(&out).ok_or_else(|| {
        InstallError::Package(format!(
            "{what} did not name the loaded image (is the artifact an image tarball?): {out}"
        ))
    })?;
    // Run by id, so another version re-tagging the same name cannot change this one.
    let id = run(
        Command::new(engine.as_str()).args(["image", "inspect", "--format", "{{.Id}}", &reference]),
        "image inspect",
    )?;
    let installed = Installed {
        engine,
        image: if id.is_empty() { reference } else { id },
    };
    let _ = fs::remove_file(downloaded);
    let io = |context: String| move |source| InstallError::Io { context, source };
    fs::write(staging.join(IMAGE_FILE), installed.to_record())
        .map_err(io(format!("cannot record the image of {app}@{version}")))?;
    let launcher = staging.join(app);
    fs::write(
        &launcher,
        launcher_script(engine, &container::container_name(app, version)),
    )
    .and_then(|()| fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)))
    .map_err(io(format!("cannot write launcher {}", launcher.display())))?;
    tracing::info!(app, version, image = %installed.image, engine = engine.as_str(), "image loaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_output_names_the_image() {
        assert_eq!(
            loaded_reference("Loaded image: fleet-test:1\n").as_deref(),
            Some("fleet-test:1")
        );
        assert_eq!(
            loaded_reference("Getting image source signatures\nLoaded image(s): localhost/a:1\n")
                .as_deref(),
            Some("localhost/a:1")
        );
        assert_eq!(
            loaded_reference("Loaded image ID: sha256:abc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(loaded_reference("open x: no such file"), None);
        assert_eq!(loaded_reference(""), None);
    }

    #[test]
    fn the_launcher_stops_its_container_on_sigterm() {
        let s = launcher_script(Engine::Podman, "fleet-web-1.0.0");
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("engine=podman\nname=fleet-web-1.0.0\n"));
        assert!(s.contains("trap '\"$engine\" stop -t \"$grace\" \"$name\""));
    }
}
