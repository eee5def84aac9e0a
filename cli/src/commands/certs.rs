//! `fleetctl certs dev --out DIR [--host NAME]... [--force]`: writes a development CA and
//! certificates ([`crate::dev_certs`]) and prints the flags that use them. Private keys are
//! written mode 0600, certificates 0644; existing files are kept unless `--force`.

use super::print_json;
use crate::dev_certs::{self, DevCerts, CA_DAYS, LEAF_DAYS};
use crate::table::Table;
use crate::{Global, Output};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Subcommands of `certs`.
#[derive(Subcommand, Debug)]
pub enum CertsCmd {
    /// Make a development CA, a server certificate and a client certificate.
    ///
    /// Writes into --out: ca.pem and ca.key (a CA valid 10 years), server.pem and server.key
    /// (for localhost, 127.0.0.1, ::1 and every --host; server and client auth), client.pem and
    /// client.key (client auth); leaf certificates are valid 825 days. Keys are mode 0600,
    /// certificates 0644. Table output: FILE/WHAT rows, then the flags that use the files.
    /// --output json prints {"dir", "files": {"ca_cert", "ca_key", "server_cert",
    /// "server_key", "client_cert", "client_key"}, "server_names": [...]}.
    Dev(DevArgs),
}

/// Arguments of `certs dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// The directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Another name of the server, DNS name or IP address (repeatable); localhost, 127.0.0.1
    /// and ::1 are always included.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Runs a `certs` subcommand.
pub fn run(g: &Global, cmd: &CertsCmd) -> Result<()> {
    let CertsCmd::Dev(args) = cmd;
    dev(g, args)
}

/// One file `certs dev` writes.
struct OutFile<'a> {
    name: &'static str,
    key: &'static str,
    what: String,
    content: &'a str,
    private: bool,
}

/// The names of the files, in the order [`files`] lists them.
const FILE_NAMES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

fn files(c: &DevCerts) -> Vec<OutFile<'_>> {
    vec![
        OutFile {
            name: "ca.pem",
            key: "ca_cert",
            what: format!("CA certificate (valid {} years): trust it", CA_DAYS / 365),
            content: &c.ca.cert,
            private: false,
        },
        OutFile {
            name: "ca.key",
            key: "ca_key",
            what: "CA private key: keep it secret, or delete it".into(),
            content: &c.ca.key,
            private: true,
        },
        OutFile {
            name: "server.pem",
            key: "server_cert",
            what: format!(
                "server certificate for {} ({LEAF_DAYS} days)",
                c.server_names.join(", ")
            ),
            content: &c.server.cert,
            private: false,
        },
        OutFile {
            name: "server.key",
            key: "server_key",
            what: "server private key".into(),
            content: &c.server.key,
            private: true,
        },
        OutFile {
            name: "client.pem",
            key: "client_cert",
            what: format!("client certificate ({LEAF_DAYS} days)"),
            content: &c.client.cert,
            private: false,
        },
        OutFile {
            name: "client.key",
            key: "client_key",
            what: "client private key".into(),
            content: &c.client.key,
            private: true,
        },
    ]
}

fn dev(g: &Global, args: &DevArgs) -> Result<()> {
    // Check the names before creating anything.
    dev_certs::server_names(&args.hosts)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    if !args.force {
        let existing: Vec<String> = FILE_NAMES
            .iter()
            .map(|name| args.out.join(name))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "not overwriting existing files {} (give --force to replace them)",
                existing.join(", ")
            );
        }
    }
    let certs = dev_certs::generate(&args.hosts, time::OffsetDateTime::now_utc())?;
    let files = files(&certs);
    for f in &files {
        write_file(&args.out.join(f.name), f.content, f.private)?;
    }
    match g.output {
        Output::Json => {
            let paths: serde_json::Map<String, serde_json::Value> = files
                .iter()
                .map(|f| {
                    (
                        f.key.to_string(),
                        args.out.join(f.name).display().to_string().into(),
                    )
                })
                .collect();
            print_json(&serde_json::json!({
                "dir": args.out,
                "files": paths,
                "server_names": certs.server_names,
            }))
        }
        Output::Table => {
            print!("{}", summary(&args.out, &files));
            Ok(())
        }
    }
}

/// The table of files, then the flags that use them.
fn summary(dir: &Path, files: &[OutFile<'_>]) -> String {
    let mut t = Table::new(&["FILE", "WHAT"]);
    for f in files {
        t.row(vec![dir.join(f.name).display().to_string(), f.what.clone()]);
    }
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        "{}\nUse them with:\n  \
         fleetd --tls-cert {} --tls-key {}\n  \
         fleet-agent --ca {}\n  \
         fleetctl --ca {}   (or FLEET_CA={})\n\
         Client certificates (when fleetd runs with --mqtt-client-ca {}):\n  \
         fleet-agent --client-cert {} --client-key {}\n",
        t.render(),
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
        p("ca.pem"),
        p("ca.pem"),
        p("ca.pem"),
        p("client.pem"),
        p("client.key"),
    )
}

/// Writes `content` to `path` with mode 0600 (`private`) or 0644; an existing file (allowed
/// by --force) is removed first, so a key never sits in a file with a wider mode.
fn write_file(path: &Path, content: &str, private: bool) -> Result<()> {
    let mode = if private { 0o600 } else { 0o644 };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The umask may have narrowed the mode; certificates are meant to be readable.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Output;
    use clap::Parser;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("fleetctl-{name}-{}", std::process::id()))
    }

    fn global() -> Global {
        Global {
            server: "http://127.0.0.1:1".into(),
            token: None,
            ca: None,
            output: Output::Json,
        }
    }

    fn args(out: &Path, force: bool) -> DevArgs {
        DevArgs {
            out: out.to_path_buf(),
            hosts: vec!["fleet.lab".into()],
            force,
        }
    }

    #[test]
    fn arguments_parse() {
        let cli = crate::Cli::try_parse_from([
            "fleetctl", "certs", "dev", "--out", "c", "--host", "a", "--host", "10.0.0.1",
        ])
        .expect("parses");
        match cli.command {
            crate::Command::Certs(CertsCmd::Dev(a)) => {
                assert_eq!(a.out, PathBuf::from("c"));
                assert_eq!(a.hosts, ["a", "10.0.0.1"]);
                assert!(!a.force);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(crate::Cli::try_parse_from(["fleetctl", "certs", "dev"]).is_err());
    }

    #[test]
    fn files_get_their_modes_and_are_not_overwritten() {
        let dir = temp("certs-dev");
        dev(&global(), &args(&dir, false)).expect("written");
        for (name, mode) in [
            ("ca.pem", 0o644),
            ("ca.key", 0o600),
            ("server.pem", 0o644),
            ("server.key", 0o600),
            ("client.pem", 0o644),
            ("client.key", 0o600),
        ] {
            let m = std::fs::metadata(dir.join(name))
                .expect(name)
                .permissions()
                .mode();
            assert_eq!(m & 0o777, mode, "{name}");
        }
        let before = std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
        let e = dev(&global(), &args(&dir, false)).expect_err("files exist");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("ca.pem")).expect("ca"),
            before,
            "kept"
        );
        dev(&global(), &args(&dir, true)).expect("replaced");
        assert_ne!(
            std::fs::read_to_string(dir.join("ca.pem")).expect("ca"),
            before
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn the_summary_names_the_flags() {
        let c = dev_certs::generate(&[], time::OffsetDateTime::now_utc()).expect("generated");
        let listed: Vec<&str> = files(&c).iter().map(|f| f.name).collect();
        assert_eq!(listed, FILE_NAMES);
        let text = summary(Path::new("certs"), &files(&c));
        for want in [
            "certs/ca.key      CA private key",
            "fleetd --tls-cert certs/server.pem --tls-key certs/server.key",
            "fleet-agent --ca certs/ca.pem",
            "fleetctl --ca certs/ca.pem",
            "FLEET_CA=certs/ca.pem",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
    }
}
