//! Deploying from CI by MQTT publish, with the real `mosquitto_pub` and `mosquitto_sub` as a CI
//! script would run them: against the embedded broker (answers, a repeated id after a fleetd
//! restart, refused requests naming the field, an artifact registered from a URL) and against
//! Mosquitto with the password and ACL files fleetd writes (a token reads only its own replies).

mod support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::agent::Agent;
use support::external::{require_tool, BrokerRef, Mosquitto, MosquittoAuth};
use support::fleet::{sample_app_bytes, upload_sample, wait_online, APP};
use support::{get, parse_json, Fleetd};

/// The CI side: a token and the mosquitto clients.
struct Ci {
    port: u16,
    token: String,
    user: String,
    pub_bin: PathBuf,
    sub_bin: PathBuf,
}

impl Ci {
    fn new(f: &Fleetd, port: u16, apps: &[&str]) -> Option<Ci> {
        let pub_bin = require_tool("mosquitto_pub", &["/usr/bin/mosquitto_pub"])?;
        let sub_bin = require_tool("mosquitto_sub", &["/usr/bin/mosquitto_sub"])?;
        let token = f.create_token("ci", &["deploy"], apps);
        let id = token.split('_').nth(1).expect("token id").to_string();
        Some(Ci {
            port,
            token,
            user: format!("_token-{id}"),
            pub_bin,
            sub_bin,
        })
    }

    fn reply(&self, id: &str) -> String {
        format!("fleet/_ci/replies/{}/{id}", self.user)
    }

    /// `mosquitto_sub -C count -W secs` on `topic` (extra flags such as `-R`), started now.
    fn sub(&self, topic: &str, count: u32, secs: u32, extra: &[&str]) -> Child {
        let child = Command::new(&self.sub_bin)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", &self.user, "-P", &self.token, "-q", "1"])
            .args([
                "-t",
                topic,
                "-C",
                &count.to_string(),
                "-W",
                &secs.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_sub");
        // Let it subscribe before anything is published.
        std::thread::sleep(Duration::from_millis(300));
        child
    }

    /// Publishes a JSON request signed with this token, as a CI script does (topics.md).
    fn publish(&self, request: &Value) {
        let body = request.to_string();
        let topic = self.signed_topic(body.as_bytes());
        self.publish_args(&topic, &["-m", &body]);
    }

    /// Publishes a request as it is on the plain topic (a token inside, if any).
    fn publish_plain(&self, request: &Value) {
        self.publish_args("fleet/_ci/requests", &["-m", &request.to_string()]);
    }

    /// `fleet/_ci/requests/<token id>/<hmac of payload>`.
    fn signed_topic(&self, payload: &[u8]) -> String {
        let mut parts = self.token.split('_').skip(1);
        let (id, secret) = (parts.next().expect("id"), parts.next().expect("secret"));
        let key_hex = hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            secret.as_bytes(),
        ));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key_hex.as_bytes());
        let mac = hex::encode(ring::hmac::sign(&key, payload));
        format!("fleet/_ci/requests/{id}/{mac}")
    }

    /// `mosquitto_pub` on `topic` with the payload flags `payload`.
    fn publish_args(&self, topic: &str, payload: &[&str]) {
        let out = Command::new(&self.pub_bin)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", &self.user, "-P", &self.token, "-q", "1"])
            .args(["-t", topic])
            .args(payload)
            .output()
            .expect("run mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publishes `request` (signed by `sender`) and returns the first answer on
    /// `<reply of id>/result` (`extra` flags for mosquitto_sub, such as `-R`: live only).
    fn ask(&self, f: &Fleetd, sender: &Ci, id: &str, request: &Value, extra: &[&str]) -> Value {
        self.ask_with(f, id, extra, || sender.publish(request))
    }

    /// Runs `send` and returns the first answer on `<reply of id>/result`.
    fn ask_with(&self, f: &Fleetd, id: &str, extra: &[&str], send: impl FnOnce()) -> Value {
        let sub = self.sub(&format!("{}/result", self.reply(id)), 1, 30, extra);
        send();
        answers(sub, f).remove(0)
    }

    /// A request (to be signed), issued now.
    fn request(&self, id: &str, version: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        json!({
            "id": id,
            "issued_at": now,
            "deployment": {
                "application": APP,
                "version": version,
                "target": {"selector": {"site": "ci"}},
            },
        })
    }
}

/// The JSON lines a finished `mosquitto_sub` printed.
fn answers(child: Child, f: &Fleetd) -> Vec<Value> {
    let out = child.wait_with_output().expect("mosquitto_sub");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.trim().is_empty(),
        "no answer (mosquitto_sub: {}); fleetd stderr:\n{}",
        String::from_utf8_lossy(&out.stderr),
        f.stderr()
    );
    text.lines().map(parse_json).collect()
}

fn deployment_count(f: &Fleetd) -> usize {
    let (_, body) = get(&f.url("/api/v1/deployments"));
    parse_json(&body).as_array().map_or(0, Vec::len)
}

/// Serves `body` over HTTP/1.0 once per connection, for artifacts given by URL.
fn serve(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten().take(5) {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    format!("http://{addr}/builds/sample-app")
}

#[test]
fn ci_deploys_by_mqtt_publish_on_the_embedded_broker() {
    let mut f = Fleetd::start();
    let Some(ci) = Ci::new(&f, f.mqtt_port, &[APP]) else {
        return;
    };
    let agent = Agent::start(
        "ci-1",
        &f.access(),
        &[("site", "ci"), ("tier", "edge"), ("location", "us-west")],
    );
    wait_online(&f, &[&agent]);
    upload_sample(&f, "1.0.0");

    // A deployment: accepted, progress, then the verdict on <reply>/result.
    let reply = ci.reply("build-1");
    let progress = ci.sub(&format!("{reply}/progress"), 1, 60, &[]);
    let result = ci.sub(&format!("{reply}/result"), 1, 90, &[]);
    ci.publish(&ci.request("build-1", "1.0.0"));
    let verdict = answers(result, &f).remove(0);
    assert_eq!(verdict["event"], "result", "{verdict}");
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    let deployment = verdict["deployment"].as_str().expect("id").to_string();
    assert_eq!(answers(progress, &f)[0]["deployment"], deployment);
    let accepted = answers(ci.sub(&format!("{reply}/accepted"), 1, 10, &[]), &f).remove(0);
    assert_eq!(accepted["deployment"], deployment, "{accepted}");
    assert_eq!(accepted["devices"], json!(["ci-1"]));
    assert_eq!(deployment_count(&f), 1);

    // The same id again is answered again (live, after the retained copy), not deployed twice.
    let again = ci.sub(&format!("{reply}/result"), 2, 15, &[]);
    ci.publish(&ci.request("build-1", "1.0.0"));
    let both = answers(again, &f);
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both[1]["deployment"], deployment);
    assert_eq!(deployment_count(&f), 1);

    // A malformed request is answered with the field it got wrong, and changes nothing.
    let mut bad = ci.request("build-2", "1.0.0");
    bad["colour"] = json!("red");
    let refused = ci.ask(&f, &ci, "build-2", &bad, &[]);
    assert_eq!(refused["outcome"], "rejected", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{refused}"
    );
    let mut bad = ci.request("build-3", "1.0.0");
    bad["deployment"]["target"] = json!({"selector": {"site": "nowhere"}});
    let refused = ci.ask(&f, &ci, "build-3", &bad, &[]);
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("site=nowhere"),
        "{refused}"
    );
    assert_eq!(deployment_count(&f), 1);

    // Requests that do not authenticate are refused and change nothing: a token sent inside a
    // request on this broker (any client could read it), a wrong HMAC, an old signature.
    let error_of = |v: &Value| v["error"].as_str().unwrap_or_default().to_string();
    let mut carried = ci.request("build-5", "1.0.0");
    carried["token"] = json!(ci.token);
    carried.as_object_mut().expect("object").remove("issued_at");
    let refused = ci.ask_with(&f, "build-5", &[], || ci.publish_plain(&carried));
    assert!(error_of(&refused).contains("exposed"), "{refused}");
    let body = ci.request("build-6", "1.0.0").to_string();
    let forged = ci.signed_topic(b"another payload");
    let refused = ci.ask_with(&f, "build-6", &[], || {
        ci.publish_args(&forged, &["-m", &body])
    });
    assert!(error_of(&refused).contains("HMAC"), "{refused}");
    let mut old = ci.request("build-7", "1.0.0");
    old["issued_at"] = json!(old["issued_at"].as_u64().expect("secs") - 3600);
    let refused = ci.ask(&f, &ci, "build-7", &old, &[]);
    assert!(error_of(&refused).starts_with("issued_at"), "{refused}");
    // Refusals of authentication are not retained (anyone can name a token id).
    let late = ci.sub(&format!("{}/result", ci.reply("build-6")), 1, 2, &[]);
    let out = late.wait_with_output().expect("mosquitto_sub");
    assert!(out.stdout.is_empty(), "a refusal was retained");
    assert_eq!(deployment_count(&f), 1);

    // After a restart (the embedded broker forgot its retained answers) the ledger answers.
    f.restart();
    wait_online(&f, &[&agent]);
    let after = ci.ask(&f, &ci, "build-1", &ci.request("build-1", "1.0.0"), &[]);
    assert_eq!(after["deployment"], deployment, "{after}");
    assert_eq!(deployment_count(&f), 1);

    // The same id with another request is refused (live only: the first verdict stays).
    let conflict = ci.ask(&f, &ci, "build-1", &ci.request("build-1", "2.0.0"), &["-R"]);
    assert!(
        conflict["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already used"),
        "{conflict}"
    );

    // An artifact reachable by URL is registered first, then deployed. This request is CBOR
    // (mosquitto_pub -f), and so are the answers (printed as hex by mosquitto_sub -F %x).
    let bytes = sample_app_bytes("2.0.0");
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    let mut req = ci.request("build-4", "2.0.0");
    req["artifact"] = json!({"name": APP, "version": "2.0.0", "url": serve(bytes), "sha256": sha});
    let cbor_file = tempfile::NamedTempFile::new().expect("temp file");
    let cbor = fleet_schema::encode(&req).expect("CBOR");
    std::fs::write(cbor_file.path(), &cbor).expect("write");
    let done = ci.sub(
        &format!("{}/result", ci.reply("build-4")),
        1,
        90,
        &["-F", "%x"],
    );
    let out = Command::new(&ci.pub_bin)
        .args(["-h", "127.0.0.1", "-p", &ci.port.to_string()])
        .args(["-u", &ci.user, "-P", &ci.token, "-q", "1"])
        .args(["-t", &ci.signed_topic(&cbor), "-f"])
        .arg(cbor_file.path())
        .output()
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = done.wait_with_output().expect("mosquitto_sub");
    let hex_text = String::from_utf8_lossy(&out.stdout);
    let cbor = hex::decode(hex_text.trim()).expect("hex answer");
    let done: Value = fleet_schema::decode(&cbor, 1 << 20).expect("a CBOR answer");
    assert_eq!(done["outcome"], "succeeded", "{done}");
    let (status, _) = get(&f.url(&format!("/api/v1/artifacts/{APP}/2.0.0")));
    assert_eq!(status, 200);
    assert_eq!(deployment_count(&f), 2);

    // The README's copy-paste example, as printed (host, port and app name aside).
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("README");
    let example = readme
        .split("**By MQTT publish**")
        .nth(1)
        .and_then(|r| r.split("```sh\n").nth(1))
        .and_then(|r| r.split("```").next())
        .expect("the MQTT example")
        .replace("fleet.example", "127.0.0.1")
        .replace("-p 1883", &format!("-p {}", f.mqtt_port))
        .replace("my-app", APP);
    let group = json!({"name": "edge-stores", "selector": {"tier": "edge"}});
    assert_eq!(support::post_json(&f.url("/api/v1/groups"), &group).0, 201);
    let out = Command::new("sh")
        .args(["-c", &example])
        .env("FLEET_TOKEN", &ci.token)
        .env("CI_PIPELINE_ID", "4711")
        .output()
        .expect("run the README example");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = parse_json(text.trim());
    assert_eq!(verdict["outcome"], "succeeded", "{text}");
    assert_eq!(verdict["id"], format!("{APP}-2.0.0-4711"));
    assert_eq!(deployment_count(&f), 3);
}

#[test]
fn ci_deploys_through_mosquitto_with_the_generated_acl() {
    let Some(broker) = Mosquitto::start(MosquittoAuth::FleetFiles) else {
        return;
    };
    let f = Fleetd::start_external(&BrokerRef::of(&broker));
    let Some(ci) = Ci::new(&f, broker.port, &[APP]) else {
        return;
    };
    let other = Ci::new(&f, broker.port, &[]).expect("tools are there");
    // fleetd rewrites the files after the token changes: wait until both tokens are in them.
    let ok = support::wait_until(Duration::from_secs(10), || {
        let (_, acl) = broker.files();
        acl.contains(&format!("topic read fleet/_ci/replies/{}/#", ci.user))
            && acl.contains(&format!("topic read fleet/_ci/replies/{}/#", other.user))
    });
    assert!(ok, "ACL:\n{}", broker.files().1);
    std::thread::sleep(Duration::from_millis(500));
    let agent = Agent::start("ci-m1", &f.access(), &[("site", "ci")]);
    wait_online(&f, &[&agent]);
    upload_sample(&f, "1.0.0");

    let reply = ci.reply("m-1");
    // Another token may not read this token's replies: its subscription gets nothing.
    let snoop = other.sub(&format!("{reply}/#"), 1, 8, &[]);
    let result = ci.sub(&format!("{reply}/result"), 1, 90, &[]);
    ci.publish(&ci.request("m-1", "1.0.0"));
    let verdict = answers(result, &f).remove(0);
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    let snooped = snoop.wait_with_output().expect("mosquitto_sub");
    assert!(
        snooped.stdout.is_empty(),
        "another token read the replies: {}",
        String::from_utf8_lossy(&snooped.stdout)
    );
    // This broker keeps requests private, so a request may carry its token (plain topic); a
    // wrong token is refused all the same.
    let mut req = other.request("m-2", "1.0.0");
    req["token"] = json!(ci.token.replace(&ci.token[ci.token.len() - 4..], "0000"));
    let refused = ci.ask_with(&f, "m-2", &[], || other.publish_plain(&req));
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("token"),
        "{refused}"
    );
    assert_eq!(deployment_count(&f), 1);

    // The README's script (integrations/mqtt/deploy.sh) through the same ACL: a verdict and an
    // exit code per outcome.
    let script = |id: &str, target: &str| {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../integrations/mqtt/deploy.sh");
        Command::new("sh")
            .arg(path)
            .env("FLEET_MQTT_PORT", broker.port.to_string())
            .env("FLEET_TOKEN", &ci.token)
            .env("APP", APP)
            .env("VERSION", "1.0.0")
            .env("TARGET", target)
            .env("STRATEGY", r#"{"type":"all-at-once"}"#)
            .env("REQUEST_ID", id)
            .env("TIMEOUT", "60")
            .output()
            .expect("run deploy.sh")
    };
    let out = script("m-3", r#"{"selector":{"site":"ci"}}"#);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"event\":\"progress\""), "{text}");
    let out = script("m-4", r#"{"selector":{"site":"nowhere"}}"#);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("site=nowhere"), "{text}");
    assert_eq!(deployment_count(&f), 2);
}
