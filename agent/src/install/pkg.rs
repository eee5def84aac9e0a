//! RPM and Alpine packages: installed with the system's `rpm -U --replacepkgs` or
//! `apk add --allow-untrusted`, like [`crate::install::deb`] does with dpkg. The package is kept
//! in the version directory, and `<app>` there is a small launcher that reinstalls that exact
//! package when the system may hold another version (a rollback to the kept previous version
//! reinstalls it, with no download) and then executes the entry point (`runtime.entrypoint`,
//! default `/usr/bin/<app>`). A device without the tool lacks the `rpm` / `apk` capability, and
//! an install there is refused naming the missing tool.

use crate::install::tool::{run, write_launcher};
use crate::install::InstallError;
use fleet_schema::ArtifactType;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A system package manager the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageTool {
    /// `rpm` (RPM packages).
    Rpm,
    /// `apk` (Alpine packages).
    Apk,
}

impl PackageTool {
    /// The tool for an artifact type, if it is a package this module installs.
    pub fn for_kind(kind: &ArtifactType) -> Option<Self> {
        match kind {
            ArtifactType::Rpm => Some(Self::Rpm),
            ArtifactType::Apk => Some(Self::Apk),
            _ => None,
        }
    }

    /// The program name.
    pub fn program(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Apk => "apk",
        }
    }

    /// File name of the kept package inside the version directory.
    pub fn package_file(self) -> &'static str {
        match self {
            Self::Rpm => "package.rpm",
            Self::Apk => "package.apk",
        }
    }

    /// Arguments that install (or reinstall, or downgrade to) the package at `pkg`.
    pub fn install_args(self, pkg: &Path) -> Vec<String> {
        let pkg = pkg.to_string_lossy().into_owned();
        match self {
            Self::Rpm => vec![
                "-U".into(),
                "--replacepkgs".into(),
                "--oldpackage".into(),
                pkg,
            ],
            Self::Apk => vec!["add".into(), "--allow-untrusted".into(), pkg],
        }
    }

    /// Arguments that print the package's name (`None`: the launcher does not need it).
    pub fn name_args(self, pkg: &Path) -> Option<Vec<String>> {
        match self {
            Self::Rpm => Some(vec![
                "-qp".into(),
                "--qf".into(),
                "%{NAME}".into(),
                pkg.to_string_lossy().into_owned(),
            ]),
            Self::Apk => None,
        }
    }

    /// The launcher written as `<version>/<app>`.
    pub fn launcher_script(self, package: Option<&str>, entry: &str) -> String {
        let file = self.package_file();
        let ensure = match (self, package) {
            (Self::Rpm, Some(pkg)) => format!(
                "want=$(rpm -qp --qf '%{{VERSION}}-%{{RELEASE}}' \"$dir/{file}\")\nhave=$(rpm -q --qf '%{{VERSION}}-%{{RELEASE}}' {pkg} 2>/dev/null || true)\nif [ \"$have\" != \"$want\" ]; then rpm -U --replacepkgs --oldpackage \"$dir/{file}\" >&2; fi\n",
                pkg = sh_quote(pkg)
            ),
            // apk add of the same file is idempotent and quick (local file, no index).
            _ => format!("apk add --allow-untrusted \"$dir/{file}\" >&2\n"),
        };
        format!(
            "#!/bin/sh\n# Written by fleet-agent: make sure this version's package is the installed one, then run it.\nset -e\ndir=$(dirname \"$0\")\n{ensure}exec {entry} \"$@\"\n",
            entry = sh_quote(entry)
        )
    }
}

/// Quotes a string for a POSIX shell script.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Where `tool` is on the search path `path` (the value of `PATH`).
pub fn find_tool(tool: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Installs the package with `tool` (looked up on `path`, the `PATH` value) and writes the
/// launcher into `staging`.
pub fn stage_package(
    tool: PackageTool,
    app: &str,
    downloaded: &Path,
    staging: &Path,
    entrypoint: Option<&str>,
    path: Option<&OsStr>,
) -> Result<(), InstallError> {
    let program = find_tool(tool.program(), path).ok_or_else(|| {
        InstallError::Package(format!(
            "{} is not installed on this device, so it cannot install a {} package",
            tool.program(),
            tool.program()
        ))
    })?;
    let entry = entrypoint
        .map(str::to_string)
        .unwrap_or_else(|| format!("/usr/bin/{app}"));
    if !Path::new(&entry).is_absolute() {
        return Err(InstallError::Entrypoint(format!(
            "entry point {entry:?} of a {} package must be an absolute path",
            tool.program()
        )));
    }
    let kept = staging.join(tool.package_file());
    fs::rename(downloaded, &kept).map_err(|source| InstallError::Io {
        context: format!("cannot move {} into place", downloaded.display()),
        source,
    })?;
    let name = match tool.name_args(&kept) {
        Some(args) => {
            let name = run(
                Command::new(&program).args(args),
                &format!("{} (reading the package name)", tool.program()),
            )?;
            if name.is_empty() {
                return Err(InstallError::Package("the package has no name".into()));
            }
            Some(name)
        }
        None => None,
    };
    run(
        Command::new(&program).args(tool.install_args(&kept)),
        &format!(
            "{} {}",
            tool.program(),
            tool.install_args(&kept)[..2].join(" ")
        ),
    )?;
    if !Path::new(&entry).is_file() {
        return Err(InstallError::Entrypoint(format!(
            "entry point {entry:?} is not an installed file (set runtime.entrypoint to its absolute path)"
        )));
    }
    write_launcher(
        &staging.join(app),
        &tool.launcher_script(name.as_deref(), &entry),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_the_documented_ones() {
        let p = Path::new("/v/package.rpm");
        assert_eq!(
            PackageTool::Rpm.install_args(p),
            ["-U", "--replacepkgs", "--oldpackage", "/v/package.rpm"]
        );
        assert_eq!(
            PackageTool::Apk.install_args(Path::new("/v/package.apk")),
            ["add", "--allow-untrusted", "/v/package.apk"]
        );
        assert_eq!(
            PackageTool::Rpm.name_args(p).expect("rpm reads the name"),
            ["-qp", "--qf", "%{NAME}", "/v/package.rpm"]
        );
        assert_eq!(
            PackageTool::for_kind(&ArtifactType::Apk),
            Some(PackageTool::Apk)
        );
        assert_eq!(PackageTool::for_kind(&ArtifactType::Deb), None);
    }

    #[test]
    fn launchers_reinstall_the_kept_package_then_exec_the_entry_point() {
        let rpm = PackageTool::Rpm.launcher_script(Some("my'pkg"), "/usr/bin/web");
        assert!(
            rpm.contains("rpm -q --qf '%{VERSION}-%{RELEASE}' 'my'\\''pkg'"),
            "{rpm}"
        );
        assert!(
            rpm.contains("rpm -U --replacepkgs --oldpackage \"$dir/package.rpm\""),
            "{rpm}"
        );
        assert!(rpm.ends_with("exec '/usr/bin/web' \"$@\"\n"), "{rpm}");
        let apk = PackageTool::Apk.launcher_script(None, "/usr/bin/web");
        assert!(
            apk.contains("apk add --allow-untrusted \"$dir/package.apk\""),
            "{apk}"
        );
        assert!(apk.ends_with("exec '/usr/bin/web' \"$@\"\n"), "{apk}");
    }

    #[test]
    fn a_device_without_the_tool_refuses_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("x.rpm");
        std::fs::write(&dl, b"rpm bytes").expect("write");
        let staging = dir.path().join("s");
        std::fs::create_dir(&staging).expect("mkdir");
        let empty = dir.path().join("empty-bin");
        std::fs::create_dir(&empty).expect("mkdir");
        for tool in [PackageTool::Rpm, PackageTool::Apk] {
            let e = stage_package(tool, "x", &dl, &staging, None, Some(empty.as_os_str()))
                .expect_err("refused")
                .to_string();
            assert!(
                e.contains(&format!("{} is not installed", tool.program())),
                "{e}"
            );
        }
        assert!(dl.exists(), "nothing was moved");
    }

    #[test]
    fn a_relative_entry_point_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("rpm"), b"").expect("fake tool on PATH");
        let e = stage_package(
            PackageTool::Rpm,
            "x",
            &dir.path().join("x.rpm"),
            dir.path(),
            Some("bin/x"),
            Some(dir.path().as_os_str()),
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("must be an absolute path"), "{e}");
    }

    #[test]
    fn a_failing_tool_reports_its_stderr() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let apk = bin.join("apk");
        std::fs::write(&apk, "#!/bin/sh\necho 'ERROR: bad signature' >&2\nexit 1\n")
            .expect("write");
        std::fs::set_permissions(&apk, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dl = dir.path().join("x.apk");
        std::fs::write(&dl, b"apk bytes").expect("write");
        let staging = dir.path().join("s");
        std::fs::create_dir(&staging).expect("mkdir");
        let e = stage_package(
            PackageTool::Apk,
            "x",
            &dl,
            &staging,
            None,
            Some(bin.as_os_str()),
        )
        .expect_err("fails")
        .to_string();
        assert!(e.contains("apk add") && e.contains("bad signature"), "{e}");
    }
}
