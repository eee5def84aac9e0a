//! `oci-image` artifacts: an image tarball (`docker save` / `podman save`) loaded with
//! `<engine> load -i`, or a registry reference document ([`fleet_schema::image_ref`]) pulled
//! with `<engine> pull` (by digest when one is recorded, checked against `RepoDigests`,
//! bounded by [`PULL_TIMEOUT`]), into the first usable engine (or the one `runtime.type`
//! names). The
//! version directory keeps no tarball, only the engine and image id (`oci-image`) and `<app>`,
//! a launcher script the supervisor runs: it removes a leftover container of the same name,
//! runs the image in the foreground (`run --rm --pull never`, output to the app's log) and, on
//! SIGTERM, stops the container with `<engine> stop -t GRACE` before exiting. The previous
//! version's image stays loaded (rollback needs no download) until its directory is pruned.

use crate::install::tool::{run, write_launcher};
use crate::install::InstallError;
use crate::runtime::container::{self, Engine, Installed, IMAGE_FILE};
use fleet_schema::app_spec::RuntimeKind;
use fleet_schema::image_ref::{ImageSource, MAX_DOCUMENT_BYTES};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Longest time a `pull` may take (the engine retries failed layer downloads itself); after
/// it the pull is killed and the install fails, to be retried with the agent's backoff.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Runs `cmd` for at most `timeout`, returning its stdout; the error names `what` and carries
/// its stderr (or says it timed out).
fn run_bounded(cmd: &mut Command, what: &str, timeout: Duration) -> Result<String, InstallError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| InstallError::Package(format!("cannot run {what}: {e}")))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{what} did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Err(e) => break Err(format!("cannot wait for {what}: {e}")),
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Ok(s) if s.success() => Ok(out.trim().to_string()),
        Ok(s) => Err(InstallError::Package(format!(
            "{what} failed ({s}): {}",
            err.trim()
        ))),
        Err(e) => Err(InstallError::Package(e)),
    }
}

/// The `pull` command line for `source` with `engine`. Podman is told to use plain HTTP for a
/// registry on this device (`--tls-verify=false`), as Docker allows for 127.0.0.0/8 by
/// default; other insecure registries are configured in the engine itself.
pub fn pull_args(engine: Engine, source: &ImageSource) -> Result<Vec<String>, InstallError> {
    let bad = |e: fleet_schema::image_ref::ImageRefError| InstallError::Package(e.to_string());
    let reference = source.reference().map_err(bad)?;
    let mut args = vec!["pull".to_string()];
    if engine == Engine::Podman && reference.is_loopback_registry() {
        args.push("--tls-verify=false".into());
    }
    args.push(source.pull_target().map_err(bad)?);
    Ok(args)
}

/// True when `repo_digests` (`image inspect`'s `RepoDigests` as JSON) lists `digest`.
pub fn has_digest(repo_digests: &str, digest: &str) -> bool {
    serde_json::from_str::<Vec<String>>(repo_digests)
        .unwrap_or_default()
        .iter()
        .any(|d| d.rsplit_once('@').is_some_and(|(_, x)| x == digest))
}

/// Pulls the image a reference document names and returns the image to run (its id).
fn pull(engine: Engine, source: &ImageSource) -> Result<String, InstallError> {
    let args = pull_args(engine, source)?;
    let target = args.last().cloned().unwrap_or_default();
    let what = format!("{} pull {target}", engine.as_str());
    run_bounded(
        Command::new(engine.as_str()).args(&args),
        &what,
        PULL_TIMEOUT,
    )?;
    let inspect = |format: &str| {
        run_bounded(
            Command::new(engine.as_str()).args(["image", "inspect", "--format", format, &target]),
            "image inspect",
            Duration::from_secs(60),
        )
    };
    if let Some(digest) = &source.digest {
        let digests = inspect("{{json .RepoDigests}}")?;
        if !has_digest(&digests, digest) {
            return Err(InstallError::Package(format!(
                "the image pulled for {} has digests {digests}, not {digest} as recorded at push",
                source.image
            )));
        }
    }
    let id = inspect("{{.Id}}")?;
    Ok(if id.is_empty() { target } else { id })
}

/// Loads an image tarball and returns the image to run (its id).
fn load(engine: Engine, downloaded: &Path) -> Result<String, InstallError> {
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
    Ok(if id.is_empty() { reference } else { id })
}

/// The registry reference `downloaded` holds, or `None` for an image tarball.
fn reference_in(downloaded: &Path) -> Result<Option<ImageSource>, InstallError> {
    let io = |source| InstallError::Io {
        context: format!("cannot read {}", downloaded.display()),
        source,
    };
    let len = fs::metadata(downloaded).map_err(io)?.len();
    if len > MAX_DOCUMENT_BYTES {
        return Ok(None);
    }
    let bytes = fs::read(downloaded).map_err(io)?;
    ImageSource::from_document(&bytes)
        .transpose()
        .map_err(InstallError::Package)
}

/// Brings the image of `downloaded` into the engine (a tarball is loaded, a registry
/// reference document is pulled) and writes the record and launcher into `staging`. The
/// download is deleted afterwards.
pub fn stage_oci(
    app: &str,
    version: &str,
    downloaded: &Path,
    staging: &Path,
    runtime: &RuntimeKind,
) -> Result<(), InstallError> {
    let engine = container::choose(runtime).map_err(InstallError::Package)?;
    let image = match reference_in(downloaded)? {
        Some(source) => pull(engine, &source)?,
        None => load(engine, downloaded)?,
    };
    let installed = Installed { engine, image };
    let _ = fs::remove_file(downloaded);
    let io = |context: String| move |source| InstallError::Io { context, source };
    fs::write(staging.join(IMAGE_FILE), installed.to_record())
        .map_err(io(format!("cannot record the image of {app}@{version}")))?;
    write_launcher(
        &staging.join(app),
        &launcher_script(engine, &container::container_name(app, version)),
    )?;
    tracing::info!(app, version, image = %installed.image, engine = engine.as_str(), "image ready");
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
    fn pulls_pin_digests_and_trust_plain_http_only_on_loopback() {
        let d = format!("sha256:{}", "b".repeat(64));
        let local = ImageSource::new("127.0.0.1:5000/web:2", Some(&d)).expect("valid");
        assert_eq!(
            pull_args(Engine::Podman, &local).expect("args"),
            [
                "pull",
                "--tls-verify=false",
                &format!("127.0.0.1:5000/web@{d}")
            ]
        );
        assert_eq!(
            pull_args(Engine::Docker, &local).expect("args"),
            ["pull", &format!("127.0.0.1:5000/web@{d}")]
        );
        let remote = ImageSource::new("reg.example/web:2", None).expect("valid");
        assert_eq!(
            pull_args(Engine::Podman, &remote).expect("args"),
            ["pull", "reg.example/web:2"]
        );
        assert!(has_digest(&format!(r#"["127.0.0.1:5000/web@{d}"]"#), &d));
        assert!(!has_digest(r#"["127.0.0.1:5000/web@sha256:00"]"#, &d));
        assert!(!has_digest("null", &d));
    }

    #[test]
    fn a_reference_document_is_told_from_a_tarball() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = dir.path().join("doc");
        let source = ImageSource::new("reg.example/web:1", None).expect("valid");
        fs::write(&doc, source.document()).expect("write");
        assert_eq!(reference_in(&doc).expect("reads"), Some(source));
        let tar = dir.path().join("tar");
        fs::write(&tar, b"manifest.json\0\0\0").expect("write");
        assert_eq!(reference_in(&tar).expect("reads"), None);
        fs::write(&doc, b"{\"image\": 1}").expect("write");
        let e = reference_in(&doc).expect_err("malformed");
        assert!(e.to_string().contains("malformed"), "{e}");
    }

    #[test]
    fn bounded_commands_are_killed_and_report_stderr() {
        let e = run_bounded(
            Command::new("sleep").arg("5"),
            "sleep",
            Duration::from_millis(200),
        )
        .expect_err("timed out");
        assert!(e.to_string().contains("did not finish"), "{e}");
        let e = run_bounded(
            Command::new("sh").args(["-c", "echo nope >&2; exit 3"]),
            "sh",
            Duration::from_secs(5),
        )
        .expect_err("failed");
        assert!(e.to_string().contains("nope"), "{e}");
        let out = run_bounded(
            Command::new("echo").arg("hi"),
            "echo",
            Duration::from_secs(5),
        );
        assert_eq!(out.expect("ok"), "hi");
    }

    #[test]
    fn the_launcher_stops_its_container_on_sigterm() {
        let s = launcher_script(Engine::Podman, "fleet-web-1.0.0");
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("engine=podman\nname=fleet-web-1.0.0\n"));
        assert!(s.contains("trap '\"$engine\" stop -t \"$grace\" \"$name\""));
    }
}
