//! The S3 backend of [`ArtifactStore`] (AWS S3, MinIO, any S3-compatible server), through
//! rust-s3 with rustls. Layout in the bucket: `<prefix><name>/<version>/blob` with `meta.json`
//! beside it, written last, so the bucket alone is the index (as with the filesystem store).
//! Uploads are staged on local disk while hashed, then streamed to S3 as a multipart upload, so
//! a large artifact never sits whole in memory. Devices download with presigned GET URLs.

use super::fs::write::stage_to;
use super::{
    ArtifactStore, BlobReader, ByteRange, ByteStream, DownloadLink, NewArtifact, StagedBlob,
    StoreError, StoreOutcome,
};
use async_trait::async_trait;
use fleet_schema::artifact::{validate_name, validate_version, Signature};
use fleet_schema::ArtifactMeta;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, Region};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the bucket (from fleetd's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint URL for S3-compatible servers (MinIO, ...); AWS when absent.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-host style.
    pub path_style: bool,
    /// Access key; the usual AWS environment variables and profile when absent.
    pub access_key: Option<String>,
    /// Secret key.
    pub secret_key: Option<String>,
    /// Key prefix inside the bucket (e.g. `fleetd/`).
    pub prefix: String,
    /// Lifetime of presigned download URLs.
    pub url_ttl: Duration,
}

/// The S3 store.
pub struct S3Store {
    bucket: Box<Bucket>,
    prefix: String,
    staging: PathBuf,
    url_ttl: Duration,
    commit_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket.name)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn s3_err(context: impl std::fmt::Display) -> impl FnOnce(S3Error) -> StoreError {
    let context = context.to_string();
    move |e| StoreError::Io {
        context,
        reason: std::io::Error::other(e.to_string()),
    }
}

fn is_not_found(e: &S3Error) -> bool {
    matches!(e, S3Error::HttpFailWithBody(404, _))
}

impl S3Store {
    /// Connects to the bucket (no request is made yet); `staging` is a local directory for
    /// uploads in progress.
    pub fn open(cfg: &S3Config, staging: PathBuf) -> Result<Self, StoreError> {
        let region = match &cfg.endpoint {
            Some(endpoint) => Region::Custom {
                region: cfg.region.clone(),
                endpoint: endpoint.trim_end_matches('/').to_string(),
            },
            None => cfg.region.parse().map_err(|e| {
                StoreError::Invalid(format!("S3 region {:?} is invalid: {e}", cfg.region))
            })?,
        };
        let creds = match (&cfg.access_key, &cfg.secret_key) {
            (Some(a), Some(s)) => Credentials::new(Some(a), Some(s), None, None, None),
            _ => Credentials::default(),
        }
        .map_err(|e| StoreError::Invalid(format!("S3 credentials: {e} (set --s3-access-key/--s3-secret-key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")))?;
        let mut bucket = Bucket::new(&cfg.bucket, region, creds)
            .map_err(|e| StoreError::Invalid(format!("S3 bucket {:?}: {e}", cfg.bucket)))?;
        if cfg.path_style {
            bucket = bucket.with_path_style();
        }
        std::fs::create_dir_all(&staging).map_err(|reason| StoreError::Io {
            context: format!("cannot create {}", staging.display()),
            reason,
        })?;
        let mut prefix = cfg.prefix.trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            bucket,
            prefix,
            staging,
            url_ttl: cfg.url_ttl,
            commit_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn key(&self, name: &str, version: &str, file: &str) -> String {
        format!("{}{name}/{version}/{file}", self.prefix)
    }

    async fn read_meta(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<ArtifactMeta>, StoreError> {
        if validate_name(name).is_err() || validate_version(version).is_err() {
            return Ok(None);
        }
        let key = self.key(name, version, "meta.json");
        match self.bucket.get_object(&key).await {
            Ok(resp) => serde_json::from_slice(resp.as_slice())
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    path: format!("s3://{}/{key}", self.bucket.name),
                    reason: e.to_string(),
                }),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(s3_err(format!(
                "cannot read s3://{}/{key}",
                self.bucket.name
            ))(e)),
        }
    }

    async fn write_meta(&self, meta: &ArtifactMeta) -> Result<(), StoreError> {
        let key = self.key(&meta.name, &meta.version, "meta.json");
        let json = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::Corrupt {
            path: key.clone(),
            reason: e.to_string(),
        })?;
        self.bucket
            .put_object_with_content_type(&key, &json, "application/json")
            .await
            .map_err(s3_err(format!(
                "cannot write s3://{}/{key}",
                self.bucket.name
            )))?;
        Ok(())
    }

    /// Common prefixes directly under `prefix`, without it and the trailing `/`.
    async fn children(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let pages = self
            .bucket
            .list(prefix.to_string(), Some("/".to_string()))
            .await
            .map_err(s3_err(format!(
                "cannot list s3://{}/{prefix}",
                self.bucket.name
            )))?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.common_prefixes.unwrap_or_default())
            .filter_map(|c| {
                c.prefix
                    .strip_prefix(prefix)
                    .map(|s| s.trim_end_matches('/').to_string())
            })
            .collect())
    }
}

#[async_trait]
impl ArtifactStore for S3Store {
    async fn stage(&self, body: ByteStream<'_>, max_size: u64) -> Result<StagedBlob, StoreError> {
        stage_to(&self.staging, body, max_size).await
    }

    async fn commit(
        &self,
        staged: StagedBlob,
        new: NewArtifact,
    ) -> Result<StoreOutcome, StoreError> {
        let id = ArtifactMeta::make_id(&new.name, &new.version);
        if validate_name(&new.name).is_err() || validate_version(&new.version).is_err() {
            return Err(StoreError::Invalid(format!(
                "artifact {id} has an invalid name or version"
            )));
        }
        let _guard = self.commit_lock.lock().await;
        if let Some(existing) = self.read_meta(&new.name, &new.version).await? {
            return StoreOutcome::over_existing(existing, &staged);
        }
        let blob_key = self.key(&new.name, &new.version, "blob");
        let mut file = tokio::fs::File::open(staged.key())
            .await
            .map_err(|reason| StoreError::Io {
                context: format!("cannot open staged upload {}", staged.key()),
                reason,
            })?;
        // Multipart upload in bounded chunks, read from the staged file.
        self.bucket
            .put_object_stream(&mut file, &blob_key)
            .await
            .map_err(s3_err(format!(
                "cannot upload to s3://{}/{blob_key}",
                self.bucket.name
            )))?;
        let meta = new.into_meta(id, &staged, format!("s3://{}/{blob_key}", self.bucket.name));
        // meta.json last: it is the commit point.
        self.write_meta(&meta).await?;
        drop(staged);
        Ok(StoreOutcome::Created(meta))
    }

    async fn add_signature(
        &self,
        name: &str,
        version: &str,
        signature: Signature,
    ) -> Result<ArtifactMeta, StoreError> {
        let _guard = self.commit_lock.lock().await;
        let mut meta = self
            .read_meta(name, version)
            .await?
            .ok_or_else(|| StoreError::NotFound(ArtifactMeta::make_id(name, version)))?;
        meta.signatures.retain(|s| s.key_id != signature.key_id);
        meta.signatures.push(signature);
        self.write_meta(&meta).await?;
        Ok(meta)
    }

    async fn get(&self, name: &str, version: &str) -> Result<Option<ArtifactMeta>, StoreError> {
        self.read_meta(name, version).await
    }

    async fn list_names(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for name in self.children(&self.prefix).await? {
            if validate_name(&name).is_ok() && !self.list_versions(&name).await?.is_empty() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<ArtifactMeta>, StoreError> {
        if validate_name(name).is_err() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for version in self.children(&format!("{}{name}/", self.prefix)).await? {
            match self.read_meta(name, &version).await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping artifact version"),
            }
        }
        super::fs::read::sort_by_semver(&mut out);
        Ok(out)
    }

    async fn open(
        &self,
        name: &str,
        version: &str,
        _range: Option<ByteRange>,
    ) -> Result<BlobReader, StoreError> {
        Err(StoreError::NotServed(ArtifactMeta::make_id(name, version)))
    }

    async fn download_link(
        &self,
        meta: &ArtifactMeta,
        _public_url: &str,
    ) -> Result<DownloadLink, StoreError> {
        let ttl = u32::try_from(self.url_ttl.as_secs().clamp(1, 604_800)).unwrap_or(604_800);
        let key = self.key(&meta.name, &meta.version, "blob");
        let url = self
            .bucket
            .presign_get(&key, ttl, None)
            .await
            .map_err(s3_err(format!(
                "cannot presign s3://{}/{key}",
                self.bucket.name
            )))?;
        Ok(DownloadLink {
            url,
            expires_at: crate::clock::now_ms() + u64::from(ttl) * 1000,
        })
    }

    fn authorize_download(
        &self,
        name: &str,
        version: &str,
        _expires: Option<u64>,
        _sig: Option<&str>,
    ) -> Result<(), StoreError> {
        Err(StoreError::NotServed(ArtifactMeta::make_id(name, version)))
    }
}

#[cfg(test)]
#[path = "s3_tests.rs"]
mod tests;
