//! How one start of a container version is put together: the `run` arguments (environment by
//! name, loopback port publishing, memory and CPU limits, labels) and the app's configuration
//! files, which the agent writes under the version directory (`container-files/<path>`,
//! atomically, with their modes, before every start) and bind-mounts read-only at the paths
//! the manifest names, so they reach the container and never touch the host's own `/etc`.

use crate::runtime::container::{Engine, Installed};
use crate::runtime::files::{self, FileError};
use fleet_schema::AppSpec;
use std::path::{Component, Path, PathBuf};

/// Directory in a version directory holding the host copies of its containers' files.
pub const CONFIG_DIR: &str = "container-files";

/// One configuration file bind-mounted (read-only) into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The file on the host, under the version directory.
    pub host: PathBuf,
    /// Where the container sees it (absolute).
    pub container: String,
}

/// Where each of the spec's files goes: inside the container, an absolute path as given and a
/// relative one under `runtime.workdir` (`/` without one); on the host, the same path under
/// `<vdir>/container-files/`. Paths with `..`, `:` or `,` are refused (they would escape the
/// directory or break the engine's `-v` syntax).
pub fn config_mounts(vdir: &Path, spec: &AppSpec) -> Result<Vec<Mount>, FileError> {
    let base = spec
        .runtime
        .workdir
        .as_deref()
        .filter(|w| w.starts_with('/'))
        .unwrap_or("/");
    let mut out = Vec::new();
    for f in &spec.files {
        let inside = files::resolve(Path::new(base), &f.path)?;
        let mut clean = PathBuf::from("/");
        for c in inside.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::RootDir | Component::CurDir => {}
                _ => return Err(FileError::Escapes(f.path.clone())),
            }
        }
        let container = clean.to_string_lossy().into_owned();
        let host = vdir
            .join(CONFIG_DIR)
            .join(clean.strip_prefix("/").unwrap_or(&clean));
        let bad = |p: &str| p.contains([':', ',']) || p == "/";
        if bad(&container) || host.to_string_lossy().contains([':', ',']) {
            return Err(FileError::Io {
                path: host,
                source: std::io::Error::other(format!(
                    "config file path {:?} cannot be mounted into a container (no ':' or ',', not /)",
                    f.path
                )),
            });
        }
        out.push(Mount { host, container });
    }
    Ok(out)
}

/// Writes the spec's files to their host copies (atomically, with their modes) and returns
/// the mounts to pass to [`launcher_args`].
pub fn write_config_files(vdir: &Path, spec: &AppSpec) -> Result<Vec<Mount>, FileError> {
    let mounts = config_mounts(vdir, spec)?;
    for (m, f) in mounts.iter().zip(&spec.files) {
        let (bytes, mode) = (f.content.as_bytes(), f.mode.unwrap_or(files::DEFAULT_MODE));
        // Under the version directory: walked by descriptor, no link followed out of it.
        match m.host.strip_prefix(vdir) {
            Ok(rel) => files::write_confined(vdir, rel, bytes, mode)?,
            Err(_) => files::write_atomic(&m.host, bytes, mode)?,
        }
    }
    Ok(mounts)
}

/// The variable carrying the agent's app-counters URL.
pub const METRICS_ENV: &str = "FLEET_METRICS_URL";

/// The app-counters URL as a bridged container must use it, and the `run` options that make it
/// resolve. The agent's endpoint listens where `--metrics-listen` says: on a wildcard address
/// (`0.0.0.0`, `[::]`) the container reaches it through the engine's name for the host
/// (`host.docker.internal`, mapped with `--add-host ...:host-gateway`; Podman's own
/// `host.containers.internal`); on a specific non-loopback address it is used as is; on
/// loopback (the default) it stays unreachable from a bridged container, as documented.
pub fn metrics_route(engine: Engine, url: &str) -> (String, Vec<String>) {
    let Some(rest) = url.strip_prefix("http://") else {
        return (url.to_string(), Vec::new());
    };
    let Some(tail) = rest
        .strip_prefix("0.0.0.0:")
        .or_else(|| rest.strip_prefix("[::]:"))
    else {
        return (url.to_string(), Vec::new());
    };
    match engine {
        Engine::Docker => (
            format!("http://host.docker.internal:{tail}"),
            vec![
                "--add-host".to_string(),
                "host.docker.internal:host-gateway".to_string(),
            ],
        ),
        Engine::Podman => (
            format!("http://host.containers.internal:{tail}"),
            Vec::new(),
        ),
    }
}

/// The launcher script's arguments for one start: the stop grace in whole seconds, then the
/// `run` options (environment by name, ports on loopback, limits, labels), the image and the
/// app's arguments. `env_names` are the variables the launcher's own environment carries;
/// `mounts` are the configuration files (see [`write_config_files`]); `options` are further
/// `run` options (see [`metrics_route`]).
pub fn launcher_args(
    installed: &Installed,
    app: &str,
    version: &str,
    spec: &AppSpec,
    env_names: &[String],
    mounts: &[Mount],
    options: &[String],
) -> Vec<String> {
    let rt = &spec.runtime;
    let grace_ms = if rt.stop_grace_ms == 0 {
        crate::supervisor::STOP_GRACE.as_millis() as u64
    } else {
        rt.stop_grace_ms
    };
    // The container must be stopped before the supervisor's SIGKILL ends the launcher.
    let mut out = vec![(grace_ms.saturating_sub(1000) / 1000).to_string()];
    out.extend([
        "--label".to_string(),
        format!("fleet.app={app}"),
        "--label".to_string(),
        format!("fleet.version={version}"),
    ]);
    for name in env_names {
        out.extend(["-e".to_string(), name.clone()]);
    }
    out.extend(options.iter().cloned());
    for m in mounts {
        out.extend([
            "-v".to_string(),
            format!("{}:{}:ro", m.host.display(), m.container),
        ]);
    }
    for port in &rt.ports {
        out.extend(["-p".to_string(), format!("127.0.0.1:{port}:{port}")]);
    }
    let r = &spec.resources;
    if let Some(mem) = r.memory_limit {
        out.extend([
            "--memory".to_string(),
            mem.to_string(),
            "--memory-swap".to_string(),
            mem.to_string(),
        ]);
    }
    if let Some(milli) = r.cpu_limit_millis {
        out.extend([
            "--cpus".to_string(),
            format!("{}.{:03}", milli / 1000, milli % 1000),
        ]);
    }
    if let Some(n) = r.open_files {
        out.extend(["--ulimit".to_string(), format!("nofile={n}:{n}")]);
    }
    if let Some(w) = &rt.workdir {
        out.extend(["-w".to_string(), w.clone()]);
    }
    if let Some(e) = &rt.entrypoint {
        out.extend(["--entrypoint".to_string(), e.clone()]);
    }
    out.push(installed.image.clone());
    out.extend(rt.args.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schema::app_spec::ConfigFile;

    #[test]
    fn run_arguments_carry_env_ports_and_limits() {
        let mut spec = AppSpec::default();
        spec.runtime.ports = vec![8080];
        spec.runtime.args = vec!["-f".into()];
        spec.runtime.stop_grace_ms = 10_000;
        spec.resources.memory_limit = Some(64 << 20);
        spec.resources.cpu_limit_millis = Some(500);
        let inst = Installed {
            engine: Engine::Docker,
            image: "sha256:abc".into(),
        };
        let args = launcher_args(&inst, "web", "1.0.0", &spec, &["GREETING".into()], &[], &[]);
        let joined = args.join(" ");
        assert_eq!(args[0], "9");
        for needle in [
            "-e GREETING",
            "-p 127.0.0.1:8080:8080",
            "--memory 67108864 --memory-swap 67108864",
            "--cpus 0.500",
            "--label fleet.app=web",
            "sha256:abc -f",
        ] {
            assert!(joined.contains(needle), "{needle} in {joined}");
        }
        assert!(joined.ends_with("sha256:abc -f"), "{joined}");
        // A grace of one second or less stops the container at once.
        spec.runtime.stop_grace_ms = 800;
        assert_eq!(
            launcher_args(&inst, "web", "1", &spec, &[], &[], &[])[0],
            "0"
        );
    }

    #[test]
    fn containers_reach_a_wildcard_metrics_endpoint_through_the_host_alias() {
        let (url, opts) = metrics_route(Engine::Docker, "http://0.0.0.0:9100/v1/metrics/web");
        assert_eq!(url, "http://host.docker.internal:9100/v1/metrics/web");
        assert_eq!(opts, ["--add-host", "host.docker.internal:host-gateway"]);
        let (url, opts) = metrics_route(Engine::Podman, "http://[::]:9100/v1/metrics/web");
        assert_eq!(url, "http://host.containers.internal:9100/v1/metrics/web");
        assert!(opts.is_empty());
        for kept in [
            "http://127.0.0.1:9100/v1/metrics/web",
            "http://172.17.0.1:9100/v1/metrics/web",
        ] {
            assert_eq!(
                metrics_route(Engine::Docker, kept),
                (kept.to_string(), vec![])
            );
        }
    }

    #[test]
    fn config_files_are_written_under_the_version_and_mounted_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = AppSpec::default();
        spec.runtime.workdir = Some("/srv".into());
        spec.files = vec![
            ConfigFile {
                path: "/etc/app/config.yaml".into(),
                content: "threshold: 0.7\n".into(),
                mode: Some(0o600),
                secret: false,
            },
            ConfigFile {
                path: "conf/local.toml".into(),
                content: "x = 1\n".into(),
                mode: None,
                secret: false,
            },
        ];
        let mounts = write_config_files(dir.path(), &spec).expect("writes");
        let host = dir.path().join("container-files/etc/app/config.yaml");
        assert_eq!(
            mounts[0],
            Mount {
                host: host.clone(),
                container: "/etc/app/config.yaml".into()
            }
        );
        assert_eq!(mounts[1].container, "/srv/conf/local.toml");
        assert_eq!(
            std::fs::read_to_string(&host).expect("written"),
            "threshold: 0.7\n"
        );
        let inst = Installed {
            engine: Engine::Docker,
            image: "sha256:abc".into(),
        };
        let joined = launcher_args(&inst, "web", "1", &spec, &[], &mounts, &[]).join(" ");
        assert!(
            joined.contains(&format!("-v {}:/etc/app/config.yaml:ro", host.display())),
            "{joined}"
        );
        for bad in ["/etc/../../x", "../x", "/a:b", "/"] {
            spec.files[0].path = bad.into();
            assert!(config_mounts(dir.path(), &spec).is_err(), "{bad}");
        }
    }
}
