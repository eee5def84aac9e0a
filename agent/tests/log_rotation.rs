//! Issue 10, log rotation: an app writing 1.1 MB/s grew its log file to 33 MB against the
//! 1 MiB limit, because rotation waited for the agent's tailer to catch up. Here a real agent
//! (limit 64 KiB) runs a real app that writes as fast as a shell loop can, far faster than
//! the tailer ships lines; the agent must rotate anyway, announce the lines it never read in
//! the app's stream, and keep the live file near the limit.

mod support;

use fleet_schema::{AppSpec, LogBatch, LogLevel};
use std::time::Duration;
use support::{broker, AgentProc, Observer, TestApp};

const LIMIT: u64 = 64 * 1024;

#[test]
fn a_fast_writer_is_rotated_at_the_limit_and_missed_lines_are_announced() {
    let Some(broker) = broker() else {
        return;
    };
    let dev = "rt-gush";
    let logs = format!("fleet/{dev}/logs");
    let obs = Observer::start(broker.port, std::slice::from_ref(&logs));
    let script = r#"i=0
while true; do
  i=$((i+1))
  echo "gush line $i, padded to look like a real log line of a busy service ......"
done"#;
    let agent = AgentProc::start(
        dev,
        broker.port,
        &[TestApp {
            name: "gush",
            script: script.into(),
            spec: AppSpec::default(),
        }],
        &["--log-file-max-bytes", &LIMIT.to_string()],
    );
    // `dropped` rides on the first batch of a flush, the marker may come in a later one.
    let mut dropped_total = 0;
    let marker = obs.wait_for(
        &logs,
        Duration::from_secs(30),
        "a 'lines dropped' marker for the rotated log",
        |b: &LogBatch| {
            dropped_total += b.dropped;
            b.entries
                .iter()
                .find(|e| e.app == "gush" && e.message.contains("lines dropped"))
                .map(|e| (e.clone(), dropped_total))
        },
    );
    let (entry, dropped) = marker;
    assert_eq!(entry.stream, "stdout");
    assert_eq!(entry.level, LogLevel::Warn);
    assert!(dropped > 0, "the missed lines are counted in the batch");
    let out = fleet_agent::layout::log_file(&agent.data(), "gush");
    let mut rotated = out.clone().into_os_string();
    rotated.push(".1");
    assert!(
        std::path::Path::new(&rotated).is_file(),
        "rotated to <file>.1"
    );
    // The file is rotated every poll (250 ms): it holds at most the limit plus what the app
    // wrote since the last rotation; the unbounded growth of the issue was tens of MB.
    let len = std::fs::metadata(&out).expect("live log").len();
    assert!(
        len < LIMIT + (4 << 20),
        "the live log holds {len} bytes against a {LIMIT}-byte limit\n{}",
        agent.log()
    );
    assert!(
        agent.log().contains("limit reached") && agent.log().contains("log_file_bytes"),
        "the agent logs the limit:\n{}",
        agent.log()
    );
}
