//! Reading the filesystem store: metadata, version lists in semantic-version order, blobs.

use super::{io, META_FILE};
use crate::store::{BlobReader, ByteRange, StoreError};
use fleet_schema::ArtifactMeta;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Reads `dir/meta.json`; `None` when the version does not exist (or its upload never
/// completed).
pub(super) async fn meta(dir: &Path) -> Result<Option<ArtifactMeta>, StoreError> {
    let path = dir.join(META_FILE);
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Every complete version under an artifact directory, ascending by semantic version.
/// Unreadable metadata is logged and skipped so one bad version cannot hide the others.
pub(super) async fn versions(name_dir: &Path) -> Result<Vec<ArtifactMeta>, StoreError> {
    let mut entries = match tokio::fs::read_dir(name_dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("cannot list {}", name_dir.display()))(e)),
    };
    let mut out = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(io(format!("cannot list {}", name_dir.display())))?
    {
        match meta(&entry.path()).await {
            Ok(Some(m)) => out.push(m),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "skipping artifact version"),
        }
    }
    sort_by_semver(&mut out);
    Ok(out)
}

/// Sorts metadata ascending by semantic version (unparsable versions, which the upload
/// validation prevents, sort first by string).
pub(crate) fn sort_by_semver(metas: &mut [ArtifactMeta]) {
    metas.sort_by(|a, b| {
        match (
            semver::Version::parse(&a.version),
            semver::Version::parse(&b.version),
        ) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
            (Err(_), Err(_)) => a.version.cmp(&b.version),
        }
    });
}

/// Names of artifacts that have at least one complete version, sorted.
pub(super) async fn names(root: &Path) -> Result<Vec<String>, StoreError> {
    let mut entries = tokio::fs::read_dir(root)
        .await
        .map_err(io(format!("cannot list {}", root.display())))?;
    let mut out = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(io(format!("cannot list {}", root.display())))?
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if !versions(&entry.path()).await?.is_empty() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Opens a blob at an optional range.
pub(super) async fn open_blob(
    path: &Path,
    range: Option<ByteRange>,
) -> Result<BlobReader, StoreError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(io(format!("cannot open {}", path.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(io(format!("cannot stat {}", path.display())))?
        .len();
    let (start, len) = match range {
        Some(r) => (r.start, r.len()),
        None => (0, size),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(io(format!("cannot seek {}", path.display())))?;
    }
    Ok(BlobReader {
        reader: Box::pin(file.take(len)),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;
    use crate::store::{ArtifactStore, NewArtifact, StoreError, StoreOutcome};
    use axum::body::Bytes;

    fn body(data: &'static [u8]) -> crate::store::ByteStream<'static> {
        Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(&data[..2])),
            Ok(Bytes::from_static(&data[2..])),
        ]))
    }

    #[tokio::test]
    async fn store_round_trip_idempotence_conflict_and_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::open(dir.path()).expect("opens");
        for v in ["1.10.0", "1.9.0", "1.0.0-rc.1"] {
            let staged = store.stage(body(b"hello"), 100).await.expect("stages");
            assert!(matches!(
                store
                    .commit(staged, NewArtifact::for_test(v))
                    .await
                    .expect("commits"),
                StoreOutcome::Created(_)
            ));
        }
        let staged = store.stage(body(b"hello"), 100).await.expect("stages");
        assert!(matches!(
            store
                .commit(staged, NewArtifact::for_test("1.9.0"))
                .await
                .expect("commits"),
            StoreOutcome::Existing(_)
        ));
        let staged = store.stage(body(b"other"), 100).await.expect("stages");
        assert!(matches!(
            store.commit(staged, NewArtifact::for_test("1.9.0")).await,
            Err(StoreError::Conflict { .. })
        ));
        let versions: Vec<String> = store
            .list_versions("app")
            .await
            .expect("lists")
            .into_iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, vec!["1.0.0-rc.1", "1.9.0", "1.10.0"]);
        assert_eq!(store.list_names().await.expect("lists"), vec!["app"]);

        let mut r = store
            .open("app", "1.9.0", Some(ByteRange { start: 1, end: 3 }))
            .await
            .expect("opens");
        let mut s = String::new();
        r.reader.read_to_string(&mut s).await.expect("reads");
        assert_eq!((s.as_str(), r.len), ("ell", 3));

        let err = store
            .stage(body(b"toolarge"), 4)
            .await
            .expect_err("too large");
        assert!(matches!(err, StoreError::TooLarge { max: 4 }));
        let leftovers = std::fs::read_dir(dir.path().join(".tmp"))
            .expect("tmp")
            .count();
        assert_eq!(
            leftovers, 0,
            "failed and committed uploads leave no temp files"
        );
        assert!(store
            .get("../x", "1.0.0")
            .await
            .expect("no error")
            .is_none());
    }
}
