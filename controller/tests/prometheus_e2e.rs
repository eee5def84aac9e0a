//! The metrics bridge against a real Prometheus (Debian's `prometheus`, installed by `.ci/run`):
//! fleetd over HTTPS, two real agents running the sample app (which posts its own request
//! counters to the agent), and Prometheus started with the shipped scrape configuration
//! (`deploy/prometheus/prometheus.yml`: only the target, file paths and interval are changed),
//! scraping `/metrics` with a read-scoped token. Prometheus must come to hold an app's memory
//! series with a value the agent put on the bus and the app's request counter with exactly the
//! number of requests the test made. Then every panel query of the shipped Grafana dashboards
//! (`deploy/grafana/dashboards/*.json`) must parse on that Prometheus and every metric it names
//! must exist there.

mod support;

use fleet_schema::MetricsBatch;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::agent::Agent;
use support::device::SimDevice;
use support::external::require_tool;
use support::fleet::{deploy, sample_app_addr, upload_sample, wait_deployment, wait_online, APP};
use support::{free_port, get, get_as, post_json, wait_until, Fleetd, MqttClient};

/// The repository root (the dashboards and the scrape configuration live there).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A Prometheus process, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `bin` with the shipped configuration pointed at `target` (host:port), the test
    /// CA and a file holding `token`.
    fn start(bin: &Path, target: &str, ca: &Path, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("prometheus dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token).expect("token file");
        let shipped = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml"))
            .expect("deploy/prometheus/prometheus.yml");
        let config = replace_all(
            &shipped,
            &[
                ("scrape_interval: 15s", "scrape_interval: 1s"),
                ("fleetd:7878", target),
                ("/certs/ca.pem", &ca.to_string_lossy()),
                ("/prometheus-token/token", &token_file.to_string_lossy()),
            ],
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && get_as(&format!("{}/-/ready", p.url), None).0 == 200
        });
        assert!(ready, "prometheus never became ready:\n{}", p.log());
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; the whole answer (status "success" or "error").
    fn query(&self, promql: &str) -> Value {
        let (_, body) = get_as(
            &format!("{}/api/v1/query?query={}", self.url, percent(promql)),
            None,
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: {e}: {body}"))
    }

    /// The values of an instant query's result vector.
    fn values(&self, promql: &str) -> Vec<f64> {
        let v = self.query(promql);
        v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s["value"][1].as_str().and_then(|x| x.parse().ok()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every metric name Prometheus holds.
    fn names(&self) -> HashSet<String> {
        let (_, body) = get_as(&format!("{}/api/v1/label/__name__/values", self.url), None);
        let v: Value = serde_json::from_str(&body).expect("names");
        v["data"]
            .as_array()
            .expect("name list")
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    }
}

fn replace_all(text: &str, pairs: &[(&str, &str)]) -> String {
    pairs.iter().fold(text.to_string(), |t, (from, to)| {
        assert!(
            t.contains(from),
            "the shipped file no longer contains {from:?}"
        );
        t.replace(from, to)
    })
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every metric name a PromQL expression mentions (FleetD's names all start with `fleet`);
/// quoted label values are left out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut in_quote = false;
    for c in expr.chars() {
        if c == '"' {
            in_quote = !in_quote;
        } else if !in_quote {
            unquoted.push(c);
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("fleet_") || w.starts_with("fleetd_"))
        .map(str::to_string)
        .collect()
}

/// Every query of a dashboard: panel targets, and the metric of each `label_values(...)`
/// variable (Grafana's own function, not PromQL) as a plain selector.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        let q = v["query"]["query"].as_str().expect("variable query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(m, _)| m.trim().to_string())
            .unwrap_or_else(|| panic!("variable query {q} is not label_values(metric, label)"));
        out.push(inner);
    }
    out
}

#[test]
fn prometheus_scrapes_the_fleet_and_every_dashboard_query_runs() {
    let Some(prom_bin) = require_tool("prometheus", &["/usr/bin/prometheus"]) else {
        return;
    };
    let fleetd = Fleetd::start_tls_with(&["--metrics-device-label", "site"]);
    let args = ["--metrics-interval-ms", "1000"];
    let a1 = Agent::start_with_args("prom-1", &fleetd.access(), &[("site", "north")], &args);
    let a2 = Agent::start_with_args("prom-2", &fleetd.access(), &[("site", "south")], &args);
    wait_online(&fleetd, &[&a1, &a2]);
    upload_sample(&fleetd, "1.0.0");
    let d1 = deploy(&fleetd, "1.0.0", &["prom-1", "prom-2"]);
    wait_deployment(&fleetd, &d1, "succeeded", &[&a1, &a2]);

    // Exactly seven requests to the app on prom-1: its counter must read 7 in Prometheus.
    let addr = sample_app_addr(&a1, "1.0.0").expect("the sample app says where it listens");
    for _ in 0..7 {
        let (status, _) = get_as(&format!("http://{addr}/"), None);
        assert_eq!(status, 200);
    }

    // What the agent reports, read off the bus with the agent's key.
    let port = support::device::port_of(&fleetd.access());
    let mut bus = MqttClient::connect_over(
        port,
        fleetd.access().ca.as_deref(),
        "prom-watcher",
        Some((&support::admin_username(), support::admin_token())),
    )
    .expect("watcher connects");
    let topic = "fleet/prom-1/metrics";
    bus.subscribe_checked(topic).expect("subscribe to metrics");
    let mut reported_memory = BTreeSet::new();

    let token = fleetd.create_token("prometheus", &["read"], &[]);
    let target = fleetd
        .url("")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let ca = fleetd.access().ca.expect("TLS fleetd has a CA");
    let prom = Prometheus::start(&prom_bin, &target, &ca, &token);

    let requests = format!(
        r#"fleet_app_custom_metric{{device="prom-1",app="{APP}",version="1.0.0",metric="requests"}}"#
    );
    let counted = wait_until(Duration::from_secs(60), || {
        watch(&mut bus, &a1, topic, &mut reported_memory);
        prom.values(&requests) == [7.0]
    });
    assert!(
        counted,
        "Prometheus never held {requests} = 7: {}\nup: {}\nprometheus log:\n{}",
        prom.query(&requests),
        prom.query("up"),
        prom.log()
    );
    let memory = format!(r#"fleet_app_memory_bytes{{device="prom-1",app="{APP}"}}"#);
    let mut last = vec![];
    let same = wait_until(Duration::from_secs(30), || {
        watch(&mut bus, &a1, topic, &mut reported_memory);
        last = prom.values(&memory);
        last.len() == 1 && reported_memory.contains(&(last[0] as u64)) && last[0] > 0.0
    });
    assert!(
        same,
        "Prometheus memory {last:?} is not a value the agent reported: {reported_memory:?}"
    );
    let by_site = prom.values(r#"sum by (site) (fleet_device_online{site="south"})"#);
    assert_eq!(by_site, [1.0], "device labels selected with the flag");

    // Everything the dashboards show must exist: a rejected payload, a staged rollout, and a
    // rollback trigger (an operator's rollback fires the "manual" one).
    let mut forger = SimDevice::enroll(&fleetd.access(), "prom-forger");
    forger
        .mqtt
        .publish("fleet/prom-forger/metrics", vec![], false);
    upload_sample(&fleetd, "2.0.0");
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP,
            "version": "2.0.0",
            "strategy": {"type": "canary", "initial_percentage": 50, "increment_percentage": 50,
                         "increment_interval": "1h", "min_healthy_time": "1s",
                         "progress_deadline": "10m"},
            "target": {"devices": ["prom-1", "prom-2"]},
        }),
    );
    assert_eq!(status, 201, "{body}");
    let canary = body["id"].as_str().expect("id").to_string();
    let (status, body) = post_json(
        &fleetd.url(&format!("/api/v1/deployments/{canary}/rollback")),
        &json!({}),
    );
    assert!(status == 200 || status == 202, "rollback: {status} {body}");

    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/grafana/dashboards")).expect("dashboards") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("dashboard");
        let d: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        dashboards.push((path, d));
    }
    assert_eq!(
        dashboards.len(),
        3,
        "overview, rollout and device dashboards"
    );
    let queries: Vec<(String, String)> = dashboards
        .iter()
        .flat_map(|(p, d)| {
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            dashboard_queries(d)
                .into_iter()
                .map(move |q| (name.clone(), q))
        })
        .collect();
    let wanted: BTreeSet<String> = queries.iter().flat_map(|(_, q)| metric_names(q)).collect();
    assert!(wanted.len() > 25, "{wanted:?}");
    let mut missing = BTreeSet::new();
    let all_there = wait_until(Duration::from_secs(60), || {
        let names = prom.names();
        missing = wanted
            .iter()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        missing.is_empty()
    });
    assert!(
        all_there,
        "metrics the dashboards name but Prometheus does not hold: {missing:?}\n/metrics:\n{}",
        get(&fleetd.url("/metrics")).1
    );
    for (file, q) in &queries {
        let promql = replace_vars(q, &canary);
        let answer = prom.query(&promql);
        assert_eq!(
            answer["status"], "success",
            "{file}: {q} (as {promql}) does not run: {answer}"
        );
    }
    // The variables pick real values: the rollout and device views show data for them.
    assert!(!prom
        .values(&replace_vars(
            r#"fleetd_deployment_step{deployment="$deployment"}"#,
            &canary
        ))
        .is_empty());
    assert!(!prom
        .values(&replace_vars(
            r#"fleet_app_memory_bytes{device="$device"}"#,
            &canary
        ))
        .is_empty());
}

/// Adds the app memory figures the agent published on `topic` meanwhile to `seen`.
fn watch(bus: &mut MqttClient, agent: &Agent, topic: &str, seen: &mut BTreeSet<u64>) {
    for p in bus
        .until(topic, Duration::from_millis(1500))
        .unwrap_or_default()
    {
        if p.topic == topic {
            let b: MetricsBatch = agent.open_report(topic, &p.payload);
            if let Some(app) = b.apps.iter().find(|a| a.app == APP) {
                seen.insert(app.memory_bytes);
            }
        }
    }
}

/// Grafana's variables with values of this fleet.
fn replace_vars(q: &str, deployment: &str) -> String {
    q.replace("$__rate_interval", "1m")
        .replace("$deployment", deployment)
        .replace("$device", "prom-1")
        .replace("$app", APP)
}

#[test]
fn metric_names_are_found_outside_quotes_only() {
    let names = metric_names(
        r#"sum by (version) (rate(fleet_app_custom_metric{app="fleet_x",metric="errors"}[1m])) / fleetd_devices"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["fleet_app_custom_metric", "fleetd_devices"]
    );
}
