//! Choosing the artifact store from fleetd's flags: the filesystem store under the data
//! directory (default) or an S3 bucket.

use super::fs::FsStore;
use super::s3::{S3Config, S3Store};
use super::{ArtifactStore, StoreError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Which backend keeps artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// `<data-dir>/artifacts` on local disk.
    Fs,
    /// An S3 or S3-compatible bucket.
    S3,
}

/// The S3 flags of `fleetd` (used with `--store s3`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct S3Args {
    /// S3 bucket holding the artifacts.
    #[arg(long, env = "FLEETD_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 region.
    #[arg(long, env = "FLEETD_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Endpoint of an S3-compatible server (MinIO, ...), e.g. http://127.0.0.1:9000.
    #[arg(long, env = "FLEETD_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Use path-style addressing (endpoint/bucket/key), as MinIO usually needs.
    #[arg(long, env = "FLEETD_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Access key (default: AWS_ACCESS_KEY_ID, then the AWS profile).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    /// Secret key (default: AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, env = "FLEETD_S3_PREFIX", default_value = "artifacts/")]
    pub s3_prefix: String,
}

/// Opens the configured store; `url_ttl` is the lifetime of the download URLs it hands out.
pub fn open_store(
    kind: StoreKind,
    s3: &S3Args,
    data_dir: &Path,
    url_ttl: Duration,
) -> Result<Arc<dyn ArtifactStore>, StoreError> {
    match kind {
        StoreKind::Fs => Ok(Arc::new(
            FsStore::open(&data_dir.join("artifacts"))?.with_url_ttl(url_ttl),
        )),
        StoreKind::S3 => {
            let bucket = s3.s3_bucket.clone().ok_or_else(|| {
                StoreError::Invalid("--store s3 needs --s3-bucket (or FLEETD_S3_BUCKET)".into())
            })?;
            let cfg = S3Config {
                bucket,
                region: s3.s3_region.clone(),
                endpoint: s3.s3_endpoint.clone(),
                path_style: s3.s3_path_style,
                access_key: s3.s3_access_key.clone(),
                secret_key: s3.s3_secret_key.clone(),
                prefix: s3.s3_prefix.clone(),
                url_ttl,
            };
            Ok(Arc::new(S3Store::open(&cfg, data_dir.join("s3-staging"))?))
        }
    }
}
