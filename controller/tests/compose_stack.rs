//! docker-compose.yml, checked without pulling images (the test machines cannot):
//! - [`compose_file_is_well_formed`] is this project's stand-in for `docker compose config`
//!   (the compose plugin is not installed here): it parses the file with a YAML parser, applies
//!   the `<<` merges and `${...}` interpolation as Compose does, and checks the keys, the
//!   references (depends_on, pid, named volumes, build targets in the Dockerfile) and that every
//!   bind-mounted file exists.
//! - [`compose_stack_runs_as_processes`] runs every service's exact command line and
//!   configuration files as plain processes: container paths are mapped to a temporary
//!   directory through each service's own volumes, and host names and ports to free local
//!   ports. The one-shot services' shell scripts run as written (certificates, enrollment token,
//!   Prometheus token, sample-app deployment), Mosquitto runs the shipped mosquitto.conf, fleetd
//!   keeps artifacts in s3s-fs, three agents run the sample app, and Prometheus scrapes fleetd
//!   with the shipped prometheus.yml. Grafana cannot run here: its provisioning is checked
//!   against the paths and ports of the other services.

mod support;

use serde_norway::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::external::require_tool;
use support::procs::workspace_bin;
use support::{free_port, get_as, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The compose file with its `<<` merges applied.
fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).expect("compose file");
    let mut doc: Value = serde_norway::from_str(&text).expect("docker-compose.yml is YAML");
    doc.apply_merge().expect("merge keys apply");
    doc
}

fn services(doc: &Value) -> Vec<(String, Value)> {
    doc["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service name").to_string(), v.clone()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other)
                    .expect("scalar")
                    .trim()
                    .to_string(),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => vec![],
    }
}

/// Compose's interpolation: `$$` is `$`, `${X}`, `${X:-default}`, `${X:?error}`.
fn interpolate(s: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let expr = &r[..end];
            let value = if let Some((name, default)) = expr.split_once(":-") {
                env.get(name)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .unwrap_or(default.into())
            } else if let Some((name, msg)) = expr.split_once(":?") {
                env.get(name)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .ok_or_else(|| format!("{name}: {msg}"))?
            } else {
                env.get(expr).cloned().unwrap_or_default()
            };
            out.push_str(&value);
            rest = &r[end + 1..];
        } else {
            return Err(format!("a bare $ in {s:?} (write $$ for the shell)"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

const SERVICE_KEYS: [&str; 12] = [
    "build",
    "image",
    "entrypoint",
    "command",
    "environment",
    "ports",
    "volumes",
    "depends_on",
    "restart",
    "pid",
    "healthcheck",
    "user",
];

#[test]
fn compose_file_is_well_formed() {
    let doc = compose();
    for k in doc.as_mapping().expect("top level").keys() {
        let k = k.as_str().expect("key");
        assert!(
            ["services", "volumes", "networks"].contains(&k) || k.starts_with("x-"),
            "unknown top-level key {k}"
        );
    }
    let svcs = services(&doc);
    let names: Vec<&str> = svcs.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "setup",
        "mosquitto",
        "s3",
        "fleetd",
        "enroll",
        "agent-1",
        "agent-2",
        "agent-3",
        "sample-app",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(&wanted), "service {wanted} is missing");
    }
    let volumes = doc["volumes"].as_mapping().expect("volumes");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let env: HashMap<String, String> = [("FLEETD_ADMIN_TOKEN".to_string(), "t".to_string())].into();
    for (name, s) in &svcs {
        for k in s.as_mapping().expect("service").keys() {
            let k = k.as_str().expect("key");
            assert!(SERVICE_KEYS.contains(&k), "{name}: unknown key {k}");
        }
        assert!(
            s.get("image").is_some() != s.get("build").is_some(),
            "{name}: exactly one of image and build"
        );
        if let Some(target) = s["build"]["target"].as_str() {
            assert!(
                dockerfile.contains(&format!(" AS {target}\n")),
                "{name}: build target {target} is not a Dockerfile stage"
            );
        }
        match &s["depends_on"] {
            Value::Sequence(deps) => {
                for d in deps {
                    let d = d.as_str().expect("name");
                    assert!(names.contains(&d), "{name} depends on unknown {d}");
                }
            }
            Value::Mapping(deps) => {
                for (d, cond) in deps {
                    let d = d.as_str().expect("name");
                    assert!(names.contains(&d), "{name} depends on unknown {d}");
                    let c = cond["condition"].as_str().expect("condition");
                    assert!(
                        [
                            "service_started",
                            "service_healthy",
                            "service_completed_successfully"
                        ]
                        .contains(&c),
                        "{name}: condition {c}"
                    );
                }
            }
            Value::Null => {}
            other => panic!("{name}: depends_on {other:?}"),
        }
        if let Some(pid) = s["pid"].as_str() {
            let other = pid.strip_prefix("service:").expect("pid: service:NAME");
            assert!(names.contains(&other), "{name}: pid of unknown {other}");
        }
        for v in strings(&s["volumes"]) {
            let src = v.split(':').next().expect("source");
            if let Some(rel) = src.strip_prefix("./") {
                // ./fleet-certs is made by the setup service.
                assert!(
                    rel == "fleet-certs" || repo().join(rel).exists(),
                    "{name}: bind source {src} does not exist"
                );
            } else {
                assert!(
                    volumes.contains_key(src),
                    "{name}: volume {src} is not declared"
                );
            }
        }
        for p in strings(&s["ports"]) {
            let (h, c) = p.split_once(':').expect("HOST:CONTAINER");
            assert!(
                h.parse::<u16>().is_ok() && c.parse::<u16>().is_ok(),
                "{name}: port {p}"
            );
        }
        for text in strings(&s["command"])
            .into_iter()
            .chain(strings(&s["entrypoint"]))
            .chain(
                s["environment"]
                    .as_mapping()
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, v)| v.as_str().map(str::to_string)),
            )
        {
            interpolate(&text, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    assert!(
        interpolate("${FLEETD_ADMIN_TOKEN:?export it}", &HashMap::new()).is_err(),
        "a missing admin token is refused as Compose would"
    );
}

/// The running processes, killed on drop (one-shots have ended by then).
struct Stack {
    root: tempfile::TempDir,
    children: Vec<(String, Child)>,
    env: HashMap<String, String>,
    /// Compose's (from, to) network replacements.
    net: Vec<(String, String)>,
    /// Where the image's binaries (/usr/local/bin) are here.
    bins: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Replaces container paths with host paths at path boundaries, longest first, in one pass
/// (a host path is never rewritten again).
fn map_paths(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let before = |c: char| c.is_whitespace() || "=:\"'>".contains(c);
    let after = |c: Option<char>| c.is_none_or(|c| c.is_whitespace() || "/\"';:".contains(c));
    let mut out = String::new();
    let mut i = 0;
    'outer: while i < s.len() {
        let prev = s[..i].chars().next_back();
        if prev.is_none_or(before) {
            for (c, h) in mounts {
                if s[i..].starts_with(c.as_str()) && after(s[i + c.len()..].chars().next()) {
                    out.push_str(&h.to_string_lossy());
                    i += c.len();
                    continue 'outer;
                }
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

impl Stack {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// The service's volumes as (container path, host path), longest first. Named volumes live
    /// under `volumes/`, ./fleet-certs under the root, repository files are copied with the
    /// service's own paths and host names rewritten in them.
    fn mounts(&self, svc: &Value) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for v in strings(&svc["volumes"]) {
            let mut parts = v.split(':');
            let (src, dst) = (parts.next().expect("src"), parts.next().expect("dst"));
            let host = match src.strip_prefix("./") {
                Some("fleet-certs") => self.path("fleet-certs"),
                Some(rel) => self.path("binds").join(rel),
                None => self.path("volumes").join(src),
            };
            out.push((dst.to_string(), host));
        }
        if svc.get("build").is_some() {
            out.push(("/usr/local/bin".into(), self.bins.clone()));
        }
        out.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        for (_, h) in &out {
            if !h.starts_with(self.path("binds")) && *h != self.bins {
                std::fs::create_dir_all(h).expect("volume dir");
                open_up(h);
            }
        }
        for v in strings(&svc["volumes"]) {
            if let Some(rel) = v.split(':').next().and_then(|s| s.strip_prefix("./")) {
                if rel != "fleet-certs" {
                    self.copy_rewritten(&repo().join(rel), &self.path("binds").join(rel), &out);
                }
            }
        }
        out
    }

    fn copy_rewritten(&self, from: &Path, to: &Path, mounts: &[(String, PathBuf)]) {
        if from.is_dir() {
            std::fs::create_dir_all(to).expect("bind dir");
            open_up(to);
            for e in std::fs::read_dir(from).expect("read bind dir") {
                let e = e.expect("entry");
                self.copy_rewritten(&e.path(), &to.join(e.file_name()), mounts);
            }
        } else {
            std::fs::create_dir_all(to.parent().expect("parent")).expect("bind parent");
            let text = std::fs::read_to_string(from).expect("bind file is text");
            std::fs::write(to, map_paths(&self.rewrite_net(&text), mounts)).expect("bind copy");
            open_up(to);
        }
    }

    fn rewrite_net(&self, s: &str) -> String {
        self.net
            .iter()
            .fold(s.to_string(), |t, (from, to)| t.replace(from, to))
    }

    /// Starts service `name` (its entrypoint and command, mapped) and returns its pid.
    fn start(&mut self, doc: &Value, name: &str, program: Option<&Path>) -> u32 {
        let svc = &doc["services"][name];
        let mounts = self.mounts(svc);
        let fix = |s: &str| {
            map_paths(
                &self.rewrite_net(&interpolate(s, &self.env).expect("interpolates")),
                &mounts,
            )
        };
        let mut argv: Vec<String> = strings(&svc["entrypoint"]).iter().map(|s| fix(s)).collect();
        if argv.is_empty() && svc.get("build").is_some() {
            argv.push("fleetd".into()); // the image's ENTRYPOINT
        }
        argv.extend(strings(&svc["command"]).iter().map(|s| fix(s)));
        let exe = match program {
            Some(p) => p.to_path_buf(),
            None if argv[0] == "sh" => PathBuf::from("/bin/sh"),
            None => workspace_bin(&argv[0]),
        };
        let skip = usize::from(program.is_none() || argv[0] == "mosquitto");
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).expect("log");
        let mut cmd = Command::new(exe);
        cmd.args(&argv[skip..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .env("PATH", self.env["PATH"].clone());
        if let Some(m) = svc["environment"].as_mapping() {
            for (k, v) in m {
                let v = v.as_str().map(&fix).unwrap_or_default();
                cmd.env(k.as_str().expect("env name"), v);
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pid = child.id();
        self.children.push((name.to_string(), child));
        pid
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits for one-shot `name` to exit 0.
    fn finish(&mut self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .expect("started");
        loop {
            if let Some(status) = self.children[i].1.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "{name} failed ({status}):\n{}",
                    self.all_logs()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not finish within {timeout:?}:\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn all_logs(&self) -> String {
        self.children
            .iter()
            .map(|(n, _)| format!("--- {n} ---\n{}", self.log(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Mosquitto drops to its own user when started as root: it must read and write its files.
fn open_up(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if p.is_dir() { 0o777 } else { 0o644 };
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

#[test]
fn compose_stack_runs_as_processes() {
    let (Some(mosquitto), Some(prometheus), Some(s3s)) = (
        require_tool("mosquitto", &["/usr/sbin/mosquitto"]),
        require_tool("prometheus", &["/usr/bin/prometheus"]),
        require_tool("s3s-fs", &[]).or_else(|| {
            let p =
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/s3s-fs");
            p.is_file().then_some(p)
        }),
    ) else {
        return;
    };
    let doc = compose();
    let (http, mqtt, s3, prom) = (free_port(), free_port(), free_port(), free_port());
    let bins = workspace_bin("fleetctl")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}:{}",
        bins.display(),
        s3s.parent().expect("dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let token = Command::new(workspace_bin("fleetd"))
        .arg("gen-token")
        .output()
        .expect("gen-token");
    let admin = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let mut stack = Stack {
        root: tempfile::tempdir().expect("root"),
        children: vec![],
        env: [
            ("FLEETD_ADMIN_TOKEN".to_string(), admin.clone()),
            ("PATH".to_string(), path),
        ]
        .into(),
        net: vec![
            ("fleetd:7878".into(), format!("localhost:{http}")),
            ("0.0.0.0:7878".into(), format!("127.0.0.1:{http}")),
            ("mosquitto:8883".into(), format!("localhost:{mqtt}")),
            ("listener 8883".into(), format!("listener {mqtt}")),
            ("http://s3:9000".into(), format!("http://127.0.0.1:{s3}")),
            ("--port 9000".into(), format!("--port {s3}")),
            ("0.0.0.0:9090".into(), format!("127.0.0.1:{prom}")),
        ],
        bins,
    };
    open_up(stack.root.path());

    stack.start(&doc, "setup", None);
    stack.finish("setup", Duration::from_secs(60));
    open_up(&stack.path("fleet-certs"));
    let mosquitto_pid = stack.start(&doc, "mosquitto", Some(&mosquitto));
    stack
        .net
        .push(("kill -HUP 1".into(), format!("kill -HUP {mosquitto_pid}")));
    stack.start(&doc, "s3", None);
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            s3
        ))
        .is_ok()),
        "s3 listens:\n{}",
        stack.all_logs()
    );
    stack.start(&doc, "fleetd", None);
    stack.start(&doc, "enroll", None);
    stack.finish("enroll", Duration::from_secs(60));
    stack.start(&doc, "prometheus-token", None);
    stack.finish("prometheus-token", Duration::from_secs(60));
    for a in ["agent-1", "agent-2", "agent-3"] {
        stack.start(&doc, a, None);
    }
    stack.start(&doc, "sample-app", None);
    stack.finish("sample-app", Duration::from_secs(180));
    stack.start(&doc, "prometheus", Some(&prometheus));

    // Prometheus scrapes fleetd with the read token and sees the three devices' app.
    let query = |q: &str| {
        let url = format!(
            "http://127.0.0.1:{prom}/api/v1/query?query={}",
            q.replace('"', "%22")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace(' ', "%20")
        );
        if std::net::TcpStream::connect(("127.0.0.1", prom)).is_err() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&get_as(&url, None).1).unwrap_or_default()
    };
    let mut last = serde_json::Value::Null;
    let scraped = wait_until(Duration::from_secs(90), || {
        last = query(
            r#"count(fleet_app_memory_bytes{app="sample-app"}) and on() (up{job="fleetd"} == 1)"#,
        );
        last["data"]["result"][0]["value"][1] == "3"
    });
    assert!(
        scraped,
        "Prometheus never saw 3 sample apps: {last}\n{}",
        stack.all_logs()
    );

    // Grafana: its provisioning points at the Prometheus service and the mounted dashboards.
    let grafana = &doc["services"]["grafana"];
    let mounts = strings(&grafana["volumes"]);
    let dash_mount = mounts
        .iter()
        .find(|v| v.starts_with("./deploy/grafana/dashboards:"))
        .and_then(|v| v.split(':').nth(1))
        .expect("dashboards mounted");
    let provider: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/provisioning/dashboards/fleetd.yml"))
            .expect("provider"),
    )
    .expect("provider YAML");
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some(dash_mount)
    );
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .expect("home dashboard");
    let rel = home
        .strip_prefix(dash_mount)
        .expect("home dashboard is a mounted one");
    assert!(repo()
        .join("deploy/grafana/dashboards")
        .join(rel.trim_start_matches('/'))
        .is_file());
    let ds: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/provisioning/datasources/fleetd.yml"))
            .expect("datasource"),
    )
    .expect("datasource YAML");
    let prom_cmd = strings(&doc["services"]["prometheus"]["command"]).join(" ");
    let url = ds["datasources"][0]["url"].as_str().expect("url");
    let port = url.rsplit(':').next().expect("port");
    assert!(
        url.starts_with("http://prometheus:") && prom_cmd.contains(&format!(":{port}")),
        "the datasource {url} is where the prometheus service listens ({prom_cmd})"
    );
    for d in std::fs::read_dir(repo().join("deploy/grafana/dashboards")).expect("dashboards") {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.expect("entry").path()).expect("read"))
                .expect("dashboard JSON");
        let uid = &ds["datasources"][0]["uid"];
        for p in d["panels"].as_array().expect("panels") {
            assert_eq!(
                p["datasource"]["uid"].as_str(),
                uid.as_str(),
                "{}",
                p["title"]
            );
        }
    }
}
