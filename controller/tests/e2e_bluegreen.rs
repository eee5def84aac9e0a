//! Blue-green end to end: a real fleetd, a real agent, the real sample app serving a port. The
//! agent owns the service port and forwards it to the active instance, so a client hammering
//! it during a v1 -> v2 blue-green deployment sees no failed or refused request, and answers
//! move from v1 to v2 after the validation period; the old instance stops after the switch
//! delay.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::fleet::{upload_sample, wait_deployment, wait_online, APP};
use support::{free_port, post, post_json, wait_until, Fleetd};

/// One HTTP/1.1 GET on 127.0.0.1:`port`; the status line's code and the body.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((code, body))
}

fn register(fleetd: &Fleetd, version: &str, port: u16) {
    let manifest = json!({
        "apiVersion": "fleet.v1", "kind": "Application",
        "metadata": {"name": APP, "version": version},
        "spec": {
            "artifacts": [{"name": APP, "version": version, "type": "binary"}],
            "runtime": {"ports": [port], "startup_timeout": "20s"},
            "healthcheck": {"http": {"path": "/health", "port": port, "interval": "200ms",
                                     "timeout": "200ms", "retries": 1}}
        }
    });
    let (status, body) = post(
        &fleetd.url("/api/v1/applications"),
        "application/json",
        manifest.to_string().as_bytes(),
    );
    assert!(status == 201 || status == 200, "register {version}: {body}");
}

fn blue_green(fleetd: &Fleetd, version: &str, device: &str) -> String {
    let (status, body) = post_json(
        &fleetd.url("/api/v1/deployments"),
        &json!({
            "application": APP, "version": version,
            "strategy": {"type": "blue-green", "validation_period": "2s", "switch_delay": "3s",
                         "progress_deadline": "60s"},
            "target": {"devices": [device]},
        }),
    );
    assert_eq!(status, 201, "create blue-green: {body}");
    body["id"].as_str().expect("id").to_string()
}

fn version_of(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_string))
}

#[test]
fn blue_green_switches_a_served_port_without_refusing_a_connection() {
    let fleetd = Fleetd::start_with_env(&[("FLEETD_ROLLOUT_TICK_MS", "200")]);
    let agent = Agent::start("bg-1", &fleetd.access(), &[]);
    wait_online(&fleetd, &[&agent]);
    let port = free_port();
    for v in ["1.0.0", "2.0.0"] {
        upload_sample(&fleetd, v);
        register(&fleetd, v, port);
    }
    let d1 = blue_green(&fleetd, "1.0.0", "bg-1");
    wait_deployment(&fleetd, &d1, "succeeded", &[&agent]);
    let v1_up = wait_until(Duration::from_secs(20), || {
        http_get(port, "/")
            .is_ok_and(|(c, b)| c == 200 && version_of(&b).as_deref() == Some("1.0.0"))
    });
    assert!(
        v1_up,
        "v1 serves the port through the agent:\n{}",
        agent.log()
    );

    // Hammer the service port from a client thread during the whole v1 -> v2 deployment.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let versions = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let client = {
        let (stop, failures, versions) = (stop.clone(), failures.clone(), versions.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match http_get(port, "/health") {
                    Ok((200, _)) => {}
                    Ok((c, b)) => failures.lock().expect("lock").push(format!("{c} {b}")),
                    Err(e) => failures.lock().expect("lock").push(e),
                }
                if n.is_multiple_of(5) {
                    match http_get(port, "/") {
                        Ok((200, b)) => versions
                            .lock()
                            .expect("lock")
                            .push((version_of(&b).unwrap_or_default(), Instant::now())),
                        Ok((c, b)) => failures.lock().expect("lock").push(format!("{c} {b}")),
                        Err(e) => failures.lock().expect("lock").push(e),
                    }
                }
                n += 1;
            }
            n
        })
    };
    let d2 = blue_green(&fleetd, "2.0.0", "bg-1");
    wait_deployment(&fleetd, &d2, "succeeded", &[&agent]);
    // Both instances run side by side until the switch delay after the switch has passed.
    let v1_gone = wait_until(Duration::from_secs(30), || {
        agent.app_pids(APP, "1.0.0").is_empty() && agent.app_pids(APP, "2.0.0").len() == 1
    });
    assert!(
        v1_gone,
        "old instance stopped after the switch delay:\n{}",
        agent.log()
    );
    let v1_gone_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let requests = client.join().expect("client thread");

    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        agent.log()
    );
    assert!(requests > 100, "the client made only {requests} requests");
    let versions = versions.lock().expect("lock");
    let first_v2 = versions
        .iter()
        .position(|(v, _)| v == "2.0.0")
        .expect("answers switched to v2");
    assert!(first_v2 > 0, "v1 answered first: {versions:?}");
    assert!(
        versions[..first_v2].iter().all(|(v, _)| v == "1.0.0")
            && versions[first_v2..].iter().all(|(v, _)| v == "2.0.0"),
        "answers switch once from v1 to v2: {versions:?}"
    );
    // v1 was kept for the switch delay (3 s) after traffic moved to v2.
    let kept = v1_gone_at - versions[first_v2].1;
    assert!(
        kept >= Duration::from_millis(2_500),
        "old stopped {kept:?} after the switch"
    );
}
