//! Bounds on artifact uploads as a whole: how many are received at once
//! (`--max-uploads-in-flight`, one more is answered 429) and how many bytes they stage together
//! (`--max-staging-bytes`, an upload that would go beyond it is refused with 507). Each upload
//! holds a [`Slot`] while it runs and a [`Reservation`] of the bytes it staged; both give back
//! what they hold when dropped, whatever ends the upload.

use super::ApiFailure;
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::http::StatusCode;
use futures_util::{Stream, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared counters of uploads in flight and bytes staged.
#[derive(Debug)]
pub struct UploadGate {
    slots: Arc<Semaphore>,
    max_in_flight: u32,
    staged: Arc<AtomicU64>,
    max_staging: u64,
}

/// One upload's place among those in flight.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// Bytes one upload has staged, counted against the staging quota until dropped.
#[derive(Debug)]
pub struct Reservation {
    staged: Arc<AtomicU64>,
    max: u64,
    held: AtomicU64,
    /// Set when a grow failed: the upload was refused for the quota.
    over: AtomicBool,
}

impl UploadGate {
    /// A gate for at most `max_in_flight` uploads staging at most `max_staging` bytes together.
    pub fn new(max_in_flight: u32, max_staging: u64) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
            staged: Arc::new(AtomicU64::new(0)),
            max_staging,
        }
    }

    /// A place for one more upload, or 429 naming the limit (counted).
    pub fn slot(&self, metrics: &Metrics) -> Result<Slot, ApiFailure> {
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => Ok(Slot(p)),
            Err(_) => {
                let max = self.max_in_flight;
                metrics.limits.hit("uploads_in_flight", || {
                    format!("{max} uploads in flight (--max-uploads-in-flight); refused one more")
                });
                Err(ApiFailure::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many uploads in flight: fleetd receives at most {max} at once (--max-uploads-in-flight); retry when one has finished"),
                ))
            }
        }
    }

    /// A reservation starting with `bytes` (a declared size), or 507 naming the limit.
    pub fn reserve(&self, bytes: u64, metrics: &Metrics) -> Result<Arc<Reservation>, ApiFailure> {
        let r = Arc::new(Reservation {
            staged: self.staged.clone(),
            max: self.max_staging,
            held: AtomicU64::new(0),
            over: AtomicBool::new(false),
        });
        if !r.grow(bytes) {
            return Err(r.refusal(metrics));
        }
        Ok(r)
    }

    /// Bytes staged right now over all uploads.
    pub fn staged(&self) -> u64 {
        self.staged.load(Ordering::Relaxed)
    }
}

impl Reservation {
    /// Counts `bytes` more, unless that would pass the quota (then nothing is counted).
    pub fn grow(&self, bytes: u64) -> bool {
        let ok = self
            .staged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok();
        if ok {
            self.held.fetch_add(bytes, Ordering::AcqRel);
        } else {
            self.over.store(true, Ordering::Release);
        }
        ok
    }

    /// Whether a grow was refused.
    pub fn was_refused(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// The 507 answer for a refused reservation (counted).
    pub fn refusal(&self, metrics: &Metrics) -> ApiFailure {
        let max = self.max;
        metrics.limits.hit("upload_staging_bytes", || {
            format!("uploads in flight would stage more than {max} bytes together (--max-staging-bytes); refused one")
        });
        ApiFailure::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("the uploads in flight would stage more than {max} bytes together (--max-staging-bytes); retry later"),
        )
    }

    /// `body` with every chunk counted against the quota; past it, the stream ends with an
    /// error (and [`Reservation::was_refused`] says why).
    pub fn count<'a, S, E>(
        self: &Arc<Self>,
        body: S,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'a
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'a,
        E: std::fmt::Display,
    {
        let me = self.clone();
        body.map(move |chunk| {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
            if me.grow(chunk.len() as u64) {
                Ok(chunk)
            } else {
                Err(std::io::Error::other(
                    "staging quota (--max-staging-bytes) reached",
                ))
            }
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = *self.held.get_mut();
        self.staged.fetch_sub(held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_bytes_are_given_back_when_dropped() {
        let m = Metrics::default();
        let gate = UploadGate::new(1, 100);
        let slot = gate.slot(&m).expect("first");
        let err = gate.slot(&m).expect_err("second");
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            err.message.contains("--max-uploads-in-flight"),
            "{}",
            err.message
        );
        drop(slot);
        gate.slot(&m).expect("free again");

        let a = gate.reserve(60, &m).expect("60 of 100");
        let err = gate.reserve(50, &m).expect_err("110 of 100");
        assert_eq!(err.status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(a.grow(40));
        assert!(!a.grow(1));
        assert!(a.was_refused());
        assert_eq!(gate.staged(), 100);
        drop(a);
        assert_eq!(gate.staged(), 0);
        assert_eq!(m.limits.count("uploads_in_flight"), 1);
        assert_eq!(m.limits.count("upload_staging_bytes"), 1);
    }
}
