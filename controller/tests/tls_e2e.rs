//! TLS everywhere it matters, end to end: fleetd serves HTTPS and its embedded broker MQTT over
//! TLS with certificates from `fleetctl certs dev`; an agent given the CA enrolls over HTTPS,
//! connects over mqtts:// and runs a deployment (artifact downloaded over HTTPS); fleetctl with
//! the CA works, and without it, or a plain-text client, is refused.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;
use support::agent::Agent;
use support::fleet::{deploy, upload_sample, wait_deployment, wait_online, APP};
use support::procs::workspace_bin;
use support::{test_certs, wait_until, Fleetd, MqttClient};

#[test]
fn the_loop_runs_over_tls_and_plain_text_is_refused() {
    let f = Fleetd::start_tls();
    assert!(f.http.starts_with("https://"), "{}", f.http);
    assert!(f.mqtt_url().starts_with("mqtts://"), "{}", f.mqtt_url());
    let ca = test_certs().join("ca.pem");

    // Plain text to the TLS ports gets no answer in plain text.
    let addr = f.http.trim_start_matches("https://").to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    tcp.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "plain HTTP is not served on the HTTPS port"
    );
    assert!(
        MqttClient::connect_as(
            f.mqtt_port,
            "plain",
            Some((&support::admin_username(), support::admin_token()))
        )
        .is_err(),
        "plain MQTT is not served on the TLS port"
    );

    // An agent with the CA: enrollment over HTTPS, the bus over TLS, a download over HTTPS.
    let agent = Agent::start("tls-1", &f.access(), &[]);
    wait_online(&f, &[&agent]);
    upload_sample(&f, "1.0.0");
    let d = deploy(&f, "1.0.0", &["tls-1"]);
    wait_deployment(&f, &d, "succeeded", &[&agent]);
    assert_eq!(agent.app_pids(APP, "1.0.0").len(), 1);

    // An agent without the CA cannot be fooled into trusting the server: it says why.
    let lost = Agent::start(
        "tls-2",
        &support::Access {
            ca: None,
            ..f.access()
        },
        &[],
    );
    let refused = wait_until(Duration::from_secs(15), || {
        let log = lost.log().to_lowercase();
        log.contains("enrollment failed") && (log.contains("certificate") || log.contains("issuer"))
    });
    assert!(refused, "{}", lost.log());

    // fleetctl with the CA works; without it the certificate is refused.
    let fleetctl = |ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(workspace_bin("fleetctl"));
        cmd.env("FLEET_SERVER", &f.http)
            .env("FLEET_TOKEN", support::admin_token())
            .env_remove("FLEET_CA")
            .args(["--output", "json", "devices"]);
        if let Some(ca) = ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.output().expect("run fleetctl")
    };
    let ok = fleetctl(Some(&ca));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("tls-1"));
    let bad = fleetctl(None);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr).to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("issuer"),
        "{err}"
    );
}

#[test]
fn the_embedded_broker_can_require_client_certificates() {
    let certs = test_certs();
    let ca = certs.join("ca.pem");
    let f = Fleetd::start_tls_with(&["--mqtt-client-ca", ca.to_str().expect("utf-8")]);
    // Without a client certificate: enrollment (HTTPS, tokens) works, the bus refuses.
    let bare = Agent::start("cert-less", &f.access(), &[]);
    let refused = wait_until(Duration::from_secs(15), || {
        bare.log().contains("enrolled") && bare.log().contains("broker connection failed")
    });
    assert!(refused, "{}", bare.log());
    // With one: online.
    let (cert, key) = (certs.join("client.pem"), certs.join("client.key"));
    let with = Agent::start_with_args(
        "cert-holder",
        &f.access(),
        &[],
        &[
            "--client-cert",
            cert.to_str().expect("utf-8"),
            "--client-key",
            key.to_str().expect("utf-8"),
        ],
    );
    wait_online(&f, &[&with]);
    let dev = support::parse_json(&support::get(&f.url("/api/v1/devices/cert-less")).1);
    assert_ne!(
        dev["online"], true,
        "no client certificate, never online: {dev:#}"
    );
}
