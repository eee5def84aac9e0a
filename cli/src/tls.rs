//! TLS for `https://` servers: rustls with the ring provider, trusting the CA certificate(s) of
//! `--ca` / `FLEET_CA`, or else the system's CA store (there is no built-in root list).

use anyhow::{bail, Context, Result};
use std::path::Path;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

/// The TLS configuration for an `https://` server: roots from `ca`, or the system store.
pub fn config(ca: Option<&Path>) -> Result<TlsConfig> {
    let roots = match ca {
        Some(path) => read_ca(path)?,
        None => system_roots()?,
    };
    Ok(with_roots(&roots))
}

/// The configuration for an `http://` server: no trusted roots, so that a redirect to an
/// `https://` URL fails instead of trusting anything.
pub fn plain_config() -> TlsConfig {
    with_roots(&[])
}

fn with_roots(roots: &[Certificate<'static>]) -> TlsConfig {
    TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(roots))
        .build()
}

/// The certificates of a PEM CA file (other PEM items, such as keys, are ignored).
pub fn read_ca(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the CA file {} (--ca, FLEET_CA)",
            path.display()
        )
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => bail!(
                "the CA file {} (--ca, FLEET_CA) is not valid PEM: {e}",
                path.display()
            ),
        }
    }
    if certs.is_empty() {
        bail!(
            "the CA file {} (--ca, FLEET_CA) holds no PEM certificate",
            path.display()
        );
    }
    Ok(certs)
}

fn system_roots() -> Result<Vec<Certificate<'static>>> {
    let native = rustls_native_certs::load_native_certs();
    let certs: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        let why = native
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        bail!(
            "no CA certificates found in the system store{why}: give the CA of fleetd's \
             certificate with --ca or FLEET_CA"
        );
    }
    Ok(certs)
}

/// Whether a request failed in TLS (certificate not trusted, handshake refused, ...).
pub fn is_tls_error(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => true,
        ureq::Error::Io(io) => {
            let text = io.to_string().to_ascii_lowercase();
            text.contains("certificate") || text.contains("tls") || text.contains("handshake")
        }
        _ => false,
    }
}

/// Whether `url` (`http://host[:port]...`) names this machine, where a token in clear text
/// does not cross a network.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("fleetctl-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").expect("write");
        let e = read_ca(&empty).expect_err("no certificate");
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let e = read_ca(&dir.join("missing.pem")).expect_err("missing");
        assert!(e.to_string().contains("--ca"), "{e}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:7878"));
        assert!(is_loopback_url("http://localhost/"));
        assert!(is_loopback_url("http://[::1]:7878/x"));
        assert!(!is_loopback_url("http://fleet.example:7878"));
        assert!(!is_loopback_url("http://10.0.0.1"));
    }
}
