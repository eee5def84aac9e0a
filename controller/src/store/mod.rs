//! The artifact store: where uploaded blobs and their metadata live. The [`ArtifactStore`]
//! trait is what the HTTP API and the engine use, so an S3 backend can replace the filesystem
//! one ([`fs::FsStore`]) without touching them. Uploads happen in two steps because the bytes
//! must be hashed (and scanned) before they become visible: [`ArtifactStore::stage`] streams
//! them to a temporary place while hashing them, [`ArtifactStore::commit`] moves them into
//! place once the size, digests and scan are checked.

pub mod fs;
mod range;
pub mod s3;
pub mod scan;
pub mod select;
pub mod url_sign;

pub use range::{parse_range, ByteRange, RangeError};
pub use s3::{S3Config, S3Store};
pub use url_sign::{UrlRefusal, UrlSigner};

use async_trait::async_trait;
use axum::body::Bytes;
use fleet_schema::artifact::{BuildInfo, Platform, Requirements, Signature};
use fleet_schema::image_ref::ImageSource;
use fleet_schema::{ArtifactMeta, ArtifactType};
use futures_util::Stream;
use std::collections::BTreeMap;
use std::pin::Pin;
use tokio::io::AsyncRead;

/// A stream of upload bytes (an HTTP body part, for instance).
pub type ByteStream<'a> = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The upload is larger than allowed.
    #[error("artifact is larger than the limit of {max} bytes (--max-upload-bytes)")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The same name and version already hold different bytes (versions are immutable).
    #[error("artifact {id} already exists with different content (stored sha256 {stored}, uploaded sha256 {uploaded}); versions are immutable, upload a new version")]
    Conflict {
        /// `name@version`.
        id: String,
        /// sha256 of the stored blob.
        stored: String,
        /// sha256 of the rejected upload.
        uploaded: String,
    },
    /// Name or version unusable as a store key.
    #[error("{0}")]
    Invalid(String),
    /// The artifact version does not exist.
    #[error("artifact {0} not found")]
    NotFound(String),
    /// Reading the uploaded bytes failed (client went away, malformed multipart).
    #[error("reading the upload failed: {0}")]
    Upload(String),
    /// A filesystem operation failed.
    #[error("{context}: {reason}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The operating system error.
        reason: std::io::Error,
    },
    /// A download URL was refused (unsigned, expired or forged).
    #[error("{0}")]
    Forbidden(#[from] UrlRefusal),
    /// This backend does not serve blobs through fleetd (devices fetch from the object store).
    #[error("artifact {0} is served by the object store, not by fleetd; ask GET /api/v1/artifacts/{{name}}/{{version}}/url")]
    NotServed(String),
    /// Stored metadata cannot be read.
    #[error("corrupt artifact metadata {path}: {reason}")]
    Corrupt {
        /// The metadata file.
        path: String,
        /// Parser message.
        reason: String,
    },
}

/// Discards a backend's staged copy, given its key.
pub type DropHook = Box<dyn FnOnce(&str) + Send + Sync>;

/// Bytes received and hashed, not yet visible in the store. Dropping it without committing
/// deletes the staged bytes.
pub struct StagedBlob {
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Lowercase hex sha512.
    pub sha512: String,
    key: String,
    on_drop: Option<DropHook>,
}

impl StagedBlob {
    /// Creates a staged blob; `on_drop` discards the backend's staged copy (at `key`) unless
    /// [`StagedBlob::disarm`] is called.
    pub fn new(key: String, size: u64, sha256: String, sha512: String, on_drop: DropHook) -> Self {
        Self {
            size,
            sha256,
            sha512,
            key,
            on_drop: Some(on_drop),
        }
    }

    /// Backend-specific location of the staged bytes.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Marks the staged bytes as taken over by the store (no cleanup on drop).
    pub fn disarm(mut self) {
        self.on_drop = None;
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f(&self.key);
        }
    }
}

impl std::fmt::Debug for StagedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedBlob")
            .field("key", &self.key)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// Validated metadata of an upload (the store adds size, checksums, URL and time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    /// Artifact name (validated).
    pub name: String,
    /// Semantic version (validated).
    pub version: String,
    /// Known artifact type.
    pub kind: ArtifactType,
    /// Platforms it runs on.
    pub platforms: Vec<Platform>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// What a device must offer.
    pub requirements: Requirements,
    /// CI build facts.
    pub build_info: BuildInfo,
    /// Signatures over the canonical manifest (checked for form, not trust: devices decide
    /// which keys they trust).
    pub signatures: Vec<Signature>,
    /// The registry image an `oci-image` names instead of carrying a tarball (its blob is
    /// then the reference document).
    pub image: Option<ImageSource>,
}

impl NewArtifact {
    /// The stored metadata of this upload once its blob sits at `storage_url`: the one place
    /// both backends turn an upload and its streamed checksums into an [`ArtifactMeta`].
    pub fn into_meta(self, id: String, staged: &StagedBlob, storage_url: String) -> ArtifactMeta {
        ArtifactMeta {
            id,
            name: self.name,
            version: self.version,
            kind: self.kind,
            build_info: self.build_info,
            requirements: self.requirements,
            signatures: self.signatures,
            size: staged.size,
            checksums: BTreeMap::from([
                ("sha256".to_string(), staged.sha256.clone()),
                ("sha512".to_string(), staged.sha512.clone()),
            ]),
            storage_url,
            platforms: self.platforms,
            created_at: crate::clock::now_ms(),
            labels: self.labels,
            image_digest: self.image.as_ref().and_then(|i| i.digest.clone()),
            image: self.image.map(|i| i.image),
        }
    }

    /// A plain binary `app@version` for the stores' tests.
    #[cfg(test)]
    pub(crate) fn for_test(version: &str) -> Self {
        NewArtifact {
            name: "app".into(),
            version: version.into(),
            kind: ArtifactType::Binary,
            platforms: vec![],
            labels: Default::default(),
            requirements: Default::default(),
            build_info: Default::default(),
            signatures: vec![],
            image: None,
        }
    }
}

/// Result of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// A new version was stored.
    Created(ArtifactMeta),
    /// The same bytes were already stored under that version (idempotent retry).
    Existing(ArtifactMeta),
}

impl StoreOutcome {
    /// The outcome of committing `staged` over the version already stored as `existing`: the
    /// same bytes are an idempotent retry, other bytes a conflict (a version is immutable).
    pub fn over_existing(
        existing: ArtifactMeta,
        staged: &StagedBlob,
    ) -> Result<StoreOutcome, StoreError> {
        let stored = existing.sha256().unwrap_or_default().to_string();
        if stored == staged.sha256 && existing.size == staged.size {
            return Ok(StoreOutcome::Existing(existing));
        }
        Err(StoreError::Conflict {
            id: existing.id.clone(),
            stored,
            uploaded: staged.sha256.clone(),
        })
    }
}

/// An opened blob, positioned at the requested range.
pub struct BlobReader {
    /// The bytes (exactly `len` of them).
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Number of bytes the reader yields.
    pub len: u64,
}

/// Where artifacts live. Implementations must make a version visible atomically (all or
/// nothing) and keep versions immutable.
#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    /// Streams upload bytes to a staging place while computing size, sha256 and sha512;
    /// refuses more than `max_size` bytes.
    async fn stage(&self, body: ByteStream<'_>, max_size: u64) -> Result<StagedBlob, StoreError>;

    /// Makes a staged blob the content of `name@version`; identical bytes already stored give
    /// [`StoreOutcome::Existing`], different bytes [`StoreError::Conflict`].
    async fn commit(
        &self,
        staged: StagedBlob,
        new: NewArtifact,
    ) -> Result<StoreOutcome, StoreError>;

    /// Metadata of one version.
    async fn get(&self, name: &str, version: &str) -> Result<Option<ArtifactMeta>, StoreError>;

    /// Names of every artifact with at least one version, sorted.
    async fn list_names(&self) -> Result<Vec<String>, StoreError>;

    /// Every version of an artifact in ascending semantic-version order (empty if unknown).
    async fn list_versions(&self, name: &str) -> Result<Vec<ArtifactMeta>, StoreError>;

    /// Adds (or replaces, per key id) a signature of an existing version; returns the updated
    /// metadata. Only the signature list changes: content and checksums stay immutable.
    async fn add_signature(
        &self,
        name: &str,
        version: &str,
        signature: Signature,
    ) -> Result<ArtifactMeta, StoreError>;

    /// Opens a version's blob, optionally at a byte range already checked against its size.
    async fn open(
        &self,
        name: &str,
        version: &str,
        range: Option<ByteRange>,
    ) -> Result<BlobReader, StoreError>;

    /// A fresh URL devices download the blob from: fleetd's download endpoint with an expiry
    /// and HMAC for the filesystem store, a presigned URL for object stores.
    async fn download_link(
        &self,
        meta: &ArtifactMeta,
        public_url: &str,
    ) -> Result<DownloadLink, StoreError>;

    /// The URL of [`ArtifactStore::download_link`] alone.
    async fn download_url(
        &self,
        meta: &ArtifactMeta,
        public_url: &str,
    ) -> Result<String, StoreError> {
        Ok(self.download_link(meta, public_url).await?.url)
    }

    /// Checks the `expires` and `sig` of a request to fleetd's own download endpoint.
    fn authorize_download(
        &self,
        name: &str,
        version: &str,
        expires: Option<u64>,
        sig: Option<&str>,
    ) -> Result<(), StoreError>;
}

/// A download URL and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadLink {
    /// Absolute URL.
    pub url: String,
    /// Expiry, Unix milliseconds.
    pub expires_at: u64,
}
