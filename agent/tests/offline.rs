//! Offline operation: a TCP proxy the test controls sits between the agent and the broker. The
//! test cuts the link for a while; the agent keeps supervising, keeps metrics and logs in its
//! on-disk backlog, and on reconnect sends its status first and then the backlog, so no metrics
//! sample and no log line of the outage is lost and the agent's memory stays bounded.

mod support;

use fleet_schema::{AppSpec, DeviceStatus, LogBatch, MetricsBatch};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{broker, wait_until, AgentProc, Observer, TestApp};

/// Messages in the backlog that end the outage: about four seconds of metrics and logs.
const OUTAGE_MESSAGES: usize = 24;

/// A TCP proxy to `upstream` that the test can cut and restore.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut list = conns2.lock().expect("lock");
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        list.push(c);
                    }
                }
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, up, conns }
    }

    /// Breaks every connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.conns.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn outage_is_bridged_by_the_disk_backlog_with_status_first_and_bounded_memory() {
    let Some(broker) = broker() else {
        return;
    };
    let broker_port = broker.port;
    let proxy = Proxy::start(broker_port);
    let dev = "off-1";
    let topics = ["status", "metrics", "logs"].map(|k| format!("fleet/{dev}/{k}"));
    let obs = Observer::start(broker_port, &topics);
    let agent = AgentProc::start(
        dev,
        proxy.port,
        &[TestApp {
            name: "ticker",
            script: "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.1; done".into(),
            spec: AppSpec::default(),
        }],
        &[
            "--metrics-interval-ms",
            "200",
            "--spool-max-messages",
            "1000",
        ],
    );
    // Before the cut, live metrics and log lines arrive: the lines read before the cut start
    // the no-line-lost check below, so the cut waits for at least one.
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.metric_ts.is_empty() || seen.lines.is_empty() {
        assert!(
            Instant::now() < deadline,
            "live metrics ({}) and log lines ({}) before the cut",
            seen.metric_ts.len(),
            seen.lines.len()
        );
        if let Some((topic, payload)) = obs.next(Duration::from_millis(200)) {
            seen.take(&topics, &topic, &payload, u64::MAX);
        }
    }
    let rss_before = rss_kib(agent.pid());

    proxy.cut();
    let cut_at = support_now_ms();
    let spool = agent.data().join("spool");
    let spooled = || std::fs::read_dir(&spool).map_or(0, Iterator::count);
    // The outage lasts until the backlog on disk holds about four seconds of metrics (5/s)
    // and logs (1/s): the agent noticed the cut and keeps what it cannot send.
    assert!(
        wait_until(Duration::from_secs(30), || spooled() >= OUTAGE_MESSAGES),
        "metrics and logs kept on disk while offline: {}",
        spooled()
    );
    proxy.restore();
    let restored_at = support_now_ms();

    // Everything after the restore, in arrival order, until the backlog is drained and live
    // metrics from well after the restore arrived (or a deadline passes: the asserts below
    // then say what is missing).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let live_again = |t: &u64| *t > restored_at + 2000;
        if spooled() == 0
            && seen.metric_ts.iter().any(live_again)
            && seen.lines.iter().any(|(_, t)| live_again(t))
        {
            break;
        }
        let got = obs.next(Duration::from_millis(200));
        let Some((topic, payload)) = got else {
            continue;
        };
        seen.take(&topics, &topic, &payload, cut_at);
    }
    let Seen {
        first_after_cut,
        mut metric_ts,
        mut lines,
    } = seen;
    assert_eq!(
        first_after_cut.as_deref(),
        Some(topics[0].as_str()),
        "status goes out before the backlog"
    );
    // Metrics: no hole longer than a few intervals around the outage.
    metric_ts.sort_unstable();
    let outage: Vec<u64> = metric_ts
        .iter()
        .copied()
        .filter(|t| *t > cut_at && *t < restored_at)
        .collect();
    assert!(
        outage.len() >= 15,
        "samples of the outage arrived: {}",
        outage.len()
    );
    let max_gap = metric_ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(max_gap < 1000, "no metrics hole: largest gap {max_gap} ms");
    // Logs: lines read before the cut and after the restore arrived, and every line number
    // between them, so every line of the outage.
    lines.sort_unstable();
    lines.dedup();
    let ((lo, lo_at), (hi, hi_at)) = (lines[0], lines[lines.len() - 1]);
    assert!(
        lo_at < cut_at && hi_at > restored_at,
        "lines from before the cut to after the restore: line {lo} at {lo_at}, line {hi} at \
         {hi_at}, outage {cut_at}..{restored_at}"
    );
    assert_eq!(lines.len() as u64, hi - lo + 1, "no log line lost");
    let rss_after = rss_kib(agent.pid());
    assert!(
        rss_after < 64 * 1024 && rss_after < rss_before + 16 * 1024,
        "memory stays bounded: {rss_before} KiB before, {rss_after} KiB after"
    );
    let left = std::fs::read_dir(agent.data().join("spool"))
        .expect("backlog dir")
        .count();
    assert_eq!(left, 0, "backlog drained");
}

/// What the observer received from the agent: the first topic published after the cut,
/// metrics timestamps, and log lines as (line number, timestamp).
#[derive(Default)]
struct Seen {
    first_after_cut: Option<String>,
    metric_ts: Vec<u64>,
    lines: Vec<(u64, u64)>,
}

impl Seen {
    /// Records one message of `topics` (status, metrics, logs); `cut_at` is when the link was
    /// cut (`u64::MAX` before).
    fn take(&mut self, topics: &[String; 3], topic: &str, payload: &[u8], cut_at: u64) {
        let payload = support::body_of(payload).expect("sealed by the agent");
        if topic == topics[0] {
            let st: DeviceStatus = fleet_schema::decode(&payload, 1 << 20).expect("status");
            if st.online && self.first_after_cut.is_none() && st.reported_at > cut_at {
                self.first_after_cut = Some(topic.to_string());
            }
        } else if topic == topics[1] {
            let m: MetricsBatch = fleet_schema::decode(&payload, 1 << 20).expect("metrics");
            if m.timestamp > cut_at && self.first_after_cut.is_none() {
                self.first_after_cut = Some(topic.to_string());
            }
            self.metric_ts.push(m.timestamp);
        } else if topic == topics[2] {
            let b: LogBatch = fleet_schema::decode(&payload, 1 << 20).expect("logs");
            self.lines.extend(b.entries.into_iter().filter_map(|e| {
                let n = e.message.strip_prefix("line ")?.parse::<u64>().ok()?;
                Some((n, e.timestamp))
            }));
        }
    }
}

fn support_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
