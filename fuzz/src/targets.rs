//! The fuzz targets: every parser that reads bytes FleetD did not produce itself. Each target
//! takes arbitrary bytes and must return (an error is fine) without panicking, without
//! unbounded allocation (the runner measures it) and, for the archive extractor, without
//! writing outside its destination.

use fleet_schema::api::CreateDeployment;
use fleet_schema::ci::CiRequest;
use fleet_schema::telemetry::AgentRequest;
use fleet_schema::trust::{OpenParams, SigningKey};
use fleet_schema::{
    decode, encode, ControllerStatus, DesiredState, DeviceStatus, LogBatch, MetricsBatch,
    DEFAULT_MAX_PAYLOAD,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// One fuzz target: a name, the function under test and its built-in seeds.
pub struct Target {
    /// Name on the command line and of the corpus folder (`fuzz/corpus/<name>/`).
    pub name: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
    /// Valid inputs to start mutating from (the corpus folder adds more).
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "cbor",
            run: cbor,
            seeds: cbor_seeds,
        },
        Target {
            name: "envelope",
            run: envelope,
            seeds: envelope_seeds,
        },
        Target {
            name: "manifest-yaml",
            run: |b| {
                drop(fleet_schema::manifest::parse_yaml(
                    &String::from_utf8_lossy(b),
                ))
            },
            seeds: || vec![SEED_MANIFEST.as_bytes().to_vec()],
        },
        Target {
            name: "manifest-json",
            run: |b| {
                drop(fleet_schema::manifest::parse_json(
                    &String::from_utf8_lossy(b),
                ))
            },
            seeds: manifest_json_seeds,
        },
        Target {
            name: "deployment-request",
            run: deployment_request,
            seeds: || vec![DEPLOYMENT.as_bytes().to_vec()],
        },
        Target {
            name: "ci-request",
            run: |b| drop(fleet_controller::ci::parse::parse(b, None, true)),
            seeds: ci_seeds,
        },
        Target {
            name: "archive",
            run: archive,
            seeds: archive_seeds,
        },
        Target {
            name: "image-ref",
            run: |b| {
                drop(fleet_schema::image_ref::ImageRef::parse(
                    &String::from_utf8_lossy(b),
                ))
            },
            seeds: || {
                [
                    "registry.example.com:5000/team/app:1.2.3",
                    "busybox",
                    "ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                    "[::1]:5000/x/y:latest",
                ]
                .map(|s| s.as_bytes().to_vec())
                .to_vec()
            },
        },
        Target {
            name: "topic",
            run: |b| drop(fleet_schema::Topic::parse(&String::from_utf8_lossy(b))),
            seeds: || {
                [
                    "fleet/dev-1/cmd",
                    "fleet/dev-1/status",
                    "fleet/_controller/status",
                    "fleet/_ci/requests/abc/def",
                    "fleet/dev-1/req",
                ]
                .map(|s| s.as_bytes().to_vec())
                .to_vec()
            },
        },
        Target {
            name: "mqtt-url",
            run: |b| drop(String::from_utf8_lossy(b).parse::<fleet_schema::MqttUrl>()),
            seeds: || {
                ["mqtt://127.0.0.1:1883", "mqtts://[::1]:8883", "mqtt://host"]
                    .map(|s| s.as_bytes().to_vec())
                    .to_vec()
            },
        },
    ]
}

/// The seed's manifest (the product spec's `app.yaml`).
const SEED_MANIFEST: &str = include_str!("../../schema/src/manifest/seed_app.yaml");

const DEPLOYMENT: &str = r#"{"application":"web","version":"1.2.0",
 "strategy":{"type":"canary","initial_percentage":10,"increment_percentage":20,
  "increment_interval":"5m","min_healthy_time":"30s","progress_deadline":"10m"},
 "target":{"selector":{"region":"eu","tier":"edge"},"devices":["dev-1"]}}"#;

fn try_decode<T: DeserializeOwned>(b: &[u8]) {
    let _ = decode::<T>(b, DEFAULT_MAX_PAYLOAD);
}

fn cbor(b: &[u8]) {
    try_decode::<DesiredState>(b);
    try_decode::<DeviceStatus>(b);
    try_decode::<ControllerStatus>(b);
    try_decode::<MetricsBatch>(b);
    try_decode::<LogBatch>(b);
    try_decode::<AgentRequest>(b);
    try_decode::<CiRequest>(b);
    try_decode::<fleet_schema::ci::CiReply>(b);
    try_decode::<fleet_schema::trust::enroll::EnrollRequest>(b);
    try_decode::<fleet_schema::trust::enroll::EnrollResponse>(b);
}

fn cbor_of<T: DeserializeOwned + Serialize>(json: &str) -> Vec<u8> {
    let value: T = serde_json::from_str(json).expect("built-in seed is valid JSON for its type");
    encode(&value).expect("built-in seed encodes")
}

fn cbor_seeds() -> Vec<Vec<u8>> {
    let artifact = r#"{"name":"web","version":"1.0.0","type":"binary","size":5,
        "sha256":"00ff","url":"http://127.0.0.1:7878/x"}"#;
    vec![
        cbor_of::<DesiredState>(&format!(
            r#"{{"device_id":"dev-1","generation":3,"issued_at":17,"apps":[{{"name":"web",
            "version":"1.0.0","artifact":{artifact},"deployment_id":"dep-1",
            "spec":{{"env":{{"A":"1"}},"args":["--port","8080"]}}}}]}}"#
        )),
        cbor_of::<DeviceStatus>(
            r#"{"device_id":"dev-1","online":true,"agent_version":"0.1.0",
            "observed_generation":3,"apps":[{"name":"web","version":"1.0.0","phase":"running","deployment_id":"dep-1"}]}"#,
        ),
        cbor_of::<MetricsBatch>(r#"{"device_id":"dev-1","timestamp":5,"apps":[{"app":"web"}]}"#),
        cbor_of::<LogBatch>(
            r#"{"device_id":"dev-1","entries":[{"timestamp":1,"app":"web","stream":"stdout",
            "level":"info","message":"hello"}],"dropped":2}"#,
        ),
        cbor_of::<CiRequest>(&format!(
            r#"{{"id":"req-1","issued_at":5,"deployment":{DEPLOYMENT}}}"#
        )),
    ]
}

/// The signer every envelope is checked against (fixed per process).
fn signer() -> &'static fleet_schema::signing::TrustedKey {
    static KEY: std::sync::OnceLock<(SigningKey, fleet_schema::signing::TrustedKey)> =
        std::sync::OnceLock::new();
    &KEY.get_or_init(|| {
        let key = SigningKey::generate().expect("key generation works").0;
        let trusted = key.trusted();
        (key, trusted)
    })
    .1
}

fn envelope(b: &[u8]) {
    let params = OpenParams {
        topic: "fleet/dev-1/status",
        signer: signer(),
        me: None,
        decrypt: None,
    };
    let _ = fleet_schema::trust::open(params, b, DEFAULT_MAX_PAYLOAD);
}

fn envelope_seeds() -> Vec<Vec<u8>> {
    let key = SigningKey::generate().expect("key generation works").0;
    let params = fleet_schema::trust::SealParams {
        topic: "fleet/dev-1/status",
        signer: &key,
        to: None,
        stamp: fleet_schema::trust::Stamp::default(),
        encrypt: None,
    };
    vec![fleet_schema::trust::seal(params, b"a status body").expect("seals")]
}

fn manifest_json_seeds() -> Vec<Vec<u8>> {
    let raw: fleet_schema::manifest::RawManifest =
        serde_norway::from_str(SEED_MANIFEST).expect("the seed manifest is valid YAML");
    vec![serde_json::to_vec(&raw).expect("a manifest converts to JSON")]
}

fn deployment_request(b: &[u8]) {
    if let Ok(req) = fleet_controller::deployments::parse_request(b) {
        let _ = fleet_controller::model::strategy::parse(req.strategy.as_ref());
        let _: &CreateDeployment = &req;
    }
}

fn ci_seeds() -> Vec<Vec<u8>> {
    let json = format!(r#"{{"id":"req-1","issued_at":5,"deployment":{DEPLOYMENT}}}"#);
    vec![json.clone().into_bytes(), cbor_of::<CiRequest>(&json)]
}

fn archive(b: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (file, dest, sentinel) = (
        dir.path().join("artifact"),
        dir.path().join("dest"),
        dir.path().join("sentinel"),
    );
    std::fs::write(&file, b).expect("writes the input");
    std::fs::write(&sentinel, b"untouched").expect("writes the sentinel");
    std::fs::create_dir(&dest).expect("creates the destination");
    let limits = fleet_agent::install::archive::ArchiveLimits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    let _ = fleet_agent::install::archive::extract(&file, &dest, &limits);
    assert_contained(dir.path(), &dest, &sentinel);
}

/// Nothing outside `dest` changed: the temporary directory still holds exactly its three
/// entries, the sentinel is intact, and no link under `dest` resolves outside it.
fn assert_contained(root: &Path, dest: &Path, sentinel: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(root)
        .expect("lists the temporary directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["artifact", "dest", "sentinel"],
        "extraction escaped"
    );
    assert_eq!(
        std::fs::read(sentinel).expect("sentinel readable"),
        b"untouched"
    );
    let dest = dest.canonicalize().expect("destination exists");
    let mut stack = vec![dest.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("entry metadata");
            if meta.file_type().is_symlink() {
                if let Ok(target) = path.canonicalize() {
                    assert!(
                        target.starts_with(&dest),
                        "link {} resolves outside: {}",
                        path.display(),
                        target.display()
                    );
                }
            } else if meta.is_dir() {
                stack.push(path);
            }
        }
    }
}

fn tar_seed(gzip: bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, body: &[u8], link: Option<&str>| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(body.len() as u64);
        if let Some(link) = link {
            header.set_link_name(link).expect("valid link name");
        }
        builder
            .append_data(&mut header, path, body)
            .expect("appends to a memory archive");
    };
    add("bin/", tar::EntryType::Directory, b"", None);
    add(
        "bin/app",
        tar::EntryType::Regular,
        b"#!/bin/sh\necho hi\n",
        None,
    );
    add("lib/libx.so.1", tar::EntryType::Regular, b"ELF", None);
    add(
        "lib/libx.so",
        tar::EntryType::Symlink,
        b"",
        Some("libx.so.1"),
    );
    add("d/up", tar::EntryType::Symlink, b"", Some(".."));
    let bytes = builder.into_inner().expect("finishes the archive");
    if !gzip {
        return bytes;
    }
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).expect("compresses in memory");
    gz.finish().expect("finishes gzip")
}

fn archive_seeds() -> Vec<Vec<u8>> {
    vec![tar_seed(false), tar_seed(true), b"PK\x03\x04".to_vec()]
}
