//! Installs a verified download as `apps/<app>/<version>/` so that a power loss leaves either
//! the complete version directory or none (stage, fsync, atomic rename, fsync the parent), and
//! prunes versions other than the new, current and running ones (the bounded cache: a rollback
//! to the previous version needs no download). A binary becomes `<version>/<app>`; an archive
//! is unpacked there (see [`crate::install::archive`]) and `<app>` is linked to its entry point,
//! so the supervisor starts every kind the same way. An archive's install script
//! ([`crate::install::script`]) runs once after unpacking, before the rename.
//!
//! One file per artifact type: [`archive`] (tar.gz, tar, zip), [`deb`] (dpkg), [`pkg`] (rpm,
//! apk), [`nix_store`] (Nix closures and store paths), [`oci`] (container images); [`script`]
//! runs an archive's install script and [`tool`] is the runner the package installers share.

pub mod archive;
pub mod deb;
pub mod nix_store;
pub mod oci;
pub mod pkg;
pub mod script;
pub mod tool;

use crate::confine;
use crate::layout;
use crate::runtime::container::{self, Installed};
use archive::{ArchiveError, ArchiveLimits};
use fleet_schema::app_spec::RuntimeKind;
use fleet_schema::{ArtifactType, DesiredState};
use pkg::PackageTool;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A filesystem step failed.
    #[error("install failed: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The archive was refused.
    #[error("install failed: {0}")]
    Archive(#[from] ArchiveError),
    /// The entry point is missing or unusable.
    #[error("install failed: {0}")]
    Entrypoint(String),
    /// The archive's install script is missing or failed.
    #[error("install failed: {0}")]
    Script(String),
    /// The system package tool failed.
    #[error("install failed: {0}")]
    Package(String),
    /// This agent cannot install the artifact type.
    #[error("install failed: artifact type {0} is not supported by this agent")]
    Unsupported(String),
}

impl InstallError {
    /// Whether installing again later may well succeed without a new version: the disk was
    /// full (see [`crate::fetch::download::out_of_space`]). Every other failure is the device's
    /// verdict on the version.
    pub fn is_transient(&self) -> bool {
        match self {
            InstallError::Io { source, .. }
            | InstallError::Archive(ArchiveError::Io { source, .. }) => {
                crate::fetch::download::out_of_space(source)
            }
            _ => false,
        }
    }
}

fn err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let context = context.into();
    move |source| InstallError::Io { context, source }
}

/// True for the artifact types this agent installs itself.
pub fn supported(kind: &ArtifactType) -> bool {
    matches!(
        kind,
        ArtifactType::Binary
            | ArtifactType::Archive
            | ArtifactType::Deb
            | ArtifactType::OciImage
            | ArtifactType::Rpm
            | ArtifactType::Apk
            | ArtifactType::Nixpack
    )
}

/// How to install one version: its type, its entry point and the archive limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// Artifact type.
    pub kind: ArtifactType,
    /// Entry point inside an archive (relative path); `<app>` when absent.
    pub entrypoint: Option<String>,
    /// Bounds on archive extraction.
    pub limits: ArchiveLimits,
    /// Script inside an archive run once after unpacking.
    pub install_script: Option<String>,
    /// Script inside an archive run before every start (checked and made executable here).
    pub pre_start_script: Option<String>,
    /// The app's environment, given to the install script.
    pub env: BTreeMap<String, String>,
    /// Longest time the install script may run.
    pub script_timeout: Duration,
    /// The app's runtime (picks the container engine of an `oci-image`).
    pub runtime: RuntimeKind,
}

impl InstallPlan {
    /// The plan for `app@version` from the desired state (a binary when it is not there).
    pub fn for_app(
        desired: Option<&DesiredState>,
        app: &str,
        version: &str,
        limits: ArchiveLimits,
    ) -> Self {
        let want = desired.and_then(|d| {
            d.apps
                .iter()
                .find(|a| a.name == app && a.version == version)
        });
        Self {
            kind: want.map_or(ArtifactType::Binary, |a| a.artifact.kind.clone()),
            entrypoint: want.and_then(|a| a.spec.runtime.entrypoint.clone()),
            limits,
            install_script: want.and_then(|a| a.spec.runtime.install_script.clone()),
            pre_start_script: want.and_then(|a| a.spec.runtime.pre_start_script.clone()),
            env: want.map(|a| a.spec.env.clone()).unwrap_or_default(),
            script_timeout: script::DEFAULT_TIMEOUT,
            runtime: want.map_or(RuntimeKind::Raw, |a| a.spec.runtime.kind.clone()),
        }
    }

    /// A plain binary.
    pub fn binary() -> Self {
        Self {
            kind: ArtifactType::Binary,
            entrypoint: None,
            limits: ArchiveLimits::default(),
            install_script: None,
            pre_start_script: None,
            env: BTreeMap::new(),
            script_timeout: script::DEFAULT_TIMEOUT,
            runtime: RuntimeKind::Raw,
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(format!("cannot sync {}", dir.display())))
}

/// Installs `downloaded` as `version` of `app`, keeping only `version` and `keep` afterwards.
/// Returns the executable's path.
pub fn install(
    data: &Path,
    app: &str,
    version: &str,
    downloaded: &Path,
    keep: &BTreeSet<String>,
    plan: &InstallPlan,
) -> Result<PathBuf, InstallError> {
    let app_dir = layout::app_dir(data, app);
    fs::create_dir_all(&app_dir).map_err(err(format!("cannot create {}", app_dir.display())))?;
    let staging = app_dir.join(format!(".{version}.staging"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(err("cannot clear staging directory"))?;
    }
    fs::create_dir(&staging).map_err(err("cannot create staging directory"))?;
    let filled = match &plan.kind {
        ArtifactType::Binary => stage_binary(app, downloaded, &staging),
        ArtifactType::Archive => stage_archive(app, downloaded, &staging, plan).and_then(|()| {
            if let Some(pre) = plan.pre_start_script.as_deref() {
                script::resolve(&staging, pre, "pre-start script")?;
            }
            let Some(script) = plan.install_script.as_deref() else {
                return Ok(());
            };
            script::run(&script::ScriptRun {
                script,
                dir: &staging,
                final_dir: &layout::version_dir(data, app, version),
                app,
                version,
                env: &plan.env,
                timeout: plan.script_timeout,
            })
        }),
        ArtifactType::Deb => {
            crate::install::deb::stage_deb(app, downloaded, &staging, plan.entrypoint.as_deref())
        }
        ArtifactType::OciImage => {
            crate::install::oci::stage_oci(app, version, downloaded, &staging, &plan.runtime)
        }
        ArtifactType::Rpm | ArtifactType::Apk => match PackageTool::for_kind(&plan.kind) {
            Some(tool) => crate::install::pkg::stage_package(
                tool,
                app,
                downloaded,
                &staging,
                plan.entrypoint.as_deref(),
                std::env::var_os("PATH").as_deref(),
            ),
            None => Err(InstallError::Unsupported(plan.kind.to_string())),
        },
        ArtifactType::Nixpack => {
            crate::install::nix_store::stage_nix(&crate::install::nix_store::NixInstall {
                data,
                app,
                version,
                keep,
                downloaded,
                staging: &staging,
                entrypoint: plan.entrypoint.as_deref(),
                path: std::env::var_os("PATH").as_deref(),
            })
        }
        other => Err(InstallError::Unsupported(other.to_string())),
    };
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&staging);
        let _ = fs::remove_file(downloaded);
        return Err(e);
    }
    sync_dir(&staging)?;
    let target = layout::version_dir(data, app, version);
    if target.exists() {
        fs::remove_dir_all(&target).map_err(err(format!("cannot replace {}", target.display())))?;
    }
    fs::rename(&staging, &target)
        .map_err(err(format!("cannot rename into {}", target.display())))?;
    sync_dir(&app_dir)?;
    if let Some(downloads) = downloaded.parent() {
        let _ = fs::remove_file(downloaded);
        let _ = sync_dir(downloads);
    }
    prune(&app_dir, version, keep);
    Ok(layout::executable(data, app, version))
}

/// A binary: the download itself becomes `<staging>/<app>`, executable.
fn stage_binary(app: &str, downloaded: &Path, staging: &Path) -> Result<(), InstallError> {
    let staged_exe = staging.join(app);
    fs::rename(downloaded, &staged_exe).map_err(err(format!(
        "cannot move {} into place",
        downloaded.display()
    )))?;
    fs::set_permissions(&staged_exe, fs::Permissions::from_mode(0o755))
        .map_err(err("cannot make the binary executable"))?;
    File::open(&staged_exe)
        .and_then(|f| f.sync_all())
        .map_err(err("cannot sync the binary"))
}

/// An archive: unpacked into the staging directory, then `<app>` made to start the entry point.
fn stage_archive(
    app: &str,
    downloaded: &Path,
    staging: &Path,
    plan: &InstallPlan,
) -> Result<(), InstallError> {
    archive::extract(downloaded, staging, &plan.limits)?;
    let entry = plan.entrypoint.as_deref().unwrap_or(app);
    let rel = archive::safe_relative(entry)
        .map_err(|e| InstallError::Entrypoint(format!("entry point {entry:?}: {e}")))?
        .ok_or_else(|| InstallError::Entrypoint("entry point is empty".into()))?;
    // The entry point must be a regular file inside the version, reached by links that stay
    // inside; its mode is changed on the open descriptor, and the launcher links to its
    // physical path, so neither the chmod nor the exec can follow a link out.
    let (fd, physical) =
        confine::open_file(staging, &rel, nix::fcntl::OFlag::O_RDONLY).map_err(|e| match e {
            confine::ConfineError::Missing(_) => {
                InstallError::Entrypoint(format!("entry point {entry:?} is not in the archive"))
            }
            e => InstallError::Entrypoint(format!("entry point {entry:?}: {e}")),
        })?;
    let file = File::from(fd);
    let mode = file
        .metadata()
        .map_err(err("cannot read the entry point's mode"))?
        .permissions()
        .mode();
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777 | 0o500))
        .map_err(err("cannot make the entry point executable"))?;
    let launcher = staging.join(app);
    if rel != Path::new(app) {
        if fs::symlink_metadata(&launcher).is_ok() {
            return Err(InstallError::Entrypoint(format!(
                "the archive has its own {app:?} at the top, which is not the entry point {entry:?}"
            )));
        }
        std::os::unix::fs::symlink(&physical, &launcher)
            .map_err(err("cannot link the entry point"))?;
    }
    Ok(())
}

/// Deletes version directories (and stale staging directories) other than `version` and `keep`,
/// with the container images only they used.
fn prune(app_dir: &Path, version: &str, keep: &BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(app_dir) else {
        return;
    };
    let kept_images: BTreeSet<String> = std::iter::once(version)
        .chain(keep.iter().map(String::as_str))
        .filter_map(|v| Installed::read(&app_dir.join(v)))
        .map(|i| i.image)
        .collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == version || keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        if let Some(image) = Installed::read(&path).filter(|i| !kept_images.contains(&i.image)) {
            container::remove_image(&image);
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed old version"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove old version")
            }
        }
    }
}

/// Deletes everything the agent keeps for an app that is no longer desired (with its
/// containers and images).
pub fn remove_app(data: &Path, app: &str) -> std::io::Result<()> {
    let dir = layout::app_dir(data, app);
    let images: Vec<Installed> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Installed::read(&e.path()))
        .collect();
    if let Some(first) = images.first() {
        container::remove_containers(first.engine, app);
    }
    for image in &images {
        container::remove_image(image);
    }
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_atomically_and_keeps_current_and_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        for (v, keep) in [
            ("1.0.0", vec![]),
            ("2.0.0", vec!["1.0.0"]),
            ("3.0.0", vec!["2.0.0"]),
        ] {
            let dl = layout::partial(data, "web", v);
            fs::create_dir_all(dl.parent().expect("parent")).expect("mkdir");
            fs::write(&dl, v.as_bytes()).expect("write");
            let keep = keep.into_iter().map(String::from).collect();
            let exe =
                install(data, "web", v, &dl, &keep, &InstallPlan::binary()).expect("installs");
            assert_eq!(exe, layout::executable(data, "web", v));
            let mode = fs::metadata(&exe).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
            assert!(!dl.exists());
        }
        let mut left: Vec<String> = fs::read_dir(layout::app_dir(data, "web"))
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["2.0.0", "3.0.0"]);
        remove_app(data, "web").expect("removes");
        assert!(!layout::app_dir(data, "web").exists());
        remove_app(data, "web").expect("idempotent");
    }
}

#[cfg(test)]
mod links_tests;
