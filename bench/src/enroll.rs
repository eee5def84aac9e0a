//! Enrolling the simulated fleet before it connects, exactly as agents do: each device makes
//! its own key, sends a signed enrollment request with an enrollment token the benchmark
//! created, and reads the answer (pinned controller key, bus key, MQTT credentials). Runs on a
//! pool of threads (ureq is blocking), with a progress bar; timed separately from the rest.

use crate::fleet::device_id;
use anyhow::{bail, Context, Result};
use fleet_schema::trust::device::DeviceEnd;
use fleet_schema::trust::enroll::{complete, EnrollRequest, EnrollResponse};
use fleet_schema::trust::SigningKey;
use fleet_schema::{DeviceId, Inventory};
use indicatif::ProgressBar;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Enrollment requests in flight at once.
const PARALLEL: usize = 16;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Enrolls one device with `token`.
pub fn enroll_one(agent: &ureq::Agent, http: &str, token: &str, id: &str) -> Result<DeviceEnd> {
    let key = SigningKey::generate()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .0;
    let device = DeviceId::parse(id).context("device id")?;
    let (req, exchange) = EnrollRequest::new_signed(
        &device,
        &key,
        Inventory::default(),
        crate::device::SIM_AGENT_VERSION,
        now_ms(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = format!("{http}/api/v1/enroll");
    let mut resp = agent
        .post(&url)
        .header("authorization", format!("Bearer {token}"))
        .send_json(&req)
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .context("reading the enrollment answer")?;
    if status != 200 {
        bail!("enrolling {id}: HTTP {status}: {text}");
    }
    let answer: EnrollResponse = serde_json::from_str(&text).context("enrollment answer")?;
    let enrolled = complete(&req, exchange, &answer, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(DeviceEnd::new(key, enrolled, now_ms()))
}

/// Enrolls devices `0..n` with `token`; returns them in index order.
pub fn enroll_fleet(
    http: &str,
    token: &str,
    n: usize,
    progress: &ProgressBar,
) -> Result<Vec<DeviceEnd>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let next = Arc::new(AtomicUsize::new(0));
    let out: Arc<Mutex<Vec<Option<DeviceEnd>>>> =
        Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let failure: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(n.max(1)) {
            let (agent, next, out, failure) =
                (agent.clone(), next.clone(), out.clone(), failure.clone());
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                match enroll_one(&agent, http, token, &device_id(i, n)) {
                    Ok(end) => {
                        if let Ok(mut v) = out.lock() {
                            v[i] = Some(end);
                        }
                        progress.inc(1);
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    let v = std::mem::take(
        &mut *out
            .lock()
            .map_err(|_| anyhow::anyhow!("enrollment results lock poisoned"))?,
    );
    v.into_iter()
        .enumerate()
        .map(|(i, d)| d.with_context(|| format!("device {i} was not enrolled")))
        .collect()
}
