//! Artifact signatures end to end, with a real fleetd, a real agent and the real `fleetctl`:
//! the agent's signature policy refuses unsigned artifacts, unknown keys and signatures of
//! another manifest, naming which; and keys rotate, since an agent trusts several at once.

mod support;

use support::agent::Agent;
use support::cli::{fleetctl, push, sample_file, wait_error};
use support::fleet::{deploy, wait_deployment, wait_online, APP};
use support::{get, parse_json, Fleetd};

#[test]
fn signature_policy_refuses_unsigned_unknown_and_mismatched_artifacts() {
    let fleetd = Fleetd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("ci");
    let rogue = dir.path().join("rogue");
    for k in [&key, &rogue] {
        let (ok, out) = fleetctl(&fleetd, &["keygen", "--out", &k.to_string_lossy()]);
        assert!(ok && out.contains("key id"), "{out}");
    }
    let key_file = format!("{}.key", key.display());
    let pub_file = format!("{}.pub", key.display());
    let agent = Agent::start_with_args(
        "dev-strict",
        &fleetd.access(),
        &[],
        &["--trusted-key", &pub_file, "--require-signatures"],
    );
    wait_online(&fleetd, &[&agent]);

    // Signed by the trusted key: installed and verifiable with fleetctl.
    let v1 = sample_file(dir.path(), "1.0.0");
    push(&fleetd, &v1, "1.0.0", &["--sign", &key_file]);
    let (ok, out) = fleetctl(
        &fleetd,
        &[
            "artifact",
            "verify",
            APP,
            "1.0.0",
            "--trusted-key",
            &pub_file,
            "--file",
            &v1,
        ],
    );
    assert!(ok && out.contains("verified"), "{out}");
    let d = deploy(&fleetd, "1.0.0", &["dev-strict"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    assert!(
        agent.log().contains("signature verified"),
        "{}",
        agent.log()
    );

    // Unsigned.
    push(&fleetd, &sample_file(dir.path(), "2.0.0"), "2.0.0", &[]);
    deploy(&fleetd, "2.0.0", &["dev-strict"]);
    wait_error(&fleetd, &agent, "unsigned");

    // Signed by a key the device does not trust.
    let rogue_key = format!("{}.key", rogue.display());
    push(
        &fleetd,
        &sample_file(dir.path(), "3.0.0"),
        "3.0.0",
        &["--sign", &rogue_key],
    );
    deploy(&fleetd, "3.0.0", &["dev-strict"]);
    wait_error(&fleetd, &agent, "unknown key");

    // A trusted key's signature of another manifest (v1's) attached to v4.
    push(&fleetd, &sample_file(dir.path(), "4.0.0"), "4.0.0", &[]);
    let (_, meta) = get(&fleetd.url(&format!("/api/v1/artifacts/{APP}/1.0.0")));
    let v1_sig = parse_json(&meta)["signatures"][0].clone();
    let (status, body) = support::post_json(
        &fleetd.url(&format!("/api/v1/artifacts/{APP}/4.0.0/signatures")),
        &v1_sig,
    );
    assert_eq!(status, 200, "{body}");
    let (ok, out) = fleetctl(
        &fleetd,
        &[
            "artifact",
            "verify",
            APP,
            "4.0.0",
            "--trusted-key",
            &pub_file,
        ],
    );
    assert!(!ok && out.contains("does not match"), "{out}");
    deploy(&fleetd, "4.0.0", &["dev-strict"]);
    wait_error(&fleetd, &agent, "does not match the artifact manifest");

    // v1 kept running through every refusal.
    assert_eq!(agent.app_pids(APP, "1.0.0").len(), 1, "{}", agent.log());

    // `artifact sign` adds a trusted signature to v4, which then deploys.
    let (ok, out) = fleetctl(
        &fleetd,
        &["artifact", "sign", APP, "4.0.0", "--key", &key_file],
    );
    assert!(ok, "{out}");
    let d = deploy(&fleetd, "4.0.0", &["dev-strict"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
}

/// Generates `fleetctl keygen` key pairs named `names` in `dir`; returns (private, public) paths.
fn keys(fleetd: &Fleetd, dir: &std::path::Path, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            let base = dir.join(n);
            let (ok, out) = fleetctl(fleetd, &["keygen", "--out", &base.to_string_lossy()]);
            assert!(ok && out.contains("key id"), "{out}");
            (
                format!("{}.key", base.display()),
                format!("{}.pub", base.display()),
            )
        })
        .collect()
}

#[test]
fn keys_rotate_an_agent_trusting_old_and_new_then_only_new() {
    let fleetd = Fleetd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys(&fleetd, dir.path(), &["old", "new"]);
    let ((old_key, old_pub), (new_key, new_pub)) = (&k[0], &k[1]);
    let both = [
        "--require-signatures",
        "--trusted-key",
        old_pub,
        "--trusted-key",
        new_pub,
    ];
    let mut agent = Agent::start_with_args("dev-rotate", &fleetd.access(), &[], &both);
    wait_online(&fleetd, &[&agent]);

    // During the rotation the device trusts both keys: v1 signed by the old key and v2 signed
    // by the new one both install.
    push(
        &fleetd,
        &sample_file(dir.path(), "1.0.0"),
        "1.0.0",
        &["--sign", old_key],
    );
    let d = deploy(&fleetd, "1.0.0", &["dev-rotate"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    push(
        &fleetd,
        &sample_file(dir.path(), "2.0.0"),
        "2.0.0",
        &["--sign", new_key],
    );
    let d = deploy(&fleetd, "2.0.0", &["dev-rotate"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);

    // v1 is re-signed with the new key (it now carries two signatures) before the old key is
    // retired from the device.
    let (ok, out) = fleetctl(
        &fleetd,
        &["artifact", "sign", APP, "1.0.0", "--key", new_key],
    );
    assert!(ok, "{out}");
    let (_, meta) = get(&fleetd.url(&format!("/api/v1/artifacts/{APP}/1.0.0")));
    let sigs = parse_json(&meta)["signatures"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(sigs, 2, "{meta}");
    agent.restart_with_args(&["--require-signatures", "--trusted-key", new_pub]);
    wait_online(&fleetd, &[&agent]);

    // After the rotation: an artifact signed only by the retired key is refused by name ...
    push(
        &fleetd,
        &sample_file(dir.path(), "3.0.0"),
        "3.0.0",
        &["--sign", old_key],
    );
    deploy(&fleetd, "3.0.0", &["dev-rotate"]);
    let err = wait_error(&fleetd, &agent, "unknown key");
    assert!(err.contains("3.0.0") || err.contains("signature"), "{err}");
    assert_eq!(agent.app_pids(APP, "2.0.0").len(), 1, "v2 keeps running");
    // ... and going back to v1 works on its new-key signature.
    let d = deploy(&fleetd, "1.0.0", &["dev-rotate"]);
    wait_deployment(&fleetd, &d, "succeeded", &[&agent]);
    assert_eq!(agent.app_pids(APP, "1.0.0").len(), 1, "{}", agent.log());
}
