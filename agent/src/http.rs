//! The agent's one HTTP(S) client, for enrollment, artifact downloads and fresh download URLs.
//! TLS is rustls with the ring provider; server certificates are verified against the CA given
//! with `--ca` (a fleet's own CA), or against the operating system's CA store when none is given
//! (S3 and other public stores; read once, no root list compiled into the binary). An optional client certificate (`--client-cert`, `--client-key`) is
//! presented to servers that ask for one. Configured once at start ([`init`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig, TlsProvider};

/// Where the agent's TLS material is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificates to trust (instead of the built-in web roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key: Option<PathBuf>,
}

static CLIENT: OnceLock<ureq::Agent> = OnceLock::new();

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Builds the ureq TLS configuration from the files.
fn tls_config(files: &TlsFiles) -> Result<TlsConfig, String> {
    let mut b = TlsConfig::builder().provider(TlsProvider::Rustls);
    if let Some(ca) = &files.ca {
        let pem = read(ca)?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("{}: holds no PEM certificate", ca.display()));
        }
        b = b.root_certs(RootCerts::new_with_certs(&certs));
    } else {
        let native = rustls_native_certs::load_native_certs();
        let certs: Vec<_> = native
            .certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        if certs.is_empty() {
            tracing::warn!("no CA certificates found in the system store and no --ca given: HTTPS downloads will fail");
        }
        b = b.root_certs(RootCerts::new_with_certs(&certs));
    }
    if let (Some(cert), Some(key)) = (&files.client_cert, &files.client_key) {
        let pem = read(cert)?;
        let chain: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let key_pem = read(key)?;
        let key = ureq::tls::parse_pem(&key_pem)
            .find_map(|i| match i {
                Ok(PemItem::PrivateKey(k)) => Some(k),
                _ => None,
            })
            .ok_or_else(|| format!("{}: holds no PEM private key", key.display()))?;
        b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(b.build())
}

fn build(tls: TlsConfig) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            .tls_config(tls)
            .build(),
    )
}

/// The TLS files [`init`] was given when the client is built on first use.
static FILES: OnceLock<TlsFiles> = OnceLock::new();

/// Configures the client once, at start; an error names the unusable file. Given files are
/// read now, so a bad one stops the agent at start. Without `--ca` the system CA store (some
/// 200 KB of certificates held in memory) is read when the first HTTP request needs the client:
/// an enrolled device that is not downloading does not carry it.
pub fn init(files: &TlsFiles) -> Result<(), String> {
    if files == &TlsFiles::default() {
        // A second call (tests) keeps the first configuration.
        let _ = FILES.set(files.clone());
        return Ok(());
    }
    let agent = build(tls_config(files)?);
    let _ = CLIENT.set(agent);
    Ok(())
}

/// The client (the system CA store when [`init`] was not given a CA).
pub fn client() -> &'static ureq::Agent {
    CLIENT.get_or_init(|| {
        build(
            tls_config(FILES.get().unwrap_or(&TlsFiles::default()))
                .unwrap_or_else(|_| TlsConfig::builder().provider(TlsProvider::Rustls).build()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let e = tls_config(&TlsFiles {
            ca: Some(empty.clone()),
            ..Default::default()
        })
        .expect_err("no certificate");
        assert!(e.contains("empty.pem"), "{e}");
        let e = tls_config(&TlsFiles {
            ca: Some(dir.path().join("absent.pem")),
            ..Default::default()
        })
        .expect_err("absent");
        assert!(e.contains("absent.pem"), "{e}");
    }
}
