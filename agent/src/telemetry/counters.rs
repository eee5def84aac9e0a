//! The local endpoint through which apps report their own counters (requests, errors, queue
//! depth...). It listens on 127.0.0.1 only and speaks just enough HTTP/1.1 for
//! `curl -X POST --data '{"requests":10,"errors":1}' $FLEET_METRICS_URL`. The latest value of
//! each counter is published in the app's `AppMetrics.custom_metrics`, where the rollout's
//! error-rate trigger reads it.
//!
//! Each app's URL carries a key only that app is given (`/v1/metrics/<app>/<key>`, the key an
//! HMAC of the app's name under a secret the agent keeps in `<data>/counters.secret`), so one
//! app cannot forge another's error rate to trigger or block a rollback. The key survives agent
//! restarts, so apps the agent adopts keep reporting.

use crate::limits::LimitHits;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request accepted (headers and body).
pub const MAX_REQUEST: usize = 16 * 1024;
/// Path prefix: `POST /v1/metrics/<app>`.
pub const PATH_PREFIX: &str = "/v1/metrics/";
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Bounds of the counters table (agent settings, see docs/limits.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterLimits {
    /// Most counters one app may hold; a new name beyond it is refused to that app alone.
    pub per_app: usize,
    /// Most apps with counters at once.
    pub apps: usize,
    /// A counter (and an app whose counters are all) not posted for this long is forgotten,
    /// so names an app stopped using (or a removed version's) free their slots.
    pub idle: Duration,
}

impl Default for CounterLimits {
    fn default() -> Self {
        Self {
            per_app: 64,
            apps: 64,
            idle: Duration::from_secs(600),
        }
    }
}

/// Why counters were refused (answered 429, naming the limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// The app already holds its maximum of counter names.
    #[error("app {app:?} already has {max} counters; {refused} new ones refused")]
    TooManyCounters {
        /// The app.
        app: String,
        /// The per-app limit.
        max: usize,
        /// New names not stored.
        refused: usize,
    },
    /// The table holds its maximum of apps, none idle.
    #[error("counters of {max} apps are held already; app {app:?} refused")]
    TooManyApps {
        /// The app.
        app: String,
        /// The limit.
        max: usize,
    },
}

#[derive(Debug, Default)]
struct Table {
    apps: BTreeMap<String, BTreeMap<String, (f64, Instant)>>,
}

/// Latest counters per app, shared between the endpoint and the metrics sampler, with the
/// secret the per-app keys derive from.
#[derive(Clone, Default)]
pub struct Counters {
    table: Arc<Mutex<Table>>,
    secret: Arc<[u8; 32]>,
    limits: CounterLimits,
    hits: Arc<LimitHits>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

impl Counters {
    /// Counters whose app keys derive from `secret`, with the default limits.
    pub fn with_secret(secret: [u8; 32]) -> Counters {
        Counters {
            secret: Arc::new(secret),
            ..Counters::default()
        }
    }

    /// The same table bounded by `limits`, counting hits in `hits`.
    pub fn bounded(mut self, limits: CounterLimits, hits: Arc<LimitHits>) -> Counters {
        self.limits = limits;
        self.hits = hits;
        self
    }

    /// The key of `app` (32 hex characters).
    pub fn key_for(&self, app: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.secret.as_ref());
        let tag = ring::hmac::sign(&key, app.as_bytes());
        hex::encode(&tag.as_ref()[..16])
    }

    /// The URL `app` posts its counters to, given the endpoint's base URL.
    pub fn url_for(&self, base: &str, app: &str) -> String {
        format!("{base}{app}/{}", self.key_for(app))
    }

    fn key_matches(&self, app: &str, key: &str) -> bool {
        let want = self.key_for(app);
        want.len() == key.len()
            && want
                .bytes()
                .zip(key.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Merges reported values into the app's counters: names the app already has are always
    /// updated; new names take free slots of that app only (its idle names are forgotten
    /// first), and a new app takes a free app slot (idle apps are forgotten first).
    pub fn merge(&self, app: &str, values: BTreeMap<String, f64>) -> Result<(), CounterError> {
        self.merge_at(app, values, Instant::now())
    }

    /// [`Counters::merge`] at a given instant (tests).
    pub fn merge_at(
        &self,
        app: &str,
        values: BTreeMap<String, f64>,
        now: Instant,
    ) -> Result<(), CounterError> {
        let l = self.limits;
        let result = {
            let mut t = self.table.lock().expect("counter lock is never poisoned");
            let fresh = |at: &Instant| now.saturating_duration_since(*at) < l.idle;
            if !t.apps.contains_key(app) && t.apps.len() >= l.apps {
                t.apps.retain(|_, c| c.values().any(|(_, at)| fresh(at)));
            }
            if !t.apps.contains_key(app) && t.apps.len() >= l.apps {
                Err(CounterError::TooManyApps {
                    app: app.to_string(),
                    max: l.apps,
                })
            } else {
                let mine = t.apps.entry(app.to_string()).or_default();
                if values.keys().any(|k| !mine.contains_key(k)) && mine.len() >= l.per_app {
                    mine.retain(|_, (_, at)| fresh(at));
                }
                let mut refused = 0;
                for (k, v) in values {
                    if mine.contains_key(&k) || mine.len() < l.per_app {
                        mine.insert(k, (v, now));
                    } else {
                        refused += 1;
                    }
                }
                match refused {
                    0 => Ok(()),
                    refused => Err(CounterError::TooManyCounters {
                        app: app.to_string(),
                        max: l.per_app,
                        refused,
                    }),
                }
            }
        };
        if let Err(e) = &result {
            let limit = match e {
                CounterError::TooManyCounters { .. } => "counters_per_app",
                CounterError::TooManyApps { .. } => "counter_apps",
            };
            self.hits.hit(limit, 1, || e.to_string());
        }
        result
    }

    /// Forgets an app's counters (the app was removed), freeing its slot.
    pub fn forget(&self, app: &str) {
        self.table
            .lock()
            .expect("counter lock is never poisoned")
            .apps
            .remove(app);
    }

    /// The app's counters.
    pub fn get(&self, app: &str) -> BTreeMap<String, f64> {
        let t = self.table.lock().expect("counter lock is never poisoned");
        t.apps
            .get(app)
            .map(|c| c.iter().map(|(k, (v, _))| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

/// A parsed request's outcome: status code, reason and a body naming what was refused.
fn handle(req: &[u8], counters: &Counters) -> (u16, &'static str, String) {
    let Some(head_end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (400, "Bad Request", String::new());
    };
    let head = String::from_utf8_lossy(&req[..head_end]);
    let body = &req[head_end + 4..];
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let Some(rest) = path.strip_prefix(PATH_PREFIX) else {
        return (404, "Not Found", String::new());
    };
    if method != "POST" {
        return (405, "Method Not Allowed", String::new());
    }
    let Some((app, key)) = rest.split_once('/') else {
        return (401, "Unauthorized", String::new());
    };
    if fleet_schema::artifact::validate_name(app).is_err() {
        return (400, "Bad Request", String::new());
    }
    if !counters.key_matches(app, key) {
        return (403, "Forbidden", String::new());
    }
    let values: BTreeMap<String, f64> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                400,
                "Bad Request",
                format!("body is not a JSON object of numbers: {e}\n"),
            )
        }
    };
    match counters.merge(app, values) {
        Ok(()) => (204, "No Content", String::new()),
        Err(e) => (429, "Too Many Requests", format!("{e}\n")),
    }
}

/// Content-Length of a request head, if given.
fn content_length(head: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(head);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

async fn serve_one(mut s: TcpStream, counters: Counters) {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 2048];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return Some(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_REQUEST {
                return None;
            }
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let want = content_length(&buf[..end]).unwrap_or(0);
                if buf.len() >= end + 4 + want {
                    return Some(());
                }
            }
        }
    };
    let (code, reason, body) = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Some(())) => handle(&buf, &counters),
        Ok(None) => (413, "Payload Too Large", String::new()),
        Err(_) => (408, "Request Timeout", String::new()),
    };
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Binds `listen` (a 127.0.0.1 address) and serves in a background task; returns the base URL
/// (apps get `Counters::url_for` of it in FLEET_METRICS_URL).
pub async fn serve(listen: &str, counters: Counters) -> std::io::Result<String> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(serve_one(s, counters.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(format!("http://{addr}{PATH_PREFIX}"))
}

#[cfg(test)]
#[path = "counters_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "counters_limits_tests.rs"]
mod limits_tests;
