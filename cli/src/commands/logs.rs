//! `fleetctl logs DEVICE [--app A] [--since T] [--limit N] [-f]`: a device's app output from
//! fleetd's central log store (so it works while the device is offline) and, with `-f`, new
//! lines as they come, from `GET /api/v1/devices/{id}/logs` (newline-delimited JSON
//! `LogBatch`es). `--from-device` asks the online agent for its in-memory history instead;
//! fleetd signs that request and relays only batches it verified against the device's key, so
//! tools never talk to devices directly.

use super::print_json_line;
use crate::api::{encode, query, ApiClient, HttpFailure};
use crate::display;
use crate::{Global, Output};
use anyhow::{bail, Context, Result};
use clap::Args;
use fleet_schema::{LogBatch, LogEntry};

/// Arguments of `logs`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Output (table): one line per log line, `HH:MM:SS LEVEL APP: MESSAGE` (UTC). --output json: each \
LogEntry as a JSON line ({\"timestamp\", \"app\", \"stream\", \"level\", \"message\"}). When the \
agent dropped lines (rate limit, full buffer), `(N lines dropped ...)` goes to stderr (and the \
store keeps an `agent` line saying so).
Lines come from fleetd's store, kept per device within its size and age limits (8 MiB and 7 days \
by default), so an offline device's output is there too. With --from-device and without -f, \
fleetctl fails when the device does not answer within a few seconds (fleetd's 504).")]
pub struct LogsArgs {
    /// The device.
    #[arg(value_parser = crate::args::device_id)]
    pub device: String,
    /// Only this app's lines.
    #[arg(long)]
    pub app: Option<String>,
    /// How many of the newest lines to show (at most 10000; 1000 with --from-device).
    #[arg(long, visible_alias = "limit", default_value_t = 100)]
    pub lines: u32,
    /// Only lines from this time on: Unix milliseconds or a duration back from now (30s, 15m,
    /// 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Ask the online agent for its in-memory history instead of reading fleetd's store.
    #[arg(long)]
    pub from_device: bool,
    /// Keep printing new lines until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// The API path for these arguments.
fn path(args: &LogsArgs) -> String {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(app) = &args.app {
        q.push(("app", app.clone()));
    }
    if let Some(since) = &args.since {
        q.push(("since", since.clone()));
    }
    if args.from_device {
        q.push(("source", "agent".into()));
        q.push(("lines", args.lines.to_string()));
    } else {
        q.push(("limit", args.lines.to_string()));
    }
    if args.follow {
        q.push(("follow", "true".into()));
    }
    format!("/api/v1/devices/{}/logs{}", encode(&args.device), query(&q))
}

/// Runs `logs`.
pub fn logs(g: &Global, args: &LogsArgs) -> Result<()> {
    let api = ApiClient::new(g)?;
    let lines = match api.get_lines(&path(args)) {
        Ok(lines) => lines,
        Err(e)
            if e.downcast_ref::<HttpFailure>()
                .is_some_and(|f| f.status == 504) =>
        {
            bail!(
                "no answer from device {} (is its agent online?): {e}",
                args.device
            )
        }
        Err(e) => return Err(e),
    };
    for l in lines {
        let l = l?;
        if l.trim().is_empty() {
            continue;
        }
        let batch: LogBatch = serde_json::from_str(&l).with_context(|| {
            let start: String = l.chars().take(200).collect();
            format!("fleetd sent a log batch that is not LogBatch JSON: {start}")
        })?;
        print_batch(g.output, &batch)?;
    }
    if args.follow {
        bail!("fleetd closed the log stream of {}", args.device);
    }
    Ok(())
}

/// One printed line (table output).
pub fn line(e: &LogEntry) -> String {
    format!(
        "{} {:<5} {}: {}",
        display::clock(e.timestamp),
        e.level.as_str(),
        e.app,
        e.message
    )
}

fn print_batch(output: Output, batch: &LogBatch) -> Result<()> {
    for e in &batch.entries {
        match output {
            Output::Json => print_json_line(e)?,
            Output::Table => println!("{}", line(e)),
        }
    }
    if batch.dropped > 0 {
        eprintln!("{}", dropped_note(batch.dropped));
    }
    Ok(())
}

/// The stderr note for a batch with dropped lines.
fn dropped_note(n: u64) -> String {
    format!("({n} lines dropped by the agent's rate limit or a full buffer)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fleet_schema::LogLevel;

    fn parse(args: &[&str]) -> Result<LogsArgs, clap::Error> {
        let mut full = vec!["fleetctl", "logs"];
        full.extend_from_slice(args);
        match crate::Cli::try_parse_from(full)?.command {
            crate::Command::Logs(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn lines_show_level_app_and_message() {
        let e = LogEntry {
            timestamp: 0,
            app: "web".into(),
            stream: "output".into(),
            level: LogLevel::Warn,
            message: "slow request".into(),
        };
        assert_eq!(line(&e), "00:00:00 warn  web: slow request");
        assert_eq!(
            dropped_note(3),
            "(3 lines dropped by the agent's rate limit or a full buffer)"
        );
    }

    #[test]
    fn arguments_make_the_query() {
        let a = parse(&["rpi-1", "--app", "web ui", "--lines", "20", "-f"]).expect("parses");
        assert_eq!(
            path(&a),
            "/api/v1/devices/rpi-1/logs?app=web%20ui&limit=20&follow=true"
        );
        let a = parse(&["rpi-1"]).expect("parses");
        assert_eq!(path(&a), "/api/v1/devices/rpi-1/logs?limit=100");
        let a = parse(&["rpi-1", "--since", "15m", "--limit", "5"]).expect("parses");
        assert_eq!(path(&a), "/api/v1/devices/rpi-1/logs?since=15m&limit=5");
        let a = parse(&["rpi-1", "--from-device", "--lines", "7"]).expect("parses");
        assert_eq!(path(&a), "/api/v1/devices/rpi-1/logs?source=agent&lines=7");
        assert!(parse(&["../etc"]).is_err());
        assert!(parse(&[]).is_err());
    }
}
