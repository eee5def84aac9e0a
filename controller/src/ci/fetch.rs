//! Registering a CI request's artifact from a URL: fleetd downloads it (http or https, trusting
//! the system's CA bundle), checks it against the request's sha256 while staging it in the
//! store, and commits it like an upload (the same version with other bytes is refused).

use crate::store::{ArtifactStore, NewArtifact, StoreOutcome};
use fleet_schema::api::UploadMetadata;
use fleet_schema::ci::CiArtifact;
use fleet_schema::ArtifactMeta;
use std::io::Read;
use std::time::Duration;

/// The system CA bundle (Debian and derivatives) trusted for https downloads.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Checks the request's artifact fields (pure) and returns them as the store's new artifact;
/// the error names the field.
pub fn check(a: &CiArtifact) -> Result<NewArtifact, String> {
    if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
        return Err(format!(
            "artifact.url {:?} must be http:// or https://",
            a.url
        ));
    }
    if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("artifact.sha256 must be 64 hex digits".into());
    }
    crate::http::upload::validate(metadata(a)).map_err(|e| format!("artifact: {e}"))
}

fn metadata(a: &CiArtifact) -> UploadMetadata {
    UploadMetadata {
        name: a.name.clone(),
        version: a.version.clone(),
        kind: a.kind.clone(),
        platforms: a.platforms.clone(),
        ..Default::default()
    }
}

fn agent() -> ureq::Agent {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
    let roots: Vec<_> = std::fs::read(CA_BUNDLE)
        .map(|pem| {
            ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&roots))
        .build();
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(30 * 60)))
            .tls_config(tls)
            .build(),
    )
}

/// Downloads and stores the artifact; returns its metadata (also when the identical version
/// was already stored).
pub async fn register(
    store: &dyn ArtifactStore,
    a: &CiArtifact,
    max_bytes: u64,
    quota: (
        &crate::http::upload_gate::UploadGate,
        &crate::metrics::Metrics,
    ),
) -> Result<ArtifactMeta, String> {
    let new = check(a)?;
    // What a CI fetch stages counts against the same staging quota as uploads.
    let reservation = quota.0.reserve(0, quota.1).map_err(|e| e.message)?;
    let url = a.url.clone();
    // ureq is blocking: a thread reads the body and hands chunks over a bounded channel.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(8);
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let resp = agent()
            .get(&url)
            .call()
            .map_err(|e| format!("artifact.url {url}: {e}"))?;
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = body
                .read(&mut buf)
                .map_err(|e| format!("artifact.url {url}: {e}"))?;
            if n == 0 {
                return Ok(());
            }
            let chunk = axum::body::Bytes::copy_from_slice(&buf[..n]);
            if tx.blocking_send(Ok(chunk)).is_err() {
                return Ok(());
            }
        }
    });
    let stream = Box::pin(reservation.count(tokio_stream_of(rx)));
    let staged = store.stage(stream, max_bytes).await;
    if staged.is_err() && reservation.was_refused() {
        return Err(reservation.refusal(quota.1).message);
    }
    let fetched = reader.await.map_err(|e| e.to_string())?;
    fetched?;
    let staged = staged.map_err(|e| format!("artifact.url {}: {e}", a.url))?;
    if !staged.sha256.eq_ignore_ascii_case(&a.sha256) {
        return Err(format!(
            "artifact.sha256 does not match the download from {} (got {})",
            a.url, staged.sha256
        ));
    }
    match store.commit(staged, new).await.map_err(|e| e.to_string())? {
        StoreOutcome::Created(meta) | StoreOutcome::Existing(meta) => Ok(meta),
    }
}

/// The receiver as the store's byte stream.
fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
) -> crate::store::ByteStream<'static> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(url: &str, sha: &str) -> CiArtifact {
        CiArtifact {
            name: "web".into(),
            version: "1.0.0".into(),
            kind: "binary".into(),
            url: url.into(),
            sha256: sha.into(),
            platforms: vec!["linux/arm64".into()],
        }
    }

    #[test]
    fn checks_name_the_field() {
        let sha = "a".repeat(64);
        assert!(check(&art("https://x/y", &sha)).is_ok());
        assert!(check(&art("ftp://x/y", &sha))
            .expect_err("scheme")
            .contains("artifact.url"));
        assert!(check(&art("http://x/y", "abc"))
            .expect_err("sha")
            .contains("artifact.sha256"));
        let mut bad = art("http://x/y", &sha);
        bad.version = "one".into();
        assert!(check(&bad).expect_err("version").starts_with("artifact:"));
    }
}
