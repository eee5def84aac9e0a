//! End-to-end tests of fleetd's HTTP API and MQTT behaviour against the real binary.

mod support;

use fleet_schema::{AppPhase, AppStatus, DesiredState, DEFAULT_MAX_PAYLOAD};
use serde_json::json;
use std::time::Duration;
use support::*;

const SECS: Duration = Duration::from_secs(10);

#[test]
fn uploads_are_versioned_immutable_and_downloadable() {
    let f = Fleetd::start();
    for v in ["1.9.0", "1.10.0", "1.2.0"] {
        let (status, meta) = upload(&f, "myapp", v, format!("bytes of {v}").as_bytes());
        assert_eq!(status, 201, "{meta}");
        assert_eq!(meta["id"], format!("myapp@{v}"));
        assert_eq!(meta["checksums"]["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(
            meta["checksums"]["sha512"].as_str().map(str::len),
            Some(128)
        );
        assert!(meta["storage_url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("file://"));
    }
    let (status, body) = get(&f.url("/api/v1/artifacts/myapp/versions"));
    assert_eq!(status, 200);
    let versions: Vec<String> = parse_json(&body)
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["version"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(versions, ["1.2.0", "1.9.0", "1.10.0"]);
    let (_, body) = get(&f.url("/api/v1/artifacts"));
    assert_eq!(
        parse_json(&body),
        json!([{"name": "myapp", "latest_version": "1.10.0", "version_count": 3}])
    );

    // Idempotent retry, then different bytes under the same version.
    let (status, again) = upload(&f, "myapp", "1.9.0", b"bytes of 1.9.0");
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], "myapp@1.9.0");
    let (status, err) = upload(&f, "myapp", "1.9.0", b"tampered");
    assert_eq!(status, 409, "{err}");
    assert!(err["error"]
        .as_str()
        .unwrap_or_default()
        .contains("myapp@1.9.0"));

    // Metadata before the file works too.
    let meta = r#"{"name":"other","version":"0.1.0","type":"binary"}"#;
    let (ct, body) = multipart(&[
        ("metadata", None, meta.as_bytes()),
        ("file", Some("f"), b"x"),
    ]);
    assert_eq!(post(&f.url("/api/v1/artifacts"), &ct, &body).0, 201);

    // Downloads need a signed URL; whole and resumed.
    let unsigned = f.url("/api/v1/artifacts/myapp/1.10.0/download");
    let (status, body) = get(&unsigned);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not signed"), "{body}");
    let url = fresh_download_url(&f, "myapp", "1.10.0");
    let (status, body) = get(&url.replace("sig=", "sig=00"));
    assert_eq!(status, 403, "forged URL refused: {body}");
    let (status, _, bytes) = get_bytes(&url, &[]);
    assert_eq!(
        (status, bytes.as_slice()),
        (200, b"bytes of 1.10.0".as_slice())
    );
    let (status, headers, bytes) = get_bytes(&url, &[("range", "bytes=9-")]);
    assert_eq!((status, bytes.as_slice()), (206, b"1.10.0".as_slice()));
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-range" && v == "bytes 9-14/15"));
    assert_eq!(get_bytes(&url, &[("range", "bytes=99-")]).0, 416);

    // Lookups of things that do not exist.
    assert_eq!(get(&f.url("/api/v1/artifacts/nope/versions")).0, 404);
    assert_eq!(get(&f.url("/api/v1/artifacts/myapp/9.9.9")).0, 404);
    assert_eq!(get(&f.url("/api/v1/artifacts/myapp/9.9.9/download")).0, 404);
    let (status, body) = get(&f.url("/api/v1/artifacts/myapp/1.2.0"));
    assert_eq!(status, 200);
    assert_eq!(parse_json(&body)["version"], "1.2.0");
}

#[test]
fn bad_uploads_are_4xx_naming_the_problem() {
    let f = Fleetd::start_with_env(&[("FLEETD_MAX_UPLOAD_BYTES", "1000")]);
    let url = f.url("/api/v1/artifacts");
    type Parts<'a> = Vec<(&'a str, Option<&'a str>, &'a [u8])>;
    let cases: Vec<(&str, Parts, u16, &str)> = vec![
        (
            "unknown field",
            vec![
                (
                    "metadata",
                    None,
                    br#"{"name":"a","version":"1.0.0","type":"binary","typo":1}"#,
                ),
                ("file", Some("f"), b"x"),
            ],
            400,
            "typo",
        ),
        (
            "malformed metadata",
            vec![("metadata", None, b"{nope"), ("file", Some("f"), b"x")],
            400,
            "metadata",
        ),
        (
            "bad version",
            vec![
                (
                    "metadata",
                    None,
                    br#"{"name":"a","version":"v1","type":"binary"}"#,
                ),
                ("file", Some("f"), b"x"),
            ],
            400,
            "v1",
        ),
        (
            "unknown type",
            vec![
                (
                    "metadata",
                    None,
                    br#"{"name":"a","version":"1.0.0","type":"wasm"}"#,
                ),
                ("file", Some("f"), b"x"),
            ],
            400,
            "wasm",
        ),
        (
            "bad platform",
            vec![
                (
                    "metadata",
                    None,
                    br#"{"name":"a","version":"1.0.0","type":"binary","platform":"linux"}"#,
                ),
                ("file", Some("f"), b"x"),
            ],
            400,
            "linux",
        ),
        (
            "missing file",
            vec![(
                "metadata",
                None,
                br#"{"name":"a","version":"1.0.0","type":"binary"}"#,
            )],
            400,
            "file",
        ),
        (
            "missing metadata",
            vec![("file", Some("f"), b"x")],
            400,
            "metadata",
        ),
        (
            "oversized",
            vec![
                (
                    "metadata",
                    None,
                    br#"{"name":"a","version":"1.0.0","type":"binary"}"#,
                ),
                ("file", Some("f"), &[0u8; 5000]),
            ],
            413,
            "1000",
        ),
    ];
    for (what, parts, want, mention) in cases {
        let (ct, body) = multipart(&parts);
        let (status, text) = post(&url, &ct, &body);
        assert_eq!(status, want, "{what}: {text}");
        let err = parse_json(&text)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            err.contains(mention),
            "{what}: error {err:?} should mention {mention:?}"
        );
    }
    let (status, _) = post(&url, "application/json", b"{}");
    assert_eq!(status, 400, "not multipart");
    assert_eq!(get(&url).1, "[]", "nothing was stored");
    let leftovers = std::fs::read_dir(f.data_dir().join("artifacts/.tmp"))
        .expect("staging dir")
        .count();
    assert_eq!(leftovers, 0, "refused uploads leave no staged files");
}

#[test]
fn an_overlong_version_is_a_400_without_server_paths() {
    // A 300-character pre-release used to reach the file system ("File name too long") and
    // come back as a 500 naming a path under the data directory.
    let f = Fleetd::start();
    let version = format!("1.0.0-{}", "a".repeat(300));
    let (status, err) = upload(&f, "myapp", &version, b"bytes");
    assert_eq!(status, 400, "{err}");
    let text = err["error"].as_str().unwrap_or_default();
    assert!(text.contains("longer than 64"), "{text}");
    let data = f.data_dir();
    assert!(!text.contains(&*data.to_string_lossy()), "{text}");
    let (status, _) = get(&f.url(&format!("/api/v1/artifacts/myapp/{version}")));
    assert!(status == 400 || status == 404, "{status}");
}

#[test]
fn deployment_errors_are_4xx_naming_the_problem() {
    let f = Fleetd::start();
    assert_eq!(upload(&f, "app", "1.0.0", b"bin").0, 201);
    announce(&f, &device_status("dev-1", &[("site", "lab")]));
    let url = f.url("/api/v1/deployments");

    let (status, text) = post(&url, "application/json", b"{\"application\": ");
    assert_eq!(status, 400);
    assert!(text.contains("malformed JSON"), "{text}");

    let cases = [
        (
            json!({"application":"app","version":"1.0.0","target":{"devices":["dev-1"]},"typo":1}),
            400,
            "typo",
        ),
        (
            json!({"application":"app","version":"1.0.0","strategy":{"type":"canary","initial_percentage":150},"target":{"devices":["dev-1"]}}),
            400,
            "strategy.initial_percentage: 150 is not a percentage",
        ),
        (
            json!({"application":"app","version":"1.0.0","strategy":{"type":"canary","max_unavailable":1},"target":{"devices":["dev-1"]}}),
            400,
            "strategy.max_unavailable does not apply to strategy \"canary\"",
        ),
        (
            json!({"application":"nope","version":"1.0.0","target":{"devices":["dev-1"]}}),
            404,
            "nope",
        ),
        (
            json!({"application":"app","version":"2.0.0","target":{"devices":["dev-1"]}}),
            404,
            "2.0.0",
        ),
        (
            json!({"application":"app","version":"1.0.0","target":{}}),
            422,
            "target is empty",
        ),
        (
            json!({"application":"app","version":"1.0.0","target":{"devices":["dev-1","ghost"]}}),
            422,
            "ghost",
        ),
        (
            json!({"application":"app","version":"1.0.0","target":{"devices":["bad/id"]}}),
            422,
            "bad/id",
        ),
        (
            json!({"application":"app","version":"1.0.0","target":{"selector":{"site":"mars"}}}),
            422,
            "site=mars",
        ),
    ];
    for (body, want, mention) in cases {
        let (status, resp) = post_json(&url, &body);
        assert_eq!(status, want, "{body}: {resp}");
        let err = resp["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(mention),
            "{body}: error {err:?} should mention {mention:?}"
        );
    }
    assert_eq!(get(&url).1, "[]", "no deployment was stored");
    assert_eq!(get(&f.url("/api/v1/deployments/d-0")).0, 404);
    assert_eq!(get(&f.url("/api/v1/devices/ghost")).0, 404);
}

#[test]
fn deployments_publish_desired_state_and_survive_kill9() {
    let mut f = Fleetd::start();
    let mut status = device_status("dev-1", &[("site", "lab")]);
    let mut sim = announce(&f, &status);
    // Desired states are sealed for the device: only it can read them.
    let desired = |dev: &support::device::SimDevice, payload: &[u8]| -> DesiredState {
        dev.open_desired(payload)
            .expect("cmd payload is a desired state sealed for dev-1")
    };
    assert_eq!(upload(&f, "app", "1.0.0", b"v1").0, 201);
    assert_eq!(upload(&f, "app", "2.0.0", b"v2").0, 201);

    let (code, created) = post_json(
        &f.url("/api/v1/deployments"),
        &json!({"application":"app","version":"1.0.0","strategy":{"type":"all-at-once"},"target":{"selector":{"site":"lab"}}}),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["devices"], json!(["dev-1"]));
    let d1 = created["id"].as_str().expect("id").to_string();

    let mut sub = MqttClient::connect(f.mqtt_port, "test-sub-1");
    sub.subscribe("fleet/dev-1/cmd");
    sub.wait_for("fleet/dev-1/cmd", SECS, |_| true)
        .expect("desired state published on fleet/dev-1/cmd");
    // Published retained: a subscriber arriving later gets it from the broker.
    let mut late = MqttClient::connect(f.mqtt_port, "test-sub-late");
    late.subscribe("fleet/dev-1/cmd");
    let p = late
        .wait_for("fleet/dev-1/cmd", SECS, |p| p.retain)
        .expect("retained desired state on fleet/dev-1/cmd");
    assert!(
        fleet_schema::decode::<DesiredState>(&p.payload, DEFAULT_MAX_PAYLOAD).is_err(),
        "not readable without the device's key"
    );
    assert!(
        !String::from_utf8_lossy(&p.payload).contains("/download?expires="),
        "the download URL travels encrypted"
    );
    let state = desired(&sim, &p.payload);
    assert_eq!(state.generation, 1);
    assert_eq!(state.apps.len(), 1);
    let app = &state.apps[0];
    assert_eq!(app.deployment_id.as_deref(), Some(d1.as_str()));
    assert_eq!(app.artifact.size, 2);
    assert!(
        app.artifact
            .url
            .starts_with(&f.url("/api/v1/artifacts/app/1.0.0/download?expires=")),
        "download URL is public URL + signed download path: {}",
        app.artifact.url
    );
    assert_eq!(get_bytes(&app.artifact.url, &[]).2, b"v1");

    let (code, created) = post_json(
        &f.url("/api/v1/deployments"),
        &json!({"application":"app","version":"2.0.0","target":{"devices":["dev-1"]}}),
    );
    assert_eq!(code, 201, "{created}");
    let d2 = created["id"].as_str().expect("id").to_string();
    assert!(d1 < d2, "ids sort by creation");
    let p = sub
        .wait_for("fleet/dev-1/cmd", SECS, |p| {
            desired(&sim, &p.payload).generation == 2
        })
        .expect("generation 2 published");
    assert_eq!(desired(&sim, &p.payload).apps[0].version, "2.0.0");

    let view =
        |f: &Fleetd, id: &str| parse_json(&get(&f.url(&format!("/api/v1/deployments/{id}"))).1);
    assert_eq!(view(&f, &d1)["devices"]["dev-1"]["state"], "superseded");
    assert_eq!(view(&f, &d2)["devices"]["dev-1"]["state"], "pending");
    assert_eq!(view(&f, &d2)["state"], "in-progress");

    // The device reports the new version running: the deployment succeeds.
    status.observed_generation = 2;
    status.apps = vec![AppStatus {
        name: "app".into(),
        version: "2.0.0".into(),
        phase: AppPhase::Running,
        restart_count: 0,
        last_error: None,
        running_version: Some("2.0.0".into()),
        deployment_id: Some(d2.clone()),
        health: Default::default(),
        health_message: None,
        components: Vec::new(),
    }];
    sim.publish_status(&status);
    assert!(
        wait_until(SECS, || view(&f, &d2)["state"] == "succeeded"),
        "deployment succeeds: {}",
        view(&f, &d2)
    );
    let (_, dev) = get(&f.url("/api/v1/devices/dev-1"));
    let dev = parse_json(&dev);
    assert_eq!(
        (dev["desired_generation"].as_u64(), dev["online"].as_bool()),
        (Some(2), Some(true))
    );

    // Guard: deleting the retained desired state (empty payload) gets it republished.
    let mut vandal = MqttClient::connect(f.mqtt_port, "vandal");
    vandal.publish("fleet/dev-1/cmd", Vec::new(), true);
    let healed = wait_until(SECS, || {
        let mut s = MqttClient::connect(f.mqtt_port, "test-sub-heal");
        s.subscribe("fleet/dev-1/cmd");
        s.wait_for("fleet/dev-1/cmd", Duration::from_millis(500), |p| {
            p.retain && !p.payload.is_empty() && desired(&sim, &p.payload).generation == 2
        })
        .is_some()
    });
    assert!(
        healed,
        "retained desired state restored; stderr:\n{}",
        f.stderr()
    );

    // SIGKILL, restart on the same data: everything is still there and republished.
    f.restart();
    let (code, list) = get(&f.url("/api/v1/deployments"));
    assert_eq!(code, 200);
    let list = parse_json(&list);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(view(&f, &d2)["version"], "2.0.0");
    let (_, dev) = get(&f.url("/api/v1/devices/dev-1"));
    assert_eq!(parse_json(&dev)["desired_generation"], 2);
    let mut sub = MqttClient::connect(f.mqtt_port, "test-sub-2");
    sub.subscribe("fleet/dev-1/cmd");
    let p = sub
        .wait_for("fleet/dev-1/cmd", SECS, |_| true)
        .expect("desired state republished after restart (the embedded broker lost it)");
    assert_eq!(desired(&sim, &p.payload).generation, 2);
    assert_eq!(
        get_bytes(&fresh_download_url(&f, "app", "2.0.0"), &[]).2,
        b"v2"
    );
}

#[test]
fn bad_payloads_are_counted_and_harmless() {
    let f = Fleetd::start();
    let good = device_status("x", &[]);
    let mut x = announce(&f, &good);
    let before = parse_json(&get(&f.url("/api/v1/devices/x")).1);
    let mut y = support::device::SimDevice::enroll(&f.access(), "y");
    let good_bytes = fleet_schema::encode(&good).expect("encodes");
    let sealed_good = x.seal("fleet/x/status", &good_bytes);
    // Any other client on the bus (here with a valid API token) trying every kind of junk.
    let mut c = MqttClient::connect(f.mqtt_port, "fuzzer");
    let truncated = sealed_good[..sealed_good.len() / 2].to_vec();
    let oversized = vec![0xA0u8; DEFAULT_MAX_PAYLOAD + 10_000];
    let mut offline = good.clone();
    offline.online = false;
    let by_y = y.seal(
        "fleet/x/status",
        &fleet_schema::encode(&offline).expect("encodes"),
    );
    let naming_y = x.seal(
        "fleet/x/status",
        &fleet_schema::encode(&device_status("y", &[])).expect("encodes"),
    );
    for (topic, payload) in [
        ("fleet/x/status", b"\xff\x00garbage".to_vec()),
        ("fleet/x/status", good_bytes.clone()),
        ("fleet/x/status", truncated.clone()),
        ("fleet/x/status", Vec::new()),
        ("fleet/x/status", by_y),
        ("fleet/x/status", naming_y),
        // A genuine status, then the same bytes replayed.
        ("fleet/x/status", sealed_good.clone()),
        ("fleet/x/status", sealed_good),
        ("fleet/ghost/status", good_bytes),
        ("fleet/x/cmd", b"\xff\x00garbage".to_vec()),
        ("fleet/x/cmd", truncated),
    ] {
        c.publish(topic, payload, false);
    }
    // Oversized payloads never reach the broker: the front closes their publisher.
    for topic in ["fleet/x/status", "fleet/x/cmd"] {
        let mut big = MqttClient::connect(f.mqtt_port, "fuzzer-big");
        assert!(
            big.publish_refused(topic, oversized.clone(), false),
            "{topic}"
        );
    }
    c.publish("fleet/x/cmd", Vec::new(), true);

    let wanted = [
        r#"topic="status",reason="unsigned""#,
        r#"limit="mqtt_packet_bytes"} 2"#,
        r#"topic="status",reason="empty""#,
        r#"topic="status",reason="wrong-signer""#,
        r#"topic="status",reason="device-mismatch""#,
        r#"topic="status",reason="unknown-device""#,
        r#"topic="status",reason="stale""#,
    ];
    let counted = wait_until(SECS, || {
        let m = f.metrics();
        wanted.iter().all(|w| m.contains(w))
    });
    assert!(
        counted,
        "rejections counted:\n{}\nstderr:\n{}",
        f.metrics(),
        f.stderr()
    );
    let cmd_rejections: u64 = f
        .metrics()
        .lines()
        .filter(|l| l.starts_with("fleetd_rejected_payloads_total{topic=\"cmd\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(cmd_rejections >= 3, "{}", f.metrics());

    // Nothing changed from the bad statuses (y's offline status on x's topic included), no
    // device appeared, and fleetd is alive and well.
    let after = parse_json(&get(&f.url("/api/v1/devices/x")).1);
    assert_eq!(after["online"], json!(true));
    assert_eq!(
        after["agent_version"], before["agent_version"],
        "no bad status was applied"
    );
    assert_eq!(get(&f.url("/api/v1/devices/ghost")).0, 404);
    let (code, health) = get(&f.url("/api/v1/health"));
    assert_eq!(code, 200);
    assert_eq!(
        parse_json(&health),
        json!({"status":"ok","mqtt_connected":true})
    );
    // A valid status afterwards is still processed.
    let mut changed = good.clone();
    changed.agent_version = "newer".into();
    x.publish_status(&changed);
    assert!(wait_until(SECS, || parse_json(
        &get(&f.url("/api/v1/devices/x")).1
    )["agent_version"]
        == json!("newer")));
    assert!(f.metrics().contains("fleetd_devices_online 1"));
}

#[test]
fn presence_is_retained_and_sigterm_stops_cleanly() {
    let mut f = Fleetd::start();
    let mut sub = MqttClient::connect(f.mqtt_port, "presence-watcher");
    sub.subscribe("fleet/_controller/status");
    let online = sub
        .wait_for("fleet/_controller/status", SECS, |_| true)
        .expect("controller presence is retained");
    let online = f.open_presence(&online.payload);
    assert!(online.online);
    assert_eq!(online.http_url.as_deref(), Some(f.http.as_str()));
    assert!(
        f.terminate(),
        "fleetd exits 0 on SIGTERM; stderr:\n{}",
        f.stderr()
    );
}

/// A signed download URL from fleetd's fresh-URL endpoint.
fn fresh_download_url(f: &Fleetd, name: &str, version: &str) -> String {
    let (status, body) = get(&f.url(&format!("/api/v1/artifacts/{name}/{version}/url")));
    assert_eq!(status, 200, "{body}");
    parse_json(&body)["url"]
        .as_str()
        .expect("url in the answer")
        .to_string()
}
