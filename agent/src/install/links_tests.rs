//! Regression tests for archives whose links lead out of the version directory (issue 10): each
//! archive is built here, installed with the real installer into a data directory next to a
//! "host" file, and must be refused naming the entry, with the host file untouched and nothing
//! written outside the data directory.

use super::*;
use crate::runtime::files;
use fleet_schema::app_spec::ConfigFile;

const REG: tar::EntryType = tar::EntryType::Regular;
const DIR: tar::EntryType = tar::EntryType::Directory;
const SYM: tar::EntryType = tar::EntryType::Symlink;

/// A tar.gz of raw entries (name, type, link target, content), written with raw headers so
/// any link target goes in as given.
fn tar_gz(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

/// A temp dir holding `host` (0600, "host secret") and `data/`, the agent's data directory.
/// The staging directory `data/apps/web/.1.0.0.staging` is four levels below it.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().join("host");
        fs::write(&host, "host secret").expect("host file");
        fs::set_permissions(&host, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::create_dir(dir.path().join("data")).expect("data dir");
        Self { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn install(&self, bytes: &[u8], entrypoint: Option<&str>) -> Result<PathBuf, InstallError> {
        let dl = layout::partial(&self.data(), "web", "1.0.0");
        fs::create_dir_all(dl.parent().expect("downloads")).expect("mkdir");
        fs::write(&dl, bytes).expect("archive");
        let mut plan = InstallPlan::binary();
        plan.kind = ArtifactType::Archive;
        plan.entrypoint = entrypoint.map(String::from);
        install(&self.data(), "web", "1.0.0", &dl, &BTreeSet::new(), &plan)
    }

    /// The host file is as it was and the temp dir holds nothing but it and `data/`.
    fn assert_untouched(&self, case: &str) {
        let host = self.dir.path().join("host");
        let mode = fs::metadata(&host).expect("host").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{case}: host file mode changed");
        assert_eq!(
            fs::read_to_string(&host).expect("host"),
            "host secret",
            "{case}"
        );
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["data", "host"],
            "{case}: something was written outside"
        );
    }
}

#[test]
fn archives_whose_links_lead_out_are_refused_and_touch_nothing_outside() {
    let host_abs = "/etc/passwd";
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        (
            "chained relative links, entry point through them",
            tar_gz(&[
                ("d/", DIR, "", b""),
                ("d/up", SYM, "..", b""),
                ("esc", SYM, "d/up/d/up/../../../..", b""),
            ]),
            Some("esc/host"),
            "\"esc\"",
        ),
        (
            "entry point that is a link out",
            tar_gz(&[
                ("d/", DIR, "", b""),
                ("d/up", SYM, "..", b""),
                ("run", SYM, "d/up/d/up/../../../../host", b""),
            ]),
            Some("run"),
            "\"run\"",
        ),
        (
            "a link redirected out by a link made after it",
            tar_gz(&[
                ("e", SYM, "s/s/s/s/../../../../host", b""),
                ("s", SYM, ".", b""),
            ]),
            Some("e"),
            "\"e\"",
        ),
        (
            "link, then a file through it",
            tar_gz(&[
                ("d/", DIR, "", b""),
                ("d/up", SYM, "..", b""),
                ("esc", SYM, "d/up/d/up/../../../..", b""),
                ("esc/injected.conf", REG, "", b"x"),
            ]),
            None,
            "\"esc",
        ),
        (
            "absolute link",
            tar_gz(&[("web", SYM, host_abs, b"")]),
            None,
            "\"web\"",
        ),
    ];
    for (case, bytes, entry, names) in cases {
        let h = Host::new();
        let result = h.install(&bytes, entry);
        h.assert_untouched(case);
        let err = result.expect_err(case).to_string();
        assert!(
            err.contains(names),
            "{case}: the error names the entry: {err}"
        );
        assert!(
            err.contains("outside") || err.contains("symbolic link"),
            "{case}: the error says why: {err}"
        );
        assert!(
            !layout::version_dir(&h.data(), "web", "1.0.0").exists(),
            "{case}: no version installed"
        );
    }
}

#[test]
fn in_tree_links_keep_working() {
    let h = Host::new();
    let exe = h
        .install(
            &tar_gz(&[
                ("lib/", DIR, "", b""),
                ("lib/libfoo.so.1", REG, "", b"lib"),
                ("lib/libfoo.so", SYM, "libfoo.so.1", b""),
                ("bin/", DIR, "", b""),
                ("bin/run", REG, "", b"#!/bin/sh\necho hi\n"),
                ("current", SYM, "bin", b""),
                ("bin/up", SYM, "..", b""),
            ]),
            Some("current/up/current/run"),
        )
        .expect("installs");
    let vdir = layout::version_dir(&h.data(), "web", "1.0.0");
    assert_eq!(fs::read(vdir.join("lib/libfoo.so")).expect("lib"), b"lib");
    let real = |p: &Path| fs::canonicalize(p).expect("resolves");
    assert_eq!(real(&exe), real(&vdir.join("bin/run")));
    let mode = fs::metadata(vdir.join("bin/run"))
        .expect("run")
        .permissions()
        .mode();
    assert_eq!(mode & 0o500, 0o500, "the entry point is executable");
    assert_eq!(
        files::program(&vdir, None, "web").expect("program"),
        vdir.join("bin/run")
    );
    h.assert_untouched("good archive");
}

#[test]
fn runtime_writes_and_execs_never_follow_a_link_out_of_the_version() {
    let h = Host::new();
    h.install(&tar_gz(&[("web", REG, "", b"#!/bin/sh\n")]), None)
        .expect("installs");
    let vdir = layout::version_dir(&h.data(), "web", "1.0.0");
    // A link the app itself made after the install.
    std::os::unix::fs::symlink("../../../..", vdir.join("esc")).expect("link");
    let conf = ConfigFile {
        path: "esc/injected.conf".into(),
        content: "injected".into(),
        mode: Some(0o644),
        secret: false,
    };
    let err = files::write_all(&vdir, &[conf])
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("esc/injected.conf") && err.contains("outside"),
        "names the file and why: {err}"
    );
    let err = files::program(&vdir, Some("esc/host"), "web")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("esc/host") && err.contains("outside"), "{err}");
    let err = crate::runtime::prestart::resolve(&vdir, "esc/host").expect_err("refused");
    assert!(err.contains("outside"), "{err}");
    h.assert_untouched("runtime");
}
