//! `fleetctl broker config mosquitto [--dir DIR] [--out OUTDIR]`: the files that make an
//! external Mosquitto enforce FleetD's identities and topic rules
//! (`GET /api/v1/broker/mosquitto`, admin).

use super::print_json;
use crate::api::{query, ApiClient};
use crate::{Global, Output};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fleet_schema::trust::tokens::MosquittoConfig;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Subcommands of `broker`.
#[derive(Subcommand, Debug)]
pub enum BrokerCmd {
    /// Broker configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
}

/// Subcommands of `broker config`.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Mosquitto's password file, ACL file and configuration lines for the current devices and
    /// tokens.
    ///
    /// Without --out, prints the three parts, each after a header line `# ==> NAME <==`
    /// (fleet.passwd, fleet.acl, mosquitto-fleet.conf). With --out, writes those three files
    /// there (mode 0644, replacing older ones) and prints their paths. --output json prints
    /// the API's answer ({"passwd", "acl", "conf"}) or, with --out, {"files": [...]}.
    Mosquitto(MosquittoArgs),
}

/// Arguments of `broker config mosquitto`.
#[derive(Args, Debug)]
pub struct MosquittoArgs {
    /// Where the files will be on the broker host, for the configuration lines (fleetd's
    /// default: /etc/mosquitto/fleet).
    #[arg(long)]
    pub dir: Option<String>,
    /// Write fleet.passwd, fleet.acl and mosquitto-fleet.conf into this directory.
    #[arg(long, value_name = "OUTDIR")]
    pub out: Option<PathBuf>,
}

/// The file names, in the order they are printed, with their content.
fn parts(c: &MosquittoConfig) -> [(&'static str, &str); 3] {
    [
        ("fleet.passwd", c.passwd.as_str()),
        ("fleet.acl", c.acl.as_str()),
        ("mosquitto-fleet.conf", c.conf.as_str()),
    ]
}

/// Runs a `broker` subcommand.
pub fn run(g: &Global, cmd: &BrokerCmd) -> Result<()> {
    let BrokerCmd::Config(ConfigCmd::Mosquitto(args)) = cmd;
    let q: Vec<(&str, String)> = args.dir.iter().map(|d| ("dir", d.clone())).collect();
    let config: MosquittoConfig =
        ApiClient::new(g)?.get(&format!("/api/v1/broker/mosquitto{}", query(&q)))?;
    match &args.out {
        None => match g.output {
            Output::Json => print_json(&config),
            Output::Table => {
                print!("{}", printed(&config));
                Ok(())
            }
        },
        Some(dir) => {
            let files = write(dir, &config)?;
            match g.output {
                Output::Json => print_json(&serde_json::json!({ "files": files })),
                Output::Table => {
                    for f in &files {
                        println!("wrote {}", f.display());
                    }
                    Ok(())
                }
            }
        }
    }
}

/// The three parts, each after a `# ==> NAME <==` header, separated by blank lines.
fn printed(c: &MosquittoConfig) -> String {
    let mut out = String::new();
    for (i, (name, text)) in parts(c).into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("# ==> {name} <==\n{text}"));
        if !text.is_empty() && !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Writes the three files into `dir` (created if missing), mode 0644, replacing older ones,
/// and returns their paths.
fn write(dir: &Path, c: &MosquittoConfig) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, text) in parts(c) {
        let path = dir.join(name);
        // Written aside and renamed, so a broker reloading meanwhile never reads half a file.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set the mode of {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config() -> MosquittoConfig {
        MosquittoConfig {
            passwd: "_fleetd:$7$x\n".into(),
            acl: "user _fleetd\ntopic readwrite fleet/#\n".into(),
            conf: "password_file /etc/mosquitto/fleet/fleet.passwd".into(),
        }
    }

    #[test]
    fn parts_are_printed_with_headers() {
        assert_eq!(
            printed(&config()),
            "# ==> fleet.passwd <==\n_fleetd:$7$x\n\n\
             # ==> fleet.acl <==\nuser _fleetd\ntopic readwrite fleet/#\n\n\
             # ==> mosquitto-fleet.conf <==\npassword_file /etc/mosquitto/fleet/fleet.passwd\n"
        );
    }

    #[test]
    fn files_are_written_0644() {
        let dir = std::env::temp_dir().join(format!("fleetctl-broker-{}", std::process::id()));
        let out = dir.join("out");
        let files = write(&out, &config()).expect("written");
        let names: Vec<_> = files
            .iter()
            .filter_map(|f| f.file_name()?.to_str().map(str::to_string))
            .collect();
        assert_eq!(names, ["fleet.passwd", "fleet.acl", "mosquitto-fleet.conf"]);
        for f in &files {
            let mode = std::fs::metadata(f).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "{}", f.display());
        }
        assert_eq!(
            std::fs::read_to_string(out.join("fleet.acl")).expect("readable"),
            config().acl
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn arguments_parse() {
        let cli = crate::Cli::try_parse_from([
            "fleetctl",
            "broker",
            "config",
            "mosquitto",
            "--dir",
            "/etc/m",
            "--out",
            "o",
        ])
        .expect("parses");
        match cli.command {
            crate::Command::Broker(BrokerCmd::Config(ConfigCmd::Mosquitto(a))) => {
                assert_eq!(a.dir.as_deref(), Some("/etc/m"));
                assert_eq!(a.out, Some(PathBuf::from("o")));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(crate::Cli::try_parse_from(["fleetctl", "broker", "config"]).is_err());
    }
}
