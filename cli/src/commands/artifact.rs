//! `fleetctl artifact push|list|versions|show` (sign and verify are in [`super::signing`]).

use super::{print_json, show_progress};
use crate::api::ApiClient;
use crate::display;
use crate::multipart::{HashingReader, MultipartFraming};
use crate::table::Table;
use crate::{Global, Output, PushArgs};
use anyhow::{bail, Context, Result};
use fleet_schema::api::UploadMetadata;
use fleet_schema::artifact::{validate_name, validate_version, Platform};
use fleet_schema::image_ref::ImageSource;
use fleet_schema::ArtifactMeta;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;

/// Uploads a file as a new artifact version, streaming it with a progress bar.
pub fn push(g: &Global, args: &PushArgs) -> Result<()> {
    // Refuse obviously bad input before sending a possibly large file.
    validate_name(&args.name).map_err(anyhow::Error::msg)?;
    validate_version(&args.version).map_err(anyhow::Error::msg)?;
    let platforms: Vec<Platform> = args
        .platform
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<_, _>>()?;
    let labels = crate::args::labels(&args.labels)?;
    let requirements = match &args.requirements {
        None => Default::default(),
        Some(text) => {
            let json = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read requirements file {path}"))?,
                None => text.clone(),
            };
            serde_json::from_str(&json).context("--requirements is not valid requirements JSON")?
        }
    };
    let kind = fleet_schema::ArtifactType::from(args.kind.as_str());
    // A registry reference travels as its reference document (what fleetd stores and signs).
    let (source, content): (Option<ImageSource>, Content) = match (&args.image, &args.file) {
        (Some(image), _) => {
            if kind != fleet_schema::ArtifactType::OciImage {
                bail!("--image is for --type oci-image only, not {kind}");
            }
            let source = ImageSource::new(image, args.image_digest.as_deref())
                .context("--image / --image-digest")?;
            let doc = source.document();
            (Some(source), Content::Document(doc))
        }
        (None, Some(path)) => (None, Content::File(path.clone())),
        (None, None) => bail!("give the FILE to upload, or --image for a registry reference"),
    };
    let signatures = match &args.sign {
        None => Vec::new(),
        Some(key) => vec![match &content {
            Content::File(path) => super::signing::sign_upload(
                key,
                &args.name,
                &args.version,
                &kind,
                &platforms,
                path,
            )?,
            Content::Document(doc) => super::signing::sign_content(
                key,
                &args.name,
                &args.version,
                &kind,
                &platforms,
                &hex::encode(ring::digest::digest(&ring::digest::SHA256, doc)),
                doc.len() as u64,
            )?,
        }],
    };
    let (reader, len, what): (Box<dyn std::io::Read>, u64, String) = match &content {
        Content::File(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let len = file
                .metadata()
                .with_context(|| format!("cannot stat {}", path.display()))?
                .len();
            (Box::new(file), len, path.display().to_string())
        }
        Content::Document(doc) => (
            Box::new(std::io::Cursor::new(doc.clone())),
            doc.len() as u64,
            format!(
                "the reference to {}",
                args.image.as_deref().unwrap_or_default()
            ),
        ),
    };
    let metadata = UploadMetadata {
        name: args.name.clone(),
        version: args.version.clone(),
        kind: args.kind.clone(),
        platform: None,
        platforms: args.platform.clone(),
        labels,
        requirements,
        signatures,
        image: source.as_ref().map(|s| s.image.clone()),
        image_digest: source.and_then(|s| s.digest),
        // fleetd refuses an over-size file before reading it and reserves its staging space.
        size: Some(len),
        ..Default::default()
    };
    let filename = match &content {
        Content::File(path) => path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "artifact".into()),
        Content::Document(_) => "image-reference.json".into(),
    };
    let framing = MultipartFraming::new(&serde_json::to_string(&metadata)?, &filename);
    let content_type = framing.content_type();
    let body_len = framing.body_len(len);

    let api = ApiClient::new(g)?;
    // fleetd refuses an upload it may not accept before reading the body, which a client sending
    // a large file only sees as a broken pipe: ask first who we are.
    let me: fleet_schema::trust::tokens::WhoAmI = api.get("/api/v1/whoami")?;
    if !me.may_deploy(&args.name) {
        bail!(
            "token {} ({}) may not push {:?}: it needs scope deploy{} (fleetctl token create)",
            me.id.as_deref().unwrap_or("?"),
            me.name.as_deref().unwrap_or("?"),
            args.name,
            if me.apps.is_empty() {
                String::new()
            } else {
                format!(" and is limited to {}", me.apps.join(", "))
            }
        );
    }
    let bar = upload_bar(g.output, len);
    let mut hashing = HashingReader::new(bar.wrap_read(reader));
    let answer: Result<ArtifactMeta> = {
        let mut body = framing.into_reader(&mut hashing);
        api.post_stream("/api/v1/artifacts", &content_type, body_len, &mut body)
    };
    bar.finish_and_clear();
    let meta = answer.with_context(|| format!("uploading {what}"))?;
    let local = hashing.finish();
    if meta.sha256() != Some(local.as_str()) || meta.size != len {
        bail!(
            "fleetd recorded {} ({} bytes, sha256 {}) but the file has {len} bytes, sha256 {local}",
            meta.id,
            meta.size,
            meta.sha256().unwrap_or("missing"),
        );
    }
    match g.output {
        Output::Json => print_json(&meta),
        Output::Table => {
            print!("{}", meta_table(&meta).render());
            Ok(())
        }
    }
}

/// What `push` uploads: a file, or the reference document of a registry image.
enum Content {
    File(std::path::PathBuf),
    Document(Vec<u8>),
}

fn upload_bar(output: Output, len: u64) -> ProgressBar {
    if !show_progress(output) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "uploading [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The key facts of one artifact version as a two-column table.
fn meta_table(meta: &ArtifactMeta) -> Table {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    let platforms: Vec<String> = meta.platforms.iter().map(ToString::to_string).collect();
    t.row(vec!["id".into(), meta.id.clone()]);
    t.row(vec!["type".into(), meta.kind.to_string()]);
    if let Some(image) = &meta.image {
        t.row(vec!["image".into(), image.clone()]);
        t.row(vec![
            "image digest".into(),
            meta.image_digest
                .clone()
                .unwrap_or_else(|| "- (tag only: not pinned)".into()),
        ]);
    }
    t.row(vec![
        "size".into(),
        format!("{} ({} bytes)", display::bytes(meta.size), meta.size),
    ]);
    t.row(vec![
        "sha256".into(),
        meta.sha256().unwrap_or("-").to_string(),
    ]);
    t.row(vec![
        "platforms".into(),
        if platforms.is_empty() {
            "any".into()
        } else {
            platforms.join(",")
        },
    ]);
    t.row(vec![
        "sha512".into(),
        meta.sha512().unwrap_or("-").to_string(),
    ]);
    let keys: Vec<&str> = meta.signatures.iter().map(|s| s.key_id.as_str()).collect();
    t.row(vec![
        "signed by".into(),
        if keys.is_empty() {
            "unsigned".into()
        } else {
            keys.join(",")
        },
    ]);
    if !meta.requirements.is_empty() {
        t.row(vec![
            "requirements".into(),
            serde_json::to_string(&meta.requirements).unwrap_or_default(),
        ]);
    }
    t
}

/// Shows one version's metadata.
pub fn show(g: &Global, name: &str, version: &str) -> Result<()> {
    validate_name(name).map_err(anyhow::Error::msg)?;
    validate_version(version).map_err(anyhow::Error::msg)?;
    let meta: ArtifactMeta =
        ApiClient::new(g)?.get(&format!("/api/v1/artifacts/{name}/{version}"))?;
    match g.output {
        Output::Json => print_json(&meta),
        Output::Table => {
            print!("{}", meta_table(&meta).render());
            Ok(())
        }
    }
}

/// Reads artifact names from `GET /api/v1/artifacts`: a list of names, or of objects with a
/// `name` field (read leniently so the CLI keeps working if the listing grows).
fn names_of(value: &serde_json::Value) -> Vec<String> {
    let items = value
        .as_array()
        .or_else(|| value.get("artifacts").and_then(|a| a.as_array()));
    items
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.as_str()
                .or_else(|| v.get("name").and_then(|n| n.as_str()))
                .map(str::to_string)
        })
        .collect()
}

/// Lists artifact names (with their version count and latest version in table output).
pub fn list(g: &Global) -> Result<()> {
    let api = ApiClient::new(g)?;
    let value: serde_json::Value = api.get("/api/v1/artifacts")?;
    let names = names_of(&value);
    if g.output == Output::Json {
        return print_json(&names);
    }
    let mut t = Table::new(&["NAME", "VERSIONS", "LATEST"]);
    for name in names {
        let versions: Vec<ArtifactMeta> = api.get(&versions_path(&name))?;
        let latest = versions.last().map(|m| m.version.clone());
        t.row(vec![
            name,
            versions.len().to_string(),
            latest.unwrap_or_else(|| "-".into()),
        ]);
    }
    if t.is_empty() {
        println!("no artifacts");
    } else {
        print!("{}", t.render());
    }
    Ok(())
}

fn versions_path(name: &str) -> String {
    format!("/api/v1/artifacts/{name}/versions")
}

/// Lists the versions of one artifact in semantic-version order.
pub fn versions(g: &Global, name: &str) -> Result<()> {
    validate_name(name).map_err(anyhow::Error::msg)?;
    let api = ApiClient::new(g)?;
    let versions: Vec<ArtifactMeta> = api.get(&versions_path(name))?;
    if g.output == Output::Json {
        return print_json(&versions);
    }
    if versions.is_empty() {
        println!("no versions of {name}");
        return Ok(());
    }
    let now = display::now_ms();
    let mut t = Table::new(&["VERSION", "TYPE", "SIZE", "SHA256", "PLATFORMS", "CREATED"]);
    for m in &versions {
        let platforms: Vec<String> = m.platforms.iter().map(ToString::to_string).collect();
        t.row(vec![
            m.version.clone(),
            m.kind.to_string(),
            display::bytes(m.size),
            m.sha256()
                .map(|s| s.chars().take(12).collect())
                .unwrap_or_default(),
            if platforms.is_empty() {
                "any".into()
            } else {
                platforms.join(",")
            },
            display::ago(now, m.created_at),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_are_read_leniently() {
        let plain = serde_json::json!(["a", "b"]);
        assert_eq!(names_of(&plain), ["a", "b"]);
        let objects = serde_json::json!([{"name": "a", "versions": 2}]);
        assert_eq!(names_of(&objects), ["a"]);
        let wrapped = serde_json::json!({"artifacts": ["x"]});
        assert_eq!(names_of(&wrapped), ["x"]);
    }
}
