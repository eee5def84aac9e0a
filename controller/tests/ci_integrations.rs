//! The shipped CI integrations run as their runners would, against a real fleetd and agent:
//! the GitHub composite actions (`integrations/github/*/action.yml`: inputs mapped to the step's
//! `INPUT_*` environment, `GITHUB_OUTPUT` and `GITHUB_ENV` files, the action's outputs resolved
//! from the step's), the GitLab CI template's job scripts and the Jenkinsfile's `sh` block.
//! Checks outputs, exit codes and what fleetd ends up with.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::agent::Agent;
use support::cli::fleetctl;
use support::fleet::{sample_app_bytes, wait_online, APP};
use support::procs::workspace_bin;
use support::Fleetd;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read YAML");
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What one action run left.
struct ActionRun {
    code: i32,
    outputs: BTreeMap<String, String>,
    github_env: BTreeMap<String, String>,
    log: String,
}

fn key_values(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs a composite action's steps as the runner does: `${{ inputs.* }}` from `inputs` or the
/// defaults (a missing required input fails), `${{ github.action_path }}`, `shell: bash` as
/// `bash --noprofile --norc -eo pipefail`, then the action's outputs from the steps' outputs.
fn run_action(name: &str, inputs: &[(&str, &str)], env: &BTreeMap<String, String>) -> ActionRun {
    let dir = repo().join("integrations/github").join(name);
    let action = yaml(&dir.join("action.yml"));
    let mut values = BTreeMap::new();
    for (input, def) in action["inputs"].as_object().expect("inputs") {
        let given = inputs
            .iter()
            .find(|(k, _)| k == input)
            .map(|(_, v)| v.to_string());
        let value = given.or_else(|| def["default"].as_str().map(str::to_string));
        if def["required"] == true {
            assert!(value.is_some(), "{name}: required input {input} not given");
        }
        values.insert(input.clone(), value.unwrap_or_default());
    }
    for (k, _) in inputs {
        assert!(values.contains_key(*k), "{name} has no input {k}");
    }
    let subst = |text: &str| -> String {
        let mut out = text.replace("${{ github.action_path }}", &dir.to_string_lossy());
        for (k, v) in &values {
            out = out.replace(&format!("${{{{ inputs.{k} }}}}"), v);
        }
        assert!(!out.contains("${{"), "unresolved expression in {out:?}");
        out
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let github_env = tmp.path().join("github_env");
    let mut step_outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut code = 0;
    let mut log = String::new();
    for step in action["runs"]["steps"].as_array().expect("steps") {
        assert_eq!(step["shell"], "bash");
        let id = step["id"].as_str().expect("step id");
        let script = tmp.path().join(format!("{id}.sh"));
        std::fs::write(&script, subst(step["run"].as_str().expect("run"))).expect("script");
        let output = tmp.path().join(format!("{id}.out"));
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&script)
            .current_dir(tmp.path())
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_ENV", &github_env)
            .envs(env);
        for (k, v) in step["env"].as_object().into_iter().flatten() {
            cmd.env(k, subst(v.as_str().expect("env value")));
        }
        let out = cmd.output().expect("run bash");
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        step_outputs.insert(id.to_string(), key_values(&output));
        code = out.status.code().unwrap_or(-1);
        if code != 0 {
            break;
        }
    }
    let mut outputs = BTreeMap::new();
    for (k, def) in action["outputs"].as_object().expect("outputs") {
        let expr = def["value"].as_str().expect("value");
        let inner = expr
            .trim_start_matches("${{ steps.")
            .trim_end_matches(" }}");
        let (step, rest) = inner.split_once(".outputs.").expect("steps.X.outputs.Y");
        if let Some(v) = step_outputs.get(step).and_then(|o| o.get(rest)) {
            outputs.insert(k.clone(), v.clone());
        }
    }
    ActionRun {
        code,
        outputs,
        github_env: key_values(&github_env),
        log,
    }
}

fn failing_app(dir: &Path) -> String {
    let path = dir.join("broken-app");
    std::fs::write(&path, "#!/bin/sh\necho broken >&2\nexit 1\n").expect("write");
    path.to_string_lossy().into_owned()
}

/// fleetd with one agent labelled `site=<site>`, the group `production` of that site (made with
/// `fleetctl group create`), and a deploy token limited to the sample app.
fn fleet_with_production_group(site: &str) -> (Fleetd, Agent, String) {
    let f = Fleetd::start();
    let agent = Agent::start(&format!("{site}-1"), &f.access(), &[("site", site)]);
    wait_online(&f, &[&agent]);
    let selector = format!("site={site}");
    let (ok, out) = fleetctl(
        &f,
        &["group", "create", "production", "--selector", &selector],
    );
    assert!(ok, "{out}");
    let token = f.create_token(&format!("ci-{site}"), &["deploy"], &[APP]);
    (f, agent, token)
}

#[test]
fn github_actions_upload_and_deploy_with_outputs_and_exit_codes() {
    let (f, _agent, token) = fleet_with_production_group("gh");
    let fleetctl_bin = workspace_bin("fleetctl").to_string_lossy().into_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("app");
    std::fs::write(&file, sample_app_bytes("1.0.0")).expect("write");
    let key = dir.path().join("ci");
    let (ok, out) = fleetctl(&f, &["keygen", "--out", &key.to_string_lossy()]);
    assert!(ok, "{out}");
    let key_text = std::fs::read_to_string(dir.path().join("ci.key")).expect("key");
    let endpoint = f.url("");
    let no_env = BTreeMap::new();

    let up = run_action(
        "upload-artifact",
        &[
            ("endpoint", &endpoint),
            ("api_key", &token),
            ("name", APP),
            ("version", "v1.0.0"),
            ("file", &file.to_string_lossy()),
            ("platforms", "linux/amd64, linux/arm64"),
            ("signing_key", &key_text),
            ("fleetctl", &fleetctl_bin),
        ],
        &no_env,
    );
    assert_eq!(up.code, 0, "{}", up.log);
    assert_eq!(up.outputs["artifact_id"], format!("{APP}@1.0.0"));
    assert_eq!(up.outputs["sha256"].len(), 64, "{:?}", up.outputs);
    let (_, meta) = support::get(&f.url(&format!("/api/v1/artifacts/{APP}/1.0.0")));
    let meta = support::parse_json(&meta);
    assert_eq!(
        meta["platforms"].as_array().map(Vec::len),
        Some(2),
        "{meta}"
    );
    assert_eq!(
        meta["signatures"].as_array().map(Vec::len),
        Some(1),
        "{meta}"
    );

    // The seed's deploy step: no endpoint or api_key, they come from the upload step's env.
    let deploy = run_action(
        "deploy",
        &[
            ("application", APP),
            ("version", "v1.0.0"),
            ("strategy", "canary"),
            ("target_group", "production"),
            ("canary_percentage", "50"),
            ("increment", "50"),
            ("interval", "1s"),
            ("timeout", "120"),
            ("fleetctl", &fleetctl_bin),
        ],
        &up.github_env,
    );
    assert_eq!(deploy.code, 0, "{}", deploy.log);
    assert_eq!(deploy.outputs["state"], "succeeded", "{}", deploy.log);
    assert_eq!(deploy.outputs["exit_code"], "0");
    let id = deploy.outputs["deployment_id"].clone();
    let (status, view) = support::get(&f.url(&format!("/api/v1/deployments/{id}")));
    assert_eq!(status, 200, "deployment_id {id:?}: {view}");
    assert_eq!(support::parse_json(&view)["state"], "succeeded");
    assert!(
        deploy.log.contains("\"event\":\"progress\""),
        "{}",
        deploy.log
    );

    // A version that cannot start: the step fails with the outcome's code.
    let broken = failing_app(dir.path());
    let up2 = run_action(
        "upload-artifact",
        &[
            ("endpoint", &endpoint),
            ("api_key", &token),
            ("name", APP),
            ("version", "2.0.0"),
            ("file", &broken),
            ("fleetctl", &fleetctl_bin),
        ],
        &no_env,
    );
    assert_eq!(up2.code, 0, "{}", up2.log);
    let bad = run_action(
        "deploy",
        &[
            ("application", APP),
            ("version", "2.0.0"),
            ("selector", "site=gh"),
            ("timeout", "120"),
            ("endpoint", &endpoint),
            ("api_key", &token),
            ("fleetctl", &fleetctl_bin),
        ],
        &no_env,
    );
    let expected = match bad.outputs.get("state").map(String::as_str) {
        Some("failed") => 3,
        Some("rolled-back") => 4,
        other => panic!("state {other:?}; log:\n{}", bad.log),
    };
    assert_eq!(bad.code, expected, "{}", bad.log);
    assert_eq!(bad.outputs["exit_code"], expected.to_string());
    assert!(!bad.outputs["deployment_id"].is_empty());

    // A timeout is its own code (6), and the deployment goes on in fleetd.
    let slow = run_action(
        "deploy",
        &[
            ("application", APP),
            ("version", "1.0.0"),
            ("strategy", "canary"),
            ("devices", "gh-1"),
            ("canary_percentage", "50"),
            ("interval", "10m"),
            ("timeout", "0"),
            ("endpoint", &endpoint),
            ("api_key", &token),
            ("fleetctl", &fleetctl_bin),
        ],
        &no_env,
    );
    assert_eq!(slow.code, 6, "{}", slow.log);
    assert_eq!(slow.outputs["state"], "timed-out");
}

/// The lines of a GitLab job's `before_script` and `script` (with `extends` followed).
fn gitlab_job(doc: &Value, job: &str) -> Vec<String> {
    let j = &doc[job];
    let mut lines = match j["extends"].as_str() {
        Some(parent) => gitlab_job(doc, parent),
        None => Vec::new(),
    };
    for part in ["before_script", "script"] {
        for l in j[part].as_array().into_iter().flatten() {
            lines.push(l.as_str().expect("script line").to_string());
        }
    }
    lines
}

fn run_shell(script: &str, env: &BTreeMap<String, String>, cwd: &Path) -> (i32, String) {
    let out = Command::new("bash")
        .args(["-eo", "pipefail", "-c", script])
        .current_dir(cwd)
        .envs(env)
        .output()
        .expect("run bash");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), log)
}

#[test]
fn gitlab_template_and_jenkinsfile_run_against_fleetd() {
    let (f, agent, token) = fleet_with_production_group("gl");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("app"), sample_app_bytes("1.0.0")).expect("write");
    let bin_dir = workspace_bin("fleetctl")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // GitLab: the template's global variables, then the job's, as CI/CD variables.
    let doc = yaml(&repo().join("integrations/gitlab/fleetd.gitlab-ci.yml"));
    let mut env: BTreeMap<String, String> = doc["variables"]
        .as_object()
        .expect("variables")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    env.insert("PATH".into(), path.clone());
    env.insert("FLEETD_ENDPOINT".into(), f.url(""));
    env.insert("FLEETD_API_KEY".into(), token.clone());
    env.insert("FLEETD_APP".into(), APP.into());
    env.insert("FLEETD_VERSION".into(), "v1.0.0".into());
    env.insert("FLEETD_FILE".into(), "app".into());
    env.insert("FLEETD_PLATFORMS".into(), "linux/amd64".into());
    env.insert("FLEETD_TARGET_GROUP".into(), "production".into());
    env.insert("FLEETD_SELECTOR".into(), "site=gl".into());
    let upload = gitlab_job(&doc, ".fleetd-upload").join("\n");
    let (code, log) = run_shell(&upload, &env, dir.path());
    assert_eq!(code, 0, "{log}");
    let deploy = gitlab_job(&doc, ".fleetd-deploy").join("\n");
    let (code, log) = run_shell(&deploy, &env, dir.path());
    assert_eq!(code, 0, "{log}");
    let lines = std::fs::read_to_string(dir.path().join("fleetd-deploy.jsonl")).expect("jsonl");
    let last = support::parse_json(lines.lines().last().expect("a line"));
    assert_eq!(last["event"], "result", "{lines}");
    assert_eq!(last["outcome"], "succeeded", "{lines}");
    assert_eq!(
        last["view"]["devices"].as_object().map(|d| d.len()),
        Some(1)
    );

    // Jenkins: the Jenkinsfile's sh block as is, with the credential as FLEET_TOKEN.
    let jenkinsfile =
        std::fs::read_to_string(repo().join("integrations/jenkins/Jenkinsfile")).expect("read");
    let block = jenkinsfile
        .split("// BEGIN fleetd-sh")
        .nth(1)
        .and_then(|rest| rest.split("sh '''").nth(1))
        .and_then(|rest| rest.split("'''").next())
        .expect("the sh block");
    std::fs::write(dir.path().join("app2"), sample_app_bytes("1.1.0")).expect("write");
    let jenv: BTreeMap<String, String> = [
        ("PATH", path.as_str()),
        ("FLEET_SERVER", &f.url("")),
        ("FLEET_TOKEN", &token),
        ("FLEETD_APP", APP),
        ("FLEETD_FILE", "app2"),
        ("FLEETD_PLATFORMS", "linux/amd64"),
        ("FLEETD_TARGET_GROUP", "production"),
        ("TAG_NAME", "v1.1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let script = dir.path().join("jenkins.sh");
    std::fs::write(&script, block.trim_start()).expect("write");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(dir.path())
        .env_clear()
        .envs(&jenv)
        .output()
        .expect("run");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(log.contains("\"outcome\":\"succeeded\""), "{log}");
    let (_, body) = support::get(&f.url(&format!("/api/v1/devices/{}", agent.device_id)));
    assert!(body.contains("1.1.0"), "{body}");

    // An operator aborts while the pipeline waits: fleetctl exits 5 with a result line.
    let broken = failing_app(dir.path());
    let (ok, out) = fleetctl(
        &f,
        &[
            "artifact",
            "push",
            &broken,
            "--name",
            APP,
            "--version",
            "3.0.0",
        ],
    );
    assert!(ok, "{out}");
    let mut waiting = Command::new(workspace_bin("fleetctl"))
        .env("FLEET_SERVER", f.url(""))
        .env("FLEET_TOKEN", &token)
        .args([
            "--output",
            "json",
            "deploy",
            "--app",
            APP,
            "--version",
            "3.0.0",
        ])
        .args(["--group", "production", "--wait", "--timeout", "120"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn fleetctl");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        waiting.stdout.take().expect("stdout"),
    ));
    let created = support::parse_json(&lines.next().expect("a line").expect("read"));
    assert_eq!(created["event"], "created", "{created}");
    let id = created["deployment"].as_str().expect("id").to_string();
    let (ok, out) = fleetctl(&f, &["deploy", "abort", &id]);
    assert!(ok, "{out}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = waiting.wait().expect("fleetctl exits");
    assert_eq!(status.code(), Some(5), "{rest:?}");
    let last = support::parse_json(rest.last().expect("a result line"));
    assert_eq!(
        (last["event"].as_str(), last["outcome"].as_str()),
        (Some("result"), Some("aborted")),
        "{rest:?}"
    );

    // The group the pipelines used: list, show, delete; then it is gone.
    let (ok, out) = fleetctl(&f, &["group", "list"]);
    assert!(
        ok && out.contains("production") && out.contains("site=gl"),
        "{out}"
    );
    let (ok, out) = fleetctl(&f, &["--output", "json", "group", "show", "production"]);
    assert!(ok, "{out}");
    assert_eq!(support::parse_json(&out)["selector"]["site"], "gl", "{out}");
    let (ok, out) = fleetctl(&f, &["group", "delete", "production"]);
    assert!(ok && out.contains("group production deleted"), "{out}");
    let (ok, out) = fleetctl(&f, &["group", "show", "production"]);
    assert!(!ok && out.contains("does not exist"), "{out}");
    let (ok, out) = fleetctl(&f, &["group", "create", "empty"]);
    assert!(!ok && out.contains("--selector"), "{out}");
}
