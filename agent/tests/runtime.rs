//! The agent's runtime with real processes: a real `fleet-agent` binary, real app scripts, the
//! embedded broker, and assertions on what reaches the bus.

mod support;

use fleet_schema::app_spec::{ConfigFile, HealthCheck, ProbeKind, Resources, RestartPolicy};
use fleet_schema::{
    AgentRequest, AppPhase, AppSpec, AppStatus, DeviceStatus, HealthState, LogBatch, LogLevel,
    MetricsBatch,
};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{broker, free_port, AgentProc, Observer, TestApp};

fn app<'a>(st: &'a DeviceStatus, name: &str) -> Option<&'a AppStatus> {
    st.apps.iter().find(|a| a.name == name)
}

fn topic(device: &str, kind: &str) -> String {
    format!("fleet/{device}/{kind}")
}

#[test]
fn crashing_app_restarts_with_growing_backoff_and_is_reported_crash_looping() {
    let Some(broker) = broker() else {
        return;
    };
    let port = broker.port;
    let dev = "rt-crash";
    let obs = Observer::start(port, &[topic(dev, "status")]);
    let _agent = AgentProc::start(
        dev,
        port,
        &[TestApp {
            name: "crasher",
            script: "date +%s%N >> \"$FLEET_APP_DIR/starts\"\necho 'ERROR: boom'\nexit 3".into(),
            spec: AppSpec::default(),
        }],
        &[],
    );
    let st = obs.wait_for(
        &topic(dev, "status"),
        Duration::from_secs(30),
        "crash-loop",
        |s: &DeviceStatus| {
            app(s, "crasher")
                .filter(|a| a.phase == AppPhase::CrashLoop)
                .cloned()
        },
    );
    assert!(st.restart_count >= 3, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("exit status 3"),
        "{st:?}"
    );
    // Wait for one more start so there are three gaps to compare.
    let starts_file = _agent.data().join("apps/crasher/1.0.0/starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let starts: Vec<u128> = loop {
        let s: Vec<u128> = std::fs::read_to_string(&starts_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if s.len() >= 4 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(starts.len() >= 4, "starts: {starts:?}");
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e9)
        .collect();
    assert!(gaps[0] >= 0.9, "first delay about 1 s: {gaps:?}");
    assert!(gaps[1] > gaps[0] * 1.6, "backoff grows: {gaps:?}");
    assert!(gaps[2] > gaps[1] * 1.6, "backoff grows: {gaps:?}");
}

#[test]
fn app_exceeding_its_memory_limit_is_stopped_and_reported() {
    let Some(broker) = broker() else {
        return;
    };
    let port = broker.port;
    let dev = "rt-mem";
    let obs = Observer::start(port, &[topic(dev, "status")]);
    let mut spec = AppSpec::default();
    spec.resources.memory_limit = Some(64 << 20);
    spec.runtime.restart = RestartPolicy::Never;
    let _agent = AgentProc::start(
        dev,
        port,
        &[TestApp {
            name: "hog",
            script: "x=$(head -c 300000000 /dev/zero | tr '\\0' a)\necho \"survived ${#x}\"\nexec sleep 600"
                .into(),
            spec,
        }],
        &[],
    );
    let st = obs.wait_for(
        &topic(dev, "status"),
        Duration::from_secs(20),
        "hog failed",
        |s: &DeviceStatus| {
            app(s, "hog")
                .filter(|a| a.phase == AppPhase::Failed)
                .cloned()
        },
    );
    let err = st.last_error.unwrap_or_default();
    assert!(
        err.contains("memory limit"),
        "reported as a memory-limit stop: {err}"
    );
    assert!(!_agent.app_log("hog").contains("survived"));
    assert!(
        support::pids_with_env("FLEET_DEVICE_ID=rt-mem").is_empty(),
        "nothing of the app is left running"
    );
}

/// An HTTP server whose answer (200 or 503) the test switches.
fn switchable_http() -> (u16, Arc<AtomicBool>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let ok = Arc::new(AtomicBool::new(true));
    let flag = ok.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut b = [0u8; 1024];
            let _ = c.read(&mut b);
            let status = if flag.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            let _ = write!(c, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, ok)
}

fn check(probe: ProbeKind) -> Option<HealthCheck> {
    Some(HealthCheck {
        probe,
        interval_ms: 200,
        timeout_ms: 500,
        retries: 2,
        start_period_ms: 0,
    })
}

#[test]
fn health_checks_of_each_kind_turn_apps_unhealthy_and_healthy_again() {
    let Some(broker) = broker() else {
        return;
    };
    let port = broker.port;
    let dev = "rt-health";
    let obs = Observer::start(port, &[topic(dev, "status")]);
    let (http_port, http_ok) = switchable_http();
    let tcp_port = free_port();
    let tcp = Arc::new(Mutex::new(Some(
        std::net::TcpListener::bind(("127.0.0.1", tcp_port)).expect("bind tcp"),
    )));
    let spec = |probe| AppSpec {
        healthcheck: check(probe),
        files: vec![ConfigFile {
            path: "ok".into(),
            content: "ok".into(),
            mode: None,
            secret: false,
        }],
        ..AppSpec::default()
    };
    let apps = [
        TestApp {
            name: "h-http",
            script: "exec sleep 600".into(),
            spec: spec(ProbeKind::Http {
                path: "/health".into(),
                port: http_port,
                expected_status: Some(200),
            }),
        },
        TestApp {
            name: "h-tcp",
            script: "exec sleep 600".into(),
            spec: spec(ProbeKind::Tcp { port: tcp_port }),
        },
        TestApp {
            name: "h-exec",
            script: "exec sleep 600".into(),
            spec: spec(ProbeKind::Exec {
                command: vec!["test".into(), "-f".into(), "ok".into()],
            }),
        },
    ];
    let agent = AgentProc::start(dev, port, &apps, &[]);
    let names = ["h-http", "h-tcp", "h-exec"];
    let all = |want: HealthState| {
        move |s: &DeviceStatus| {
            names
                .iter()
                .all(|n| app(s, n).is_some_and(|a| a.health == want))
                .then(|| s.clone())
        }
    };
    let st = obs.wait_for(
        &topic(dev, "status"),
        Duration::from_secs(20),
        "all healthy",
        all(HealthState::Healthy),
    );
    assert!(
        st.apps.iter().all(|a| a.phase == AppPhase::Running),
        "{st:?}"
    );

    http_ok.store(false, Ordering::SeqCst);
    tcp.lock().expect("lock").take();
    std::fs::remove_file(agent.data().join("apps/h-exec/1.0.0/ok")).expect("rm ok");
    let st = obs.wait_for(
        &topic(dev, "status"),
        Duration::from_secs(20),
        "all unhealthy",
        all(HealthState::Unhealthy),
    );
    let msg = |n| {
        app(&st, n)
            .and_then(|a| a.health_message.clone())
            .unwrap_or_default()
    };
    assert!(msg("h-http").contains("503"), "{}", msg("h-http"));
    assert!(msg("h-tcp").contains("tcp"), "{}", msg("h-tcp"));
    assert!(msg("h-exec").contains("exec"), "{}", msg("h-exec"));

    http_ok.store(true, Ordering::SeqCst);
    *tcp.lock().expect("lock") =
        Some(std::net::TcpListener::bind(("127.0.0.1", tcp_port)).expect("rebind tcp"));
    std::fs::write(agent.data().join("apps/h-exec/1.0.0/ok"), "ok").expect("touch ok");
    obs.wait_for(
        &topic(dev, "status"),
        Duration::from_secs(20),
        "healthy again",
        all(HealthState::Healthy),
    );
}

fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    Some(f.first()? != &"Z" && f.get(2)?.parse::<u32>().ok()? == pgid)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn stopping_an_app_leaves_no_process_of_its_group_even_when_it_ignores_sigterm() {
    let Some(broker) = broker() else {
        return;
    };
    let port = broker.port;
    let dev = "rt-stop";
    let obs = Observer::start(port, &[topic(dev, "status")]);
    let mut spec = AppSpec::default();
    spec.runtime.stop_grace_ms = 500;
    let a = TestApp {
        name: "forker",
        script: "trap '' TERM\nsleep 600 &\n(sleep 600; true) &\necho $$ > \"$FLEET_APP_DIR/pgid\"\nwait".into(),
        spec,
    };
    let agent = AgentProc::start(dev, port, &[a], &[]);
    obs.wait_for(
        &topic(dev, "status"),
        Duration::from_secs(20),
        "running",
        |s: &DeviceStatus| {
            app(s, "forker")
                .filter(|a| a.phase == AppPhase::Running)
                .map(|_| ())
        },
    );
    let pgid: u32 = std::fs::read_to_string(agent.data().join("apps/forker/1.0.0/pgid"))
        .expect("pgid written")
        .trim()
        .parse()
        .expect("pid");
    assert!(group_members(pgid).len() >= 3, "app with two children");
    let empty = support::desired(dev, 2, &[]);
    obs.publish(&topic(dev, "cmd"), true, agent.cmd(&empty));
    let t0 = Instant::now();
    while !group_members(pgid).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        group_members(pgid).is_empty(),
        "no orphan survives the stop"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "SIGTERM was ignored, so only SIGKILL after the grace period ended it"
    );
}

#[test]
fn app_gets_its_env_args_files_and_limits() {
    let Some(broker) = broker() else {
        return;
    };
    let port = broker.port;
    let dev = "rt-conf";
    let obs = Observer::start(port, &[topic(dev, "status")]);
    let spec = AppSpec {
        env: [("GREETING".to_string(), "hi there".to_string())].into(),
        files: vec![ConfigFile {
            path: "conf/app.conf".into(),
            content: "level = 3\n".into(),
            mode: Some(0o600),
            secret: false,
        }],
        resources: Resources {
            memory_limit: Some(512 << 20),
            open_files: Some(64),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut spec = spec;
    spec.runtime.args = vec!["a".into(), "b c".into()];
    let agent = AgentProc::start(
        dev,
        port,
        &[TestApp {
            name: "cfgapp",
            script: "echo \"env=$GREETING argc=$# arg2=$2 cwd=$(pwd)\"\ncat conf/app.conf\nstat -c 'mode=%a' conf/app.conf\necho \"nofile=$(ulimit -n) as=$(ulimit -v)\"\nexec sleep 600".into(),
            spec,
        }],
        &[],
    );
    obs.wait_for(
        &topic(dev, "status"),
        Duration::from_secs(20),
        "running",
        |s: &DeviceStatus| {
            app(s, "cfgapp")
                .filter(|a| a.phase == AppPhase::Running)
                .map(|_| ())
        },
    );
    let dir = agent.data().join("apps/cfgapp/1.0.0");
    let log = agent.app_log("cfgapp");
    assert!(
        log.contains(&format!(
            "env=hi there argc=2 arg2=b c cwd={}",
            dir.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("level = 3") && log.contains("mode=600"),
        "{log}"
    );
    assert!(log.contains("nofile=64 as=524288"), "{log}");
}

#[test]
fn log_lines_and_app_counters_reach_the_bus_and_history_is_served() {
    let Some(broker) = broker() else {
        return;
    };
    let port = broker.port;
    let dev = "rt-tele";
    let obs = Observer::start(port, &[topic(dev, "logs"), topic(dev, "metrics")]);
    let script = r#"echo "hello from talker"
echo "ERROR something broke"
echo "disk nearly full" >&2
url="$FLEET_METRICS_URL"
hostport="${url#http://}"; hostport="${hostport%%/*}"
path="/${url#http://*/}"
body='{"requests":10,"errors":1}'
exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}"
printf 'POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s' "$path" "${#body}" "$body" >&3
cat <&3 >/dev/null
i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done"#;
    let agent = AgentProc::start(
        dev,
        port,
        &[TestApp {
            name: "talker",
            script: script.into(),
            spec: AppSpec::default(),
        }],
        &["--metrics-interval-ms", "300"],
    );
    let (mut seen_hello, mut seen_stderr) = (false, false);
    obs.wait_for(
        &topic(dev, "logs"),
        Duration::from_secs(20),
        "log lines",
        |b: &LogBatch| {
            seen_hello |= b.entries.iter().any(|e| {
                e.message == "hello from talker"
                    && e.app == "talker"
                    && e.level == LogLevel::Info
                    && e.stream == "stdout"
            });
            // Unmarked stderr lines are errors, tagged with their stream.
            seen_stderr |= b.entries.iter().any(|e| {
                e.message == "disk nearly full"
                    && e.stream == "stderr"
                    && e.level == LogLevel::Error
            });
            let err = b
                .entries
                .iter()
                .any(|e| e.message == "ERROR something broke" && e.level == LogLevel::Error);
            (seen_hello && seen_stderr && err).then_some(())
        },
    );
    let m = obs.wait_for(
        &topic(dev, "metrics"),
        Duration::from_secs(20),
        "app counters",
        |b: &MetricsBatch| {
            b.apps
                .iter()
                .find(|a| a.app == "talker" && a.custom_metrics.get("errors") == Some(&1.0))
                .map(|a| (a.clone(), b.device.clone()))
        },
    );
    let (a, d) = m;
    assert_eq!(a.custom_metrics.get("requests"), Some(&10.0));
    assert!(a.memory_bytes > 0 && a.threads >= 1 && a.fds >= 1, "{a:?}");
    assert!(d.memory_total > 0 && d.disk_total > 0, "{d:?}");

    let req = AgentRequest::LogHistory {
        app: Some("talker".into()),
        lines: 1000,
    };
    obs.publish(&topic(dev, "req"), false, agent.req(&req));
    let hist = obs.wait_for(
        &topic(dev, "logs"),
        Duration::from_secs(10),
        "history",
        |b: &LogBatch| {
            b.entries
                .iter()
                .any(|e| e.message == "hello from talker")
                .then(|| b.clone())
        },
    );
    assert!(hist.entries.iter().all(|e| e.app == "talker"));

    // The same request unsigned, as any client on the bus could send it: refused and logged.
    obs.publish(
        &topic(dev, "req"),
        false,
        fleet_schema::encode(&req).expect("encode"),
    );
    let refused = support::wait_until(Duration::from_secs(10), || {
        agent
            .log()
            .contains("refused message: not a signed FleetD message")
    });
    assert!(
        refused,
        "unsigned request refused; agent log:\n{}",
        agent.log()
    );
    drop(agent);
}
