//! Extraction tests with archives built here, hostile ones included (raw tar headers carry
//! names and link targets that the `tar` builder itself would refuse to write).

use super::*;
use std::io::Write;

/// A tar entry: name, type, link target, content.
struct E<'a>(&'a str, tar::EntryType, &'a str, &'a [u8]);

fn tar_gz(entries: &[E<'_>]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for E(name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o4755);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner()
        .expect("tar")
        .finish()
        .expect("gzip finishes")
}

fn zip_of(build: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    build(&mut w);
    w.finish().expect("zip finishes").into_inner()
}

fn opts() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
}

/// Writes `bytes` as an archive and extracts it into a fresh directory next to a sentinel
/// directory that escapes would hit.
fn run(bytes: &[u8], limits: ArchiveLimits) -> (tempfile::TempDir, Result<(), ArchiveError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("a");
    std::fs::write(&archive, bytes).expect("write archive");
    let dest = dir.path().join("out").join("dest");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let r = extract(&archive, &dest, &limits);
    (dir, r)
}

const REG: tar::EntryType = tar::EntryType::Regular;

#[test]
fn good_tar_gz_and_zip_unpack_with_safe_modes() {
    let tgz = tar_gz(&[
        E("bin/", tar::EntryType::Directory, "", b""),
        E("bin/run.sh", REG, "", b"#!/bin/sh\necho hi\n"),
        E("current", tar::EntryType::Symlink, "bin/run.sh", b""),
        E("bin/hard", tar::EntryType::Link, "bin/run.sh", b""),
    ]);
    let (dir, r) = run(&tgz, ArchiveLimits::default());
    r.expect("extracts");
    let dest = dir.path().join("out/dest");
    let mode = std::fs::metadata(dest.join("bin/run.sh"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid bit dropped");
    assert_eq!(
        std::fs::read_to_string(dest.join("current")).expect("via link"),
        "#!/bin/sh\necho hi\n"
    );
    assert!(dest.join("bin/hard").is_file());

    let z = zip_of(|w| {
        w.add_directory("d/", opts()).expect("dir");
        w.start_file("d/app", opts().unix_permissions(0o755))
            .expect("file");
        w.write_all(b"content").expect("write");
        w.add_symlink("link", "d/app", opts()).expect("symlink");
    });
    let (dir, r) = run(&z, ArchiveLimits::default());
    r.expect("extracts");
    let dest = dir.path().join("out/dest");
    assert_eq!(std::fs::read(dest.join("link")).expect("read"), b"content");
}

#[test]
fn hostile_tar_archives_are_refused_naming_the_entry() {
    let big = vec![7u8; 2000];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (tar_gz(&[E("../evil", REG, "", b"x")]), "path traversal"),
        (
            tar_gz(&[E("a/../../evil", REG, "", b"x")]),
            "path traversal",
        ),
        (tar_gz(&[E("/tmp/evil", REG, "", b"x")]), "absolute path"),
        (
            tar_gz(&[E("l", tar::EntryType::Symlink, "/etc", b"")]),
            "outside",
        ),
        (
            tar_gz(&[E("a/l", tar::EntryType::Symlink, "../../x", b"")]),
            "outside",
        ),
        (
            tar_gz(&[E("h", tar::EntryType::Link, "../../etc/passwd", b"")]),
            "outside",
        ),
        (
            tar_gz(&[
                E("l", tar::EntryType::Symlink, ".", b""),
                E("l/x", REG, "", b"x"),
            ]),
            "through a symbolic link",
        ),
        (
            tar_gz(&[E("dev", tar::EntryType::Char, "", b"")]),
            "device file",
        ),
        (
            tar_gz(&[E("fifo", tar::EntryType::Fifo, "", b"")]),
            "device file",
        ),
        (tar_gz(&[E("big", REG, "", &big)]), "more than 1000 bytes"),
        (
            tar_gz(&[
                E("a", REG, "", b"1"),
                E("b", REG, "", b"2"),
                E("c", REG, "", b"3"),
                E("d", REG, "", b"4"),
            ]),
            "more than 3 entries",
        ),
        (b"not an archive at all".to_vec(), "not a tar.gz"),
    ];
    let limits = ArchiveLimits {
        max_bytes: 1000,
        max_entries: 3,
    };
    for (bytes, want) in cases {
        let (dir, r) = run(&bytes, limits);
        let err = r.expect_err(want).to_string();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
        assert!(
            !dir.path().join("out/evil").exists() && !dir.path().join("evil").exists(),
            "nothing escaped for {want}"
        );
    }
}

#[test]
fn hostile_zip_archives_are_refused() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            zip_of(|w| {
                w.start_file("../evil", opts()).expect("file");
                w.write_all(b"x").expect("write");
            }),
            "path traversal",
        ),
        (
            zip_of(|w| {
                w.start_file("/abs", opts()).expect("file");
            }),
            "absolute path",
        ),
        (
            zip_of(|w| {
                w.add_symlink("l", "../../../etc", opts()).expect("symlink");
            }),
            "outside",
        ),
        (
            zip_of(|w| {
                w.start_file("bomb", opts()).expect("file");
                w.write_all(&vec![0u8; 100_000]).expect("write");
            }),
            "more than 1000 bytes",
        ),
    ];
    for (bytes, want) in cases {
        let (_dir, r) = run(
            &bytes,
            ArchiveLimits {
                max_bytes: 1000,
                max_entries: 10,
            },
        );
        let err = r.expect_err(want).to_string();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
}
