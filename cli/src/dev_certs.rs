//! A development PKI made with rcgen (ECDSA P-256 keys, ring backend): a CA, a server
//! certificate for fleetd and its embedded broker, and a client certificate. For labs and
//! demos; production certificates come from the site's own CA.

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use time::{Duration, OffsetDateTime};

/// How long the CA is valid.
pub const CA_DAYS: i64 = 3650;
/// How long the server and client certificates are valid.
pub const LEAF_DAYS: i64 = 825;
/// Certificates are valid from this long before they are made, for boards whose clock is
/// behind (no RTC, before NTP).
const BACKDATE_DAYS: i64 = 1;

/// The names every server certificate holds.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate and its private key, both PEM.
pub struct CertAndKey {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

/// Everything `certs dev` writes.
pub struct DevCerts {
    /// The CA.
    pub ca: CertAndKey,
    /// The server certificate (server and client auth).
    pub server: CertAndKey,
    /// The client certificate (client auth).
    pub client: CertAndKey,
    /// The server certificate's subject alternative names.
    pub server_names: Vec<String>,
}

/// The server certificate's names: the defaults, then each `--host` not already among them.
/// A name must be an IP address or a DNS name (ASCII letters, digits, '-', '.', a leading
/// "*." wildcard).
pub fn server_names(hosts: &[String]) -> Result<Vec<String>> {
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
    for h in hosts {
        let h = h.trim();
        let ok_dns = || {
            let rest = h.strip_prefix("*.").unwrap_or(h);
            !rest.is_empty()
                && rest.len() <= 253
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !rest.starts_with(['-', '.'])
        };
        if h.parse::<std::net::IpAddr>().is_err() && !ok_dns() {
            bail!("--host {h:?} is neither an IP address nor a DNS name");
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
            names.push(h.to_string());
        }
    }
    Ok(names)
}

/// A random positive 128-bit serial number.
fn serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "FleetD development");
    dn.push(DnType::CommonName, common);
    dn
}

/// Parameters of a leaf certificate valid for `days` from `now` (backdated a little).
fn leaf(
    common: &str,
    now: OffsetDateTime,
    eku: Vec<ExtendedKeyUsagePurpose>,
) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = name(common);
    p.serial_number = Some(serial()?);
    p.not_before = now - Duration::days(BACKDATE_DAYS);
    p.not_after = now + Duration::days(LEAF_DAYS);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = eku;
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Makes the CA, the server certificate (for [`server_names`] of `hosts`) and the client
/// certificate, valid from `now`.
pub fn generate(hosts: &[String], now: OffsetDateTime) -> Result<DevCerts> {
    let server_names = server_names(hosts)?;

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("FleetD development CA");
    ca_params.serial_number = Some(serial()?);
    ca_params.not_before = now - Duration::days(BACKDATE_DAYS);
    ca_params.not_after = now + Duration::days(CA_DAYS);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).context("making the CA")?;

    let mut server = leaf(
        "fleetd",
        now,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    server.subject_alt_names = server_names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => {
                Ok(SanType::DnsName(n.as_str().try_into().with_context(
                    || format!("--host {n:?} is not a valid DNS name"),
                )?))
            }
        })
        .collect::<Result<_>>()?;
    let server_key = KeyPair::generate().context("generating the server key")?;
    let server_cert = server
        .signed_by(&server_key, &ca)
        .context("signing the server certificate")?;

    let client = leaf(
        "fleet-dev-client",
        now,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    let client_key = KeyPair::generate().context("generating the client key")?;
    let client_cert = client
        .signed_by(&client_key, &ca)
        .context("signing the client certificate")?;

    Ok(DevCerts {
        ca: CertAndKey {
            cert: ca.pem(),
            key: ca.key().serialize_pem(),
        },
        server: CertAndKey {
            cert: server_cert.pem(),
            key: server_key.serialize_pem(),
        },
        client: CertAndKey {
            cert: client_cert.pem(),
            key: client_key.serialize_pem(),
        },
        server_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn hosts() -> Vec<String> {
        vec!["fleet.lab".into(), "10.1.2.3".into(), "localhost".into()]
    }

    #[test]
    fn names_start_with_the_defaults_and_refuse_junk() {
        let names = server_names(&hosts()).expect("valid");
        assert_eq!(
            names,
            ["localhost", "127.0.0.1", "::1", "fleet.lab", "10.1.2.3"]
        );
        assert!(server_names(&["*.fleet.lab".into()]).is_ok());
        for bad in ["", "a b", "x/y", "héllo", "-x"] {
            let e = server_names(&[bad.into()]).expect_err(bad);
            assert!(e.to_string().contains("--host"), "{e}");
        }
    }

    fn der_certs(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("PEM certificates")
    }

    #[test]
    fn output_parses_back_as_pem() {
        let c = generate(&hosts(), OffsetDateTime::now_utc()).expect("generated");
        for part in [&c.ca, &c.server, &c.client] {
            assert_eq!(der_certs(&part.cert).len(), 1);
            assert!(part.cert.starts_with("-----BEGIN CERTIFICATE-----"));
            PrivateKeyDer::from_pem_slice(part.key.as_bytes()).expect("a PEM private key");
            assert!(part.key.starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        assert_ne!(c.server.key, c.client.key);
    }

    fn write_all(dir: &Path, c: &DevCerts) -> Vec<PathBuf> {
        std::fs::create_dir_all(dir).expect("temp dir");
        let mut out = Vec::new();
        for (name, text) in [
            ("ca.pem", &c.ca.cert),
            ("server.pem", &c.server.cert),
            ("client.pem", &c.client.cert),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write");
            out.push(p);
        }
        out
    }

    fn openssl(args: &[&str]) -> Option<String> {
        let out = Command::new("openssl").args(args).output().ok()?;
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Checks the certificates with openssl when it is installed (skipped otherwise: the
    /// rustls handshake test below checks them without it).
    #[test]
    fn openssl_sees_the_sans_and_the_chain() {
        if Command::new("openssl").arg("version").output().is_err() {
            let msg =
                "openssl is not installed: this cross-check needs it (apt-get install openssl)";
            fleet_testkit::skip_or_fail(msg);
            return;
        }
        let c = generate(&hosts(), OffsetDateTime::now_utc()).expect("generated");
        let dir = std::env::temp_dir().join(format!("fleetctl-certs-{}", std::process::id()));
        let files = write_all(&dir, &c);
        let s = |p: &PathBuf| p.to_string_lossy().into_owned();
        let (ca, server, client) = (s(&files[0]), s(&files[1]), s(&files[2]));
        let text = openssl(&["x509", "-noout", "-text", "-in", &server]).expect("openssl");
        for want in [
            "DNS:localhost",
            "IP Address:127.0.0.1",
            "DNS:fleet.lab",
            "IP Address:10.1.2.3",
            "TLS Web Server Authentication",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        assert!(
            text.contains("IP Address:0:0:0:0:0:0:0:1") || text.contains("IP Address:::1"),
            "::1 missing in:\n{text}"
        );
        let ca_text = openssl(&["x509", "-noout", "-text", "-in", &ca]).expect("openssl");
        assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
        let ok = openssl(&["verify", "-CAfile", &ca, "-purpose", "sslserver", &server])
            .expect("openssl");
        assert!(ok.contains("OK"), "{ok}");
        let ok = openssl(&["verify", "-CAfile", &ca, "-purpose", "sslclient", &client])
            .expect("openssl");
        assert!(ok.contains("OK"), "{ok}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// A TLS server with the generated server certificate, answering `connections` requests
    /// with a small JSON document.
    fn https_server(
        c: &DevCerts,
        connections: usize,
    ) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{Read, Write};
        let key = PrivateKeyDer::from_pem_slice(c.server.key.as_bytes()).expect("server key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(der_certs(&c.server.cert), key)
        .expect("the server certificate and key match");
        let config = std::sync::Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("bound").port();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for _ in 0..connections {
                let (tcp, _) = listener.accept().expect("a client");
                let conn = rustls::ServerConnection::new(config.clone()).expect("TLS session");
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let body = r#"{"status":"ok"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    tls.write_all(answer.as_bytes()).expect("answer");
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
                requests.push(String::from_utf8_lossy(&request).into_owned());
            }
            requests
        });
        (port, handle)
    }

    /// The generated server certificate serves HTTPS that fleetctl's client accepts with
    /// `--ca ca.pem`, by IP address and by name, and refuses with another CA.
    #[test]
    fn fleetctl_trusts_the_dev_ca_over_https() {
        let c = generate(&[], OffsetDateTime::now_utc()).expect("generated");
        let other = generate(&[], OffsetDateTime::now_utc()).expect("generated");
        let dir = std::env::temp_dir().join(format!("fleetctl-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &c.ca.cert).expect("write");
        let wrong_ca = dir.join("other-ca.pem");
        std::fs::write(&wrong_ca, &other.ca.cert).expect("write");

        let (port, server) = https_server(&c, 3);
        let global = |host: &str, ca: &Path| crate::Global {
            server: format!("https://{host}:{port}"),
            token: Some(
                "fleet_0123abcd_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    .parse()
                    .expect("infallible"),
            ),
            ca: Some(ca.to_path_buf()),
            output: crate::Output::Table,
        };
        for host in ["127.0.0.1", "localhost"] {
            let api = crate::api::ApiClient::new(&global(host, &ca)).expect("client");
            let v: serde_json::Value = api.get("/api/v1/health").expect("HTTPS answer");
            assert_eq!(v["status"], "ok", "{host}");
        }
        let api = crate::api::ApiClient::new(&global("127.0.0.1", &wrong_ca)).expect("client");
        let e = api
            .get::<serde_json::Value>("/api/v1/health")
            .expect_err("another CA");
        assert!(e.to_string().contains("--ca or FLEET_CA"), "{e}");
        let requests = server.join().expect("server thread");
        assert!(
            requests[0].contains("Bearer fleet_0123abcd_"),
            "{}",
            requests[0]
        );
        assert!(
            requests[2].is_empty(),
            "no request without a trusted handshake"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
