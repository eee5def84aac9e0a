//! The filesystem artifact store: `<root>/<name>/<version>/blob` with `meta.json` beside it.
//! `meta.json` is written last (temp file, fsync, rename), so it is the commit point: a version
//! directory without it is an interrupted upload and invisible. The directory tree alone is the
//! index; nothing else needs rebuilding after a crash. Uploads are staged in `<root>/.tmp/`
//! (artifact names cannot start with `.`), on the same filesystem so the final move is a rename.

pub(crate) mod read;
pub(crate) mod write;

use super::url_sign::{now_secs, UrlSigner, DEFAULT_URL_TTL};
use super::{
    ArtifactStore, BlobReader, ByteRange, ByteStream, DownloadLink, NewArtifact, StagedBlob,
    StoreError, StoreOutcome,
};
use async_trait::async_trait;
use fleet_schema::artifact::{validate_name, validate_version};
use fleet_schema::ArtifactMeta;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the metadata file beside each blob.
const META_FILE: &str = "meta.json";
/// Name of the blob file.
const BLOB_FILE: &str = "blob";
/// Staging directory under the root.
const TMP_DIR: &str = ".tmp";
/// The HMAC key of download URLs, under the root (names starting with `.` are not artifacts).
const URL_KEY_FILE: &str = ".download-url.key";

/// The filesystem backend of [`ArtifactStore`].
#[derive(Debug, Clone)]
pub struct FsStore {
    root: Arc<PathBuf>,
    /// Serialises commits so two uploads of the same version cannot both "create" it.
    commit_lock: Arc<tokio::sync::Mutex<()>>,
    /// Signs and checks the download URLs fleetd serves.
    signer: UrlSigner,
}

/// Wraps an I/O error with what was being done.
fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |reason| StoreError::Io { context, reason }
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`, and removes uploads a previous run
    /// left half-staged.
    pub fn open(root: &Path) -> Result<FsStore, StoreError> {
        std::fs::create_dir_all(root.join(TMP_DIR)).map_err(io(format!(
            "cannot create artifact store {}",
            root.display()
        )))?;
        let root = root
            .canonicalize()
            .map_err(io(format!("cannot resolve {}", root.display())))?;
        let tmp = root.join(TMP_DIR);
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let signer = UrlSigner::load_or_create(&root.join(URL_KEY_FILE), DEFAULT_URL_TTL)?;
        Ok(FsStore {
            root: Arc::new(root),
            commit_lock: Arc::new(tokio::sync::Mutex::new(())),
            signer,
        })
    }

    /// Sets how long the download URLs it hands out stay valid.
    pub fn with_url_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.signer = self.signer.with_ttl(ttl);
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one version, or `None` when name or version are not valid (and so
    /// could not be stored: this also keeps `..` and `/` out of paths).
    fn version_dir(&self, name: &str, version: &str) -> Option<PathBuf> {
        validate_name(name).ok()?;
        validate_version(version).ok()?;
        Some(self.root.join(name).join(version))
    }
}

#[async_trait]
impl ArtifactStore for FsStore {
    async fn stage(&self, body: ByteStream<'_>, max_size: u64) -> Result<StagedBlob, StoreError> {
        write::stage_to(&self.root.join(TMP_DIR), body, max_size).await
    }

    async fn commit(
        &self,
        staged: StagedBlob,
        new: NewArtifact,
    ) -> Result<StoreOutcome, StoreError> {
        let dir = self.version_dir(&new.name, &new.version).ok_or_else(|| {
            StoreError::Invalid(format!(
                "artifact {}@{} has an invalid name or version",
                new.name, new.version
            ))
        })?;
        let _guard = self.commit_lock.lock().await;
        write::commit(&dir, staged, new).await
    }

    async fn add_signature(
        &self,
        name: &str,
        version: &str,
        signature: fleet_schema::artifact::Signature,
    ) -> Result<ArtifactMeta, StoreError> {
        let id = ArtifactMeta::make_id(name, version);
        let dir = self
            .version_dir(name, version)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let _guard = self.commit_lock.lock().await;
        let mut meta = read::meta(&dir).await?.ok_or(StoreError::NotFound(id))?;
        meta.signatures.retain(|s| s.key_id != signature.key_id);
        meta.signatures.push(signature);
        write::write_meta(&dir, &meta).await?;
        Ok(meta)
    }

    async fn get(&self, name: &str, version: &str) -> Result<Option<ArtifactMeta>, StoreError> {
        match self.version_dir(name, version) {
            Some(dir) => read::meta(&dir).await,
            None => Ok(None),
        }
    }

    async fn list_names(&self) -> Result<Vec<String>, StoreError> {
        read::names(&self.root).await
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<ArtifactMeta>, StoreError> {
        if validate_name(name).is_err() {
            return Ok(Vec::new());
        }
        read::versions(&self.root.join(name)).await
    }

    async fn open(
        &self,
        name: &str,
        version: &str,
        range: Option<ByteRange>,
    ) -> Result<BlobReader, StoreError> {
        let id = ArtifactMeta::make_id(name, version);
        let dir = self
            .version_dir(name, version)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        if read::meta(&dir).await?.is_none() {
            return Err(StoreError::NotFound(id));
        }
        read::open_blob(&dir.join(BLOB_FILE), range).await
    }

    async fn download_link(
        &self,
        meta: &ArtifactMeta,
        public_url: &str,
    ) -> Result<DownloadLink, StoreError> {
        let (query, expires) = self.signer.query(&meta.name, &meta.version, now_secs());
        Ok(DownloadLink {
            url: format!(
                "{}/api/v1/artifacts/{}/{}/download?{query}",
                public_url.trim_end_matches('/'),
                meta.name,
                meta.version
            ),
            expires_at: expires.saturating_mul(1000),
        })
    }

    fn authorize_download(
        &self,
        name: &str,
        version: &str,
        expires: Option<u64>,
        sig: Option<&str>,
    ) -> Result<(), StoreError> {
        Ok(self.signer.check(name, version, expires, sig, now_secs())?)
    }
}
