//! Staging (stream to a temp file while hashing) and committing (rename into place, then
//! write `meta.json` atomically) for the filesystem store.

use super::{io, BLOB_FILE, META_FILE};
use crate::store::{ByteStream, NewArtifact, StagedBlob, StoreError, StoreOutcome};
use fleet_schema::ArtifactMeta;
use futures_util::StreamExt;
use ring::digest;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

/// Distinguishes staging files created in the same nanosecond.
static STAGE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Streams `body` into a new file in `tmp_dir`, hashing as it goes (also the S3 store's
/// local staging).
pub(crate) async fn stage_to(
    tmp_dir: &Path,
    mut body: ByteStream<'_>,
    max_size: u64,
) -> Result<StagedBlob, StoreError> {
    let path = tmp_dir.join(format!(
        "upload-{}-{}-{}",
        std::process::id(),
        crate::clock::now_ms(),
        STAGE_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(io(format!("cannot create {}", path.display())))?;
    // From here on, the staged blob's drop guard removes the file on every error path.
    let remove_path = path.clone();
    let cleanup = Box::new(move |_: &str| {
        let _ = std::fs::remove_file(&remove_path);
    });
    let mut staged = StagedBlob::new(
        path.to_string_lossy().into_owned(),
        0,
        String::new(),
        String::new(),
        cleanup,
    );
    let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let mut sha256 = digest::Context::new(&digest::SHA256);
    let mut sha512 = digest::Context::new(&digest::SHA512);
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Upload(e.to_string()))?;
        size += chunk.len() as u64;
        if size > max_size {
            return Err(StoreError::TooLarge { max: max_size });
        }
        sha256.update(&chunk);
        sha512.update(&chunk);
        writer
            .write_all(&chunk)
            .await
            .map_err(io(format!("cannot write {}", path.display())))?;
    }
    writer
        .flush()
        .await
        .map_err(io(format!("cannot write {}", path.display())))?;
    writer
        .get_mut()
        .sync_all()
        .await
        .map_err(io(format!("cannot sync {}", path.display())))?;
    staged.size = size;
    staged.sha256 = hex::encode(sha256.finish().as_ref());
    staged.sha512 = hex::encode(sha512.finish().as_ref());
    Ok(staged)
}

/// Moves a staged blob to `dir/blob` and writes `dir/meta.json`, unless the version exists.
pub(super) async fn commit(
    dir: &Path,
    staged: StagedBlob,
    new: NewArtifact,
) -> Result<StoreOutcome, StoreError> {
    let id = ArtifactMeta::make_id(&new.name, &new.version);
    if let Some(existing) = super::read::meta(dir).await? {
        return StoreOutcome::over_existing(existing, &staged);
    }
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io(format!("cannot create {}", dir.display())))?;
    let blob = dir.join(BLOB_FILE);
    tokio::fs::rename(staged.key(), &blob)
        .await
        .map_err(io(format!("cannot move upload to {}", blob.display())))?;
    let meta = new.into_meta(id, &staged, format!("file://{}", blob.display()));
    staged.disarm();
    if let Err(e) = write_meta(dir, &meta).await {
        // Without its metadata the blob is invisible: left there, it would hold its space (on
        // a disk that is already full) until someone uploads the same version again.
        let _ = tokio::fs::remove_file(&blob).await;
        let _ = tokio::fs::remove_file(dir.join(format!("{META_FILE}.tmp"))).await;
        let _ = tokio::fs::remove_dir(dir).await;
        return Err(e);
    }
    Ok(StoreOutcome::Created(meta))
}

/// Writes `meta.json` atomically and durably: temp file, fsync, rename, fsync of the
/// directories whose entries changed.
pub(super) async fn write_meta(dir: &Path, meta: &ArtifactMeta) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::Corrupt {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(io(format!("cannot create {}", tmp.display())))?;
    file.write_all(&json)
        .await
        .map_err(io(format!("cannot write {}", tmp.display())))?;
    file.sync_all()
        .await
        .map_err(io(format!("cannot sync {}", tmp.display())))?;
    drop(file);
    let path = dir.join(META_FILE);
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(io(format!("cannot move {} into place", path.display())))?;
    let mut dirs: Vec<PathBuf> = vec![dir.to_path_buf()];
    if let Some(parent) = dir.parent() {
        dirs.push(parent.to_path_buf());
        if let Some(root) = parent.parent() {
            dirs.push(root.to_path_buf());
        }
    }
    for d in dirs {
        sync_dir(&d).await?;
    }
    Ok(())
}

/// fsyncs a directory so a rename or new entry in it survives power loss.
async fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let file = tokio::fs::File::open(dir)
        .await
        .map_err(io(format!("cannot open {}", dir.display())))?;
    file.sync_all()
        .await
        .map_err(io(format!("cannot sync {}", dir.display())))
}
