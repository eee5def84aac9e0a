//! S3 store tests against a real S3-compatible server: `s3s-fs` (installed by `.ci/run`), which
//! checks SigV4 signatures, so presigned URLs are really verified. Without the binary the tests
//! print a loud SKIPPED notice, or fail when FLEET_REQUIRE_EXTERNAL=1.

use super::*;
use crate::store::{ArtifactStore, NewArtifact, StoreError, StoreOutcome};
use axum::body::Bytes;
use std::process::{Child, Command, Stdio};

const ACCESS: &str = "fleetd-test-access";
const SECRET: &str = "fleetd-test-secret-key";

/// A running s3s-fs on a free port; killed on drop.
struct S3s {
    child: Child,
    endpoint: String,
    _root: tempfile::TempDir,
}

impl Drop for S3s {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/s3s-fs"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Starts s3s-fs with bucket `fleet`, or `None` (after a loud notice) when it is not installed.
fn start_s3s() -> Option<S3s> {
    let Some(bin) = s3s_binary() else {
        let msg =
            "s3s-fs is not installed (cargo install --locked s3s-fs@0.14.1 --features binary)";
        fleet_testkit::skip_or_fail(msg);
        return None;
    };
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("fleet")).expect("bucket directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS, "--secret-key", SECRET])
        .arg(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn s3s-fs");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s3s-fs did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(S3s {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        _root: root,
    })
}

fn store(s: &S3s, staging: &std::path::Path, ttl: Duration) -> S3Store {
    S3Store::open(
        &S3Config {
            bucket: "fleet".into(),
            region: "us-east-1".into(),
            endpoint: Some(s.endpoint.clone()),
            path_style: true,
            access_key: Some(ACCESS.into()),
            secret_key: Some(SECRET.into()),
            prefix: "artifacts".into(),
            url_ttl: ttl,
        },
        staging.to_path_buf(),
    )
    .expect("store opens")
}

fn body(data: Vec<u8>) -> crate::store::ByteStream<'static> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

fn http_get(url: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let mut req = agent.get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let mut resp = req.call().expect("request");
    let status = resp.status().as_u16();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("body");
    (status, bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_multipart_upload_index_and_presigned_urls() {
    let Some(s) = start_s3s() else { return };
    let staging = tempfile::tempdir().expect("tempdir");
    let st = store(&s, staging.path(), Duration::from_secs(300));
    // 20 MiB: more than one multipart chunk.
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    let created = match st
        .commit(
            st.stage(body(data.clone()), 1 << 30).await.expect("stages"),
            NewArtifact::for_test("1.0.0"),
        )
        .await
        .expect("commits")
    {
        StoreOutcome::Created(m) => m,
        other => panic!("expected a new version, got {other:?}"),
    };
    assert_eq!(created.size, data.len() as u64);
    assert!(created
        .storage_url
        .starts_with("s3://fleet/artifacts/app/1.0.0/blob"));
    assert!(matches!(
        st.commit(
            st.stage(body(data.clone()), 1 << 30).await.expect("stages"),
            NewArtifact::for_test("1.0.0")
        )
        .await,
        Ok(StoreOutcome::Existing(_))
    ));
    assert!(matches!(
        st.commit(
            st.stage(body(b"other".to_vec()), 1 << 30)
                .await
                .expect("stages"),
            NewArtifact::for_test("1.0.0")
        )
        .await,
        Err(StoreError::Conflict { .. })
    ));
    st.commit(
        st.stage(body(b"small".to_vec()), 1 << 30)
            .await
            .expect("stages"),
        NewArtifact::for_test("0.9.0"),
    )
    .await
    .expect("commits");
    assert_eq!(
        std::fs::read_dir(staging.path()).expect("staging").count(),
        0,
        "staged files are removed"
    );

    // A new store instance rebuilds the index from the bucket alone.
    let again = store(&s, staging.path(), Duration::from_secs(300));
    assert_eq!(again.list_names().await.expect("lists"), vec!["app"]);
    let versions: Vec<String> = again
        .list_versions("app")
        .await
        .expect("lists")
        .into_iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, ["0.9.0", "1.0.0"]);

    // Presigned GET works, with ranges for resumed downloads.
    let link = again.download_link(&created, "").await.expect("presigns");
    let (status, got) = http_get(&link.url, None);
    assert_eq!(status, 200);
    assert!(got == data, "downloaded bytes differ");
    let (status, tail) = http_get(&link.url, Some("bytes=20971510-"));
    assert_eq!((status, tail.as_slice()), (206, &data[20_971_510..]));

    // A forged signature is refused.
    let forged = match link.url.find("X-Amz-Signature=") {
        Some(i) => {
            let mut u = link.url.clone();
            let at = i + "X-Amz-Signature=".len();
            let flipped = if &u[at..at + 1] == "0" { "1" } else { "0" };
            u.replace_range(at..at + 1, flipped);
            u
        }
        None => panic!("presigned URL without a signature: {}", link.url),
    };
    assert_eq!(http_get(&forged, None).0, 403, "forged URL refused");

    // An expired URL is refused.
    let short = store(&s, staging.path(), Duration::from_secs(1));
    let expiring = short.download_link(&created, "").await.expect("presigns");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(http_get(&expiring.url, None).0, 403, "expired URL refused");
}
