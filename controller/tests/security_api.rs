//! The API's side of the trust model, against a real fleetd: every call but health, signed
//! downloads and enrollment needs a token of the right scope (and application, for CI tokens);
//! enrollment binds a device id to one key, with a token or an operator's decision; devices get
//! fresh download URLs only for their own artifacts; and no secret ever appears in a log line or
//! an API answer. The insecure mode turns authentication off but keeps every signature.

mod support;

use serde_json::json;
use std::time::Duration;
use support::agent::Agent;
use support::device::{enroll_request, new_request, SimDevice};
use support::fleet::{deploy, upload_sample, wait_deployment, wait_online, APP};
use support::{get, get_as, parse_json, post, post_as, post_json, upload, wait_until, Fleetd};

const SECS: Duration = Duration::from_secs(15);

fn deployment_body(app: &str) -> Vec<u8> {
    json!({"application": app, "version": "1.0.0", "target": {"devices": ["d1"]}})
        .to_string()
        .into_bytes()
}

#[test]
fn api_calls_need_a_token_of_the_right_scope_and_application() {
    let f = Fleetd::start();
    announce_d1(&f);
    assert_eq!(upload(&f, "web", "1.0.0", b"web").0, 201);
    assert_eq!(upload(&f, "db", "1.0.0", b"db").0, 201);
    let deployments = f.url("/api/v1/deployments");

    // Public: health, and nothing else without a token.
    assert_eq!(get_as(&f.url("/api/v1/health"), None).0, 200);
    for path in [
        "/api/v1/devices",
        "/api/v1/artifacts",
        "/metrics",
        "/api/v1/tokens",
    ] {
        let (status, body) = get_as(&f.url(path), None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            parse_json(&body)["error"]
                .as_str()
                .is_some_and(|e| e.contains("Authorization")),
            "{path}: {body}"
        );
    }
    let (status, body) = get_as(&f.url("/api/v1/devices"), Some("fleet_0000000a_nonsense"));
    assert_eq!(status, 401, "{body}");
    let unknown = format!("fleet_deadbeef_{}", "0".repeat(64));
    let (status, body) = get_as(&f.url("/api/v1/devices"), Some(&unknown));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("deadbeef"), "names the token id: {body}");

    // Read: reads, cannot deploy or administer.
    let read = f.create_token("dashboard", &["read"], &[]);
    assert_eq!(get_as(&f.url("/api/v1/devices"), Some(&read)).0, 200);
    assert_eq!(get_as(&f.url("/metrics"), Some(&read)).0, 200);
    let (status, body) = post_as(
        &deployments,
        Some(&read),
        "application/json",
        &deployment_body("web"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("\\\"deploy\\\"") || body.contains("deploy"),
        "{body}"
    );
    assert_eq!(get_as(&f.url("/api/v1/tokens"), Some(&read)).0, 403);

    // Deploy limited to one application: that one yes, another no, tokens no.
    let ci = f.create_token("ci-web", &["deploy"], &["web"]);
    let (status, body) = post_as(
        &deployments,
        Some(&ci),
        "application/json",
        &deployment_body("web"),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = post_as(
        &deployments,
        Some(&ci),
        "application/json",
        &deployment_body("db"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        parse_json(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"db\"")),
        "names the refused application: {body}"
    );
    let sig = json!({"key_id": "0123456789abcdef", "algorithm": "ed25519", "signature": "00"});
    let (status, body) = post_as(
        &f.url("/api/v1/artifacts/db/1.0.0/signatures"),
        Some(&ci),
        "application/json",
        sig.to_string().as_bytes(),
    );
    assert_eq!(
        status, 403,
        "a CI token cannot replace another app's signature: {body}"
    );
    let (status, _) = post_as(
        &f.url("/api/v1/artifacts/db/1.0.0/signatures"),
        Some(&read),
        "application/json",
        sig.to_string().as_bytes(),
    );
    assert_eq!(status, 403, "nor can a read token");
    assert_eq!(get_as(&f.url("/api/v1/enrollments"), Some(&ci)).0, 403);

    // Revoked and expired tokens stop working.
    let id = ci
        .strip_prefix("fleet_")
        .and_then(|r| r.split('_').next())
        .expect("id");
    assert_eq!(
        support::delete(&f.url(&format!("/api/v1/tokens/{id}"))).0,
        200
    );
    let (status, body) = get_as(&f.url("/api/v1/devices"), Some(&ci));
    assert_eq!(status, 401);
    assert!(body.contains("revoked"), "{body}");
    let (status, created) = post_json(
        &f.url("/api/v1/tokens"),
        &json!({"name": "short", "scopes": ["read"], "expires_in": "1s"}),
    );
    assert_eq!(status, 201, "{created}");
    let short = created["token"].as_str().expect("token").to_string();
    assert_eq!(get_as(&f.url("/api/v1/devices"), Some(&short)).0, 200);
    std::thread::sleep(Duration::from_millis(1200));
    let (status, body) = get_as(&f.url("/api/v1/devices"), Some(&short));
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");

    // Listing tokens never shows a secret.
    let (status, list) = get(&f.url("/api/v1/tokens"));
    assert_eq!(status, 200);
    for secret in [&read, &short] {
        let s = secret.rsplit('_').next().expect("secret");
        assert!(!list.contains(s), "token list leaks a secret: {list}");
    }
    // A malformed token request names the field.
    let (status, body) = post_json(
        &f.url("/api/v1/tokens"),
        &json!({"name": "x", "scope": ["read"]}),
    );
    assert_eq!(status, 400);
    assert!(body.to_string().contains("scope"), "{body}");
}

fn announce_d1(f: &Fleetd) -> SimDevice {
    support::announce(f, &support::device_status("d1", &[]))
}

#[test]
fn enrollment_binds_an_id_to_one_key_with_a_token_or_an_operator() {
    let f = Fleetd::start();
    let access = f.access();
    let now = support::procs::now_ms();

    // With a token: accepted at once. A second key for the same id: refused.
    let _d1 = SimDevice::enroll(&access, "bound");
    let (_, other, _) = new_request("bound", now);
    let (status, body) = enroll_request(&access, Some(&access.enroll_token), &other);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("revoke or reset"), "{body}");

    // A bad or exhausted token: refused with a reason, nothing recorded.
    let (_, req, _) = new_request("tokenless", now);
    let bad = format!("enroll_0badc0de_{}", "1".repeat(64));
    let (status, body) = enroll_request(&access, Some(&bad), &req);
    assert_eq!(status, 401, "{body}");
    let once = f.create_enroll_token(&json!({"name": "once", "uses": 1, "labels": {"site": "s1"}}));
    let (_, a, _) = new_request("once-a", now);
    assert_eq!(enroll_request(&access, Some(&once), &a).0, 200);
    let (_, b, _) = new_request("once-b", now);
    let (status, body) = enroll_request(&access, Some(&once), &b);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no uses left"), "{body}");

    // Without a token: pending until an operator decides.
    let (waiting_key, pend, _) = new_request("waiting", now);
    let (status, body) = enroll_request(&access, None, &pend);
    assert_eq!(status, 202, "{body}");
    let (status, list) = get(&f.url("/api/v1/enrollments?state=pending"));
    assert_eq!(status, 200);
    let list = parse_json(&list);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["device_id"], "waiting");
    assert_eq!(
        post(
            &f.url("/api/v1/devices/waiting/accept"),
            "application/json",
            b""
        )
        .0,
        200
    );
    // Its next request (same key, newer) gets its credentials; a replay of the old one does not.
    let (again, _) = fleet_schema::trust::enroll::EnrollRequest::new_signed(
        &fleet_schema::DeviceId::parse("waiting").expect("id"),
        &waiting_key,
        Default::default(),
        "sim",
        now + 1,
    )
    .expect("request");
    assert_eq!(enroll_request(&access, None, &again).0, 200);
    let (status, body) = enroll_request(&access, None, &pend);
    assert_eq!(status, 409, "a replayed request is refused: {body}");
    let mut agent = Agent::start_with_args(
        "pending-agent",
        &support::Access {
            enroll_token: String::new(),
            ..f.access()
        },
        &[],
        &[],
    );
    let pending = wait_until(SECS, || {
        parse_json(&get(&f.url("/api/v1/enrollments?state=pending")).1)
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["device_id"] == "pending-agent"))
    });
    assert!(
        pending,
        "the tokenless agent waits for an operator:\n{}",
        agent.log()
    );
    // fleetd records the request before the agent has read (and logged) the answer.
    assert!(
        wait_until(SECS, || agent.log().contains("enrollment pending")),
        "{}",
        agent.log()
    );
    assert_eq!(
        post(
            &f.url("/api/v1/devices/pending-agent/accept"),
            "application/json",
            b""
        )
        .0,
        200
    );
    wait_online(&f, &[&agent]);
    assert!(agent.is_running());

    // Rejected: that key is told so, and never accepted, not even with a token.
    let (rej_key, rej, _) = new_request("rejected", now);
    assert_eq!(enroll_request(&access, None, &rej).0, 202);
    assert_eq!(
        post(
            &f.url("/api/v1/devices/rejected/reject"),
            "application/json",
            b""
        )
        .0,
        200
    );
    let (rej2, _) = fleet_schema::trust::enroll::EnrollRequest::new_signed(
        &fleet_schema::DeviceId::parse("rejected").expect("id"),
        &rej_key,
        Default::default(),
        "sim",
        now + 1,
    )
    .expect("request");
    let (status, body) = enroll_request(&access, Some(&access.enroll_token), &rej2);
    assert_eq!(status, 403, "a rejected key stays out: {body}");
    // Another key for that id is a new request for the operator to judge.
    let (_, rej3, _) = new_request("rejected", now + 2);
    assert_eq!(enroll_request(&access, None, &rej3).0, 202);

    // Malformed requests name the field; forged ones are refused.
    let (status, body) = post_as(
        &f.url("/api/v1/enroll"),
        None,
        "application/json",
        br#"{"device_id": "x"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (_, mut forged, _) = new_request("forged", now);
    forged.device_id = "victim".into();
    let (status, body) = enroll_request(&access, Some(&access.enroll_token), &forged);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("signature"), "{body}");
    agent.stop();
}

#[test]
fn devices_get_fresh_urls_only_for_their_own_artifacts() {
    let f = Fleetd::start();
    let d1 = announce_d1(&f);
    assert_eq!(upload(&f, "app", "1.0.0", b"one").0, 201);
    assert_eq!(upload(&f, "other", "1.0.0", b"two").0, 201);
    let (status, body) = post_json(
        &f.url("/api/v1/deployments"),
        &json!({"application": "app", "version": "1.0.0", "target": {"devices": ["d1"]}}),
    );
    assert_eq!(status, 201, "{body}");
    let cred = fleet_schema::trust::tokens::device_credential(
        "d1",
        &d1.end_ref().enrolled().mqtt_password,
    );
    let (status, body) = get_as(&f.url("/api/v1/artifacts/app/1.0.0/url"), Some(&cred));
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_as(&f.url("/api/v1/artifacts/other/1.0.0/url"), Some(&cred));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("desired state"), "{body}");
    assert_eq!(
        get_as(&f.url("/api/v1/artifacts/app/1.0.0/url"), None).0,
        401
    );
    let read = f.create_token("ro", &["read"], &[]);
    assert_eq!(
        get_as(&f.url("/api/v1/artifacts/app/1.0.0/url"), Some(&read)).0,
        403
    );
    // The device credential opens nothing else.
    assert_eq!(get_as(&f.url("/api/v1/devices"), Some(&cred)).0, 403);
}

#[test]
fn no_secret_appears_in_any_log_line_or_api_answer_on_the_embedded_broker() {
    no_secret_appears_in_any_log_line_or_api_answer(false);
}

#[test]
fn no_secret_appears_in_any_log_line_or_api_answer_on_mosquitto() {
    no_secret_appears_in_any_log_line_or_api_answer(true);
}

fn no_secret_appears_in_any_log_line_or_api_answer(mosquitto: bool) {
    let m = if mosquitto {
        let Some(m) =
            support::external::Mosquitto::start(support::external::MosquittoAuth::FleetFiles)
        else {
            return;
        };
        Some(m)
    } else {
        None
    };
    let f = match &m {
        Some(m) => Fleetd::start_external(&support::external::BrokerRef::of(m)),
        None => Fleetd::start(),
    };
    let agent = Agent::start("keeper", &f.access(), &[("site", "vault")]);
    wait_online(&f, &[&agent]);
    upload_sample(&f, "1.0.0");
    let manifest = json!({
        "apiVersion": "fleet.v1",
        "kind": "Application",
        "metadata": {"name": APP, "version": "1.0.0"},
        "spec": {
            "artifacts": [{"name": APP, "version": "1.0.0", "type": "binary"}],
            "configuration": {
                "env": {"MODE": "plain"},
                "secrets": {"DB_PASSWORD": "hunter2-secret-value"},
                "files": [{"path": "key.pem", "content": "PRIVATE-KEY-MATERIAL", "secret": true}]
            }
        }
    });
    support::fleet::register_app(&f, &manifest);
    let d = deploy(&f, "1.0.0", &["keeper"]);
    wait_deployment(&f, &d, "succeeded", &[&agent]);
    // The app did get its secrets.
    let pid = agent.app_pids(APP, "1.0.0")[0];
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(
        String::from_utf8_lossy(&environ).contains("DB_PASSWORD=hunter2-secret-value"),
        "the app received its secret"
    );
    let file = agent.data_dir().join(format!("apps/{APP}/1.0.0/key.pem"));
    assert_eq!(
        std::fs::read_to_string(&file).expect("secret file"),
        "PRIVATE-KEY-MATERIAL"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
        0o600,
        "secret files are private"
    );

    // The admin sees the secrets; a read or deploy token sees them redacted.
    let app_url = f.url(&format!("/api/v1/applications/{APP}/1.0.0"));
    assert!(
        get(&app_url).1.contains("hunter2-secret-value"),
        "admin sees it"
    );
    let read = f.create_token("reader", &["read"], &[]);
    let deploy_token = f.create_token("ci", &["deploy"], &[]);
    let mut answers = String::new();
    for token in [&read, &deploy_token] {
        for path in [
            format!("/api/v1/applications/{APP}/1.0.0"),
            "/api/v1/applications".to_string(),
            "/api/v1/devices".to_string(),
            "/api/v1/devices/keeper".to_string(),
            "/api/v1/deployments".to_string(),
            format!("/api/v1/deployments/{d}"),
            "/api/v1/enrollments".to_string(),
            "/api/v1/tokens".to_string(),
            "/metrics".to_string(),
        ] {
            answers.push_str(&get_as(&f.url(&path), Some(token)).1);
        }
    }
    assert!(answers.contains("<redacted>"), "secrets are shown redacted");
    // Whatever travelled on the bus for the device (read as the broker's administrator on
    // Mosquitto, where tokens may not read desired states).
    let mut bus = match &m {
        None => support::MqttClient::connect(f.mqtt_port, "snoop"),
        Some(m) => support::MqttClient::connect_as(
            m.port,
            "snoop",
            Some(("_fleetd", &m.controller_password())),
        )
        .expect("connect as the broker's administrator"),
    };
    bus.subscribe("fleet/+/cmd");
    let cmd = bus
        .wait_for("fleet/keeper/cmd", SECS, |_| true)
        .expect("retained desired state");
    let bus_text = String::from_utf8_lossy(&cmd.payload).into_owned();

    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.data_dir().join("enrollment.json")).expect("record"),
    )
    .expect("json");
    let device_password = record["mqtt_password"]
        .as_str()
        .expect("password")
        .to_string();
    let bus_key = record["bus_key"].as_str().expect("bus key").to_string();
    let admin_secret = support::admin_token()
        .rsplit('_')
        .next()
        .expect("secret")
        .to_string();
    let enroll_secret = f
        .enroll_token
        .rsplit('_')
        .next()
        .expect("secret")
        .to_string();
    let reader_secret = read.rsplit('_').next().expect("secret").to_string();
    // The private seed of an ed25519 PKCS#8 document (ring's v2 layout: a 16-byte header, the
    // 32-byte seed, then the public key).
    let seed = |path: std::path::PathBuf| {
        let der = std::fs::read(path).expect("key file");
        assert_eq!(der[14..16], [0x04, 0x20], "PKCS#8 ed25519 layout");
        hex_of(&der[16..48])
    };
    let device_key = seed(agent.data_dir().join("device.key"));
    let controller_key = seed(f.data_dir().join("controller.key"));
    let secrets = [
        ("the secret env value", "hunter2-secret-value".to_string()),
        ("the secret file", "PRIVATE-KEY-MATERIAL".to_string()),
        ("the admin token", admin_secret),
        ("the enrollment token", enroll_secret),
        ("a read token", reader_secret),
        ("the device's MQTT password", device_password),
        ("the device's bus key", bus_key),
        ("the device key", device_key),
        ("the controller key", controller_key),
    ];
    let places = [
        ("fleetd's log", f.stderr()),
        (
            "the broker's log and files",
            m.as_ref()
                .map(|m| format!("{}{}{}", m.log(), m.files().0, m.files().1))
                .unwrap_or_default(),
        ),
        ("the agent's log", agent.log()),
        ("API answers to read and deploy tokens", answers),
        ("the bus", bus_text),
    ];
    for (what, secret) in &secrets {
        for (place, text) in &places {
            assert!(!text.contains(secret.as_str()), "{what} appears in {place}");
        }
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn insecure_mode_drops_authentication_but_keeps_every_signature() {
    let f = Fleetd::start_insecure();
    assert!(
        f.stderr().contains("INSECURE MODE"),
        "a loud warning at start:\n{}",
        f.stderr()
    );
    // No token needed, and devices enroll without one.
    assert_eq!(get_as(&f.url("/api/v1/devices"), None).0, 200);
    let agent = Agent::start(
        "lab-1",
        &support::Access {
            enroll_token: String::new(),
            ..f.access()
        },
        &[],
    );
    wait_online(&f, &[&agent]);
    upload_sample(&f, "1.0.0");
    let d = deploy(&f, "1.0.0", &["lab-1"]);
    wait_deployment(&f, &d, "succeeded", &[&agent]);
    // Anyone may connect to the bus, but an unsigned desired state still moves nothing.
    let mut stranger = support::MqttClient::connect_as(f.mqtt_port, "stranger", None)
        .expect("anyone may connect in insecure mode");
    let evil = fleet_schema::DesiredState {
        device_id: "lab-1".into(),
        generation: 99,
        apps: vec![],
        issued_at: 0,
    };
    stranger.publish(
        "fleet/lab-1/cmd",
        fleet_schema::encode(&evil).expect("encodes"),
        false,
    );
    let refused = wait_until(SECS, || agent.log().contains("not a signed FleetD message"));
    assert!(refused, "{}", agent.log());
    assert_eq!(
        agent.app_pids(APP, "1.0.0").len(),
        1,
        "the app kept running"
    );
}

#[test]
fn fleetd_init_prints_a_working_admin_token_once() {
    let mut f = Fleetd::start();
    let init = |data: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fleetd"))
            .arg("init")
            .arg("--data-dir")
            .arg(data)
            .output()
            .expect("run fleetd init")
    };
    // While fleetd runs, its database is locked: init says so.
    let busy = init(&f.data_dir());
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("is fleetd running"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    f.kill9();
    let out = init(&f.data_dir());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("fleet_"), "{token}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&token),
        "the token is printed once, on stdout only"
    );
    f.restart();
    assert_eq!(get_as(&f.url("/api/v1/tokens"), Some(&token)).0, 200);
    let (_, list) = get(&f.url("/api/v1/tokens"));
    assert!(list.contains("\"admin\""), "{list}");
}

/// The seed's two API calls, run with the real curl as a CI script would, with a deploy-scoped
/// token as `$API_KEY` (only the host differs from the seed).
#[test]
fn the_seeds_curl_calls_work_with_a_deploy_token() {
    let Some(curl) = support::external::require_tool("curl", &["/usr/bin/curl"]) else {
        return;
    };
    // Over HTTPS, as in the seed; curl trusts the test CA through `CURL_CA_BUNDLE`, so the
    // commands themselves stay verbatim.
    let f = Fleetd::start_tls();
    assert!(f.http.starts_with("https://"), "{}", f.http);
    let ca = support::test_certs().join("ca.pem");
    let group = json!({"name": "edge-stores", "selector": {"tier": "edge"}});
    assert_eq!(post_json(&f.url("/api/v1/groups"), &group).0, 201);
    let mut status =
        support::device_status("store-1", &[("tier", "edge"), ("location", "us-west")]);
    status.inventory.as_mut().expect("inventory").arch = "arm64".into();
    let _d = support::announce(&f, &status);
    // In us-west but not an edge store: the seed's target (group AND selector) leaves it out.
    let mut outside =
        support::device_status("store-2", &[("tier", "core"), ("location", "us-west")]);
    outside.inventory.as_mut().expect("inventory").arch = "arm64".into();
    let _d2 = support::announce(&f, &outside);
    let api_key = f.create_token("ci", &["deploy"], &["myapp"]);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("myapp-v2.0.0-arm64"),
        b"\x7fELF fake arm64 binary",
    )
    .expect("write");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&curl)
            .current_dir(dir.path())
            .env("API_KEY", &api_key)
            .env("CURL_CA_BUNDLE", &ca)
            .args(["-sS", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (code.trim().to_string(), body.to_string())
    };
    let auth = format!("Authorization: Bearer {api_key}");
    let (code, body) = run(&[
        "-X",
        "POST",
        &f.url("/api/v1/artifacts"),
        "-H",
        &auth,
        "-F",
        "file=@myapp-v2.0.0-arm64",
        "-F",
        "metadata={
    \"name\": \"myapp\",
    \"version\": \"2.0.0\",
    \"platform\": \"linux/arm64\",
    \"type\": \"binary\"
  }",
    ]);
    assert_eq!(code, "201", "upload: {body}");
    let (code, body) = run(&[
        "-X",
        "POST",
        &f.url("/api/v1/deployments"),
        "-H",
        &auth,
        "-d",
        r#"{
    "application": "myapp",
    "version": "2.0.0",
    "strategy": {
      "type": "rolling",
      "max_unavailable": 1,
      "health_check_grace": "30s"
    },
    "target": {
      "group": "edge-stores",
      "selector": {
        "location": "us-west"
      }
    }
  }"#,
    ]);
    assert_eq!(code, "201", "deploy: {body}");
    let created = support::parse_json(&body);
    assert_eq!(created["devices"], json!(["store-1"]), "{body}");
    // Without the header, both are refused.
    let (code, _) = run(&["-X", "POST", &f.url("/api/v1/deployments"), "-d", "{}"]);
    assert_eq!(code, "401");
}
