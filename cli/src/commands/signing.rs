//! `fleetctl keygen`, `fleetctl artifact sign` and `fleetctl artifact verify`: ed25519 keys and
//! signatures over an artifact's canonical manifest (`fleet_schema::signing`), so CI can prove
//! to devices that an artifact is exactly what it built.

use super::print_json;
use crate::api::ApiClient;
use crate::{Global, Output};
use anyhow::{bail, Context, Result};
use clap::Args;
use fleet_schema::artifact::{validate_name, validate_version, Signature};
use fleet_schema::signing::{self, TrustedKey};
use fleet_schema::ArtifactMeta;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Arguments of `keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Path prefix of the key pair: writes PREFIX.key (private, mode 0600) and PREFIX.pub.
    #[arg(long, default_value = "fleet-signing")]
    pub out: PathBuf,
}

/// Arguments of `artifact sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// Artifact name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Private key file written by `fleetctl keygen`.
    #[arg(long)]
    pub key: PathBuf,
}

/// Arguments of `artifact verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Artifact name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Trusted public key (hex, or a .pub file); repeatable.
    #[arg(long = "trusted-key", required = true)]
    pub trusted_keys: Vec<String>,
    /// Also check that this local file is the artifact's content (size and sha256).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// Generates a key pair and prints its key id.
pub fn keygen(g: &Global, args: &KeygenArgs) -> Result<()> {
    let (private, public) = signing::generate_key_pair()?;
    let key_path = with_suffix(&args.out, "key");
    let pub_path = with_suffix(&args.out, "pub");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("cannot create {} (it must not exist)", key_path.display()))?;
    writeln!(f, "{}", hex::encode(&private))
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::write(&pub_path, format!("{}\n", hex::encode(&public)))
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    let id = signing::key_id(&public);
    match g.output {
        Output::Json => print_json(&serde_json::json!({
            "key_id": id,
            "private_key": key_path,
            "public_key": pub_path,
        })),
        Output::Table => {
            println!("key id      {id}");
            println!("private key {} (keep secret)", key_path.display());
            println!(
                "public key  {} (give to agents: --trusted-key)",
                pub_path.display()
            );
            Ok(())
        }
    }
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Reads a private key written by `keygen` (hex PKCS#8).
pub fn read_private_key(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read private key {}", path.display()))?;
    hex::decode(text.trim()).with_context(|| {
        format!(
            "private key {} is not hex (expected a file written by fleetctl keygen)",
            path.display()
        )
    })
}

/// sha256 (hex) and size of a file, read in chunks.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok((hex::encode(ctx.finish().as_ref()), size));
        }
        size += n as u64;
        ctx.update(&buf[..n]);
    }
}

fn meta_path(name: &str, version: &str) -> Result<String> {
    validate_name(name).map_err(anyhow::Error::msg)?;
    validate_version(version).map_err(anyhow::Error::msg)?;
    Ok(format!("/api/v1/artifacts/{name}/{version}"))
}

/// Signs a stored version's manifest and records the signature in fleetd.
pub fn sign(g: &Global, args: &SignArgs) -> Result<()> {
    let path = meta_path(&args.name, &args.version)?;
    let api = ApiClient::new(g)?;
    let meta: ArtifactMeta = api.get(&path)?;
    let sig = signing::sign(&read_private_key(&args.key)?, &meta.signed_manifest())?;
    let key_id = sig.key_id.clone();
    let updated: ArtifactMeta = api.post_json(&format!("{path}/signatures"), &sig)?;
    match g.output {
        Output::Json => print_json(&updated),
        Output::Table => {
            println!("signed {} with key {key_id}", updated.id);
            Ok(())
        }
    }
}

/// Checks a stored version's signatures against trusted keys (and optionally a local file);
/// fails naming what did not verify.
pub fn verify(g: &Global, args: &VerifyArgs) -> Result<()> {
    let path = meta_path(&args.name, &args.version)?;
    let trusted = args
        .trusted_keys
        .iter()
        .map(|k| {
            TrustedKey::from_hex(k).or_else(|_| {
                let text = std::fs::read_to_string(k)
                    .with_context(|| format!("trusted key {k:?} is neither hex nor a file"))?;
                TrustedKey::from_hex(&text).map_err(anyhow::Error::from)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: ArtifactMeta = ApiClient::new(g)?.get(&path)?;
    check(&meta, &trusted, args.file.as_deref(), g.output)
}

fn check(
    meta: &ArtifactMeta,
    trusted: &[TrustedKey],
    file: Option<&Path>,
    output: Output,
) -> Result<()> {
    let key = signing::verify(&meta.signed_manifest(), &meta.signatures, trusted)
        .with_context(|| format!("{} does not verify", meta.id))?;
    if let Some(file) = file {
        let (sha, size) = sha256_file(file)?;
        if Some(sha.as_str()) != meta.sha256() || size != meta.size {
            bail!(
                "{} is not the content of {}: {size} bytes, sha256 {sha} (signed: {} bytes, sha256 {})",
                file.display(),
                meta.id,
                meta.size,
                meta.sha256().unwrap_or("missing")
            );
        }
    }
    match output {
        Output::Json => print_json(&serde_json::json!({"id": meta.id, "verified_by": key})),
        Output::Table => {
            println!("{} verified: signed by trusted key {key}", meta.id);
            Ok(())
        }
    }
}

/// The signature `push --sign` attaches: over the manifest of the file about to be uploaded.
pub fn sign_upload(
    key: &Path,
    name: &str,
    version: &str,
    kind: &fleet_schema::ArtifactType,
    platforms: &[fleet_schema::artifact::Platform],
    file: &Path,
) -> Result<Signature> {
    let (sha256, size) = sha256_file(file)?;
    sign_content(key, name, version, kind, platforms, &sha256, size)
}

/// Signs the manifest of content whose sha256 and size are known (e.g. the image reference
/// document of `push --image`, which fleetctl builds in memory).
pub fn sign_content(
    key: &Path,
    name: &str,
    version: &str,
    kind: &fleet_schema::ArtifactType,
    platforms: &[fleet_schema::artifact::Platform],
    sha256: &str,
    size: u64,
) -> Result<Signature> {
    let private = read_private_key(key)?;
    let manifest = signing::canonical_manifest(&signing::ManifestFields {
        name,
        version,
        kind,
        size,
        sha256,
        platforms,
    });
    Ok(signing::sign(&private, &manifest)?)
}
