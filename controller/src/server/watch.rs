//! What an HTTP connection is doing, for its timeouts: [`Tracked`] wraps the connection's
//! stream and records progress (bytes read, bytes written, a write the client does not take),
//! [`Activity`] holds that record with the number of requests being handled, and
//! [`Activity::expired`] says which timeout, if any, has passed. [`timed_body`] bounds the wait
//! for each piece of a request body. Pure bookkeeping: the connection task acts on it.

use axum::body::Body;
use futures_util::StreamExt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request head must be complete this long after its first byte (or the connection).
    pub header: Duration,
    /// Longest wait for the next piece of a request body, or for the client to take the next
    /// piece of a response.
    pub body: Duration,
    /// Longest a kept-alive connection may wait idle for its next request.
    pub idle: Duration,
}

/// Which timeout closed a connection (its `limit` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The request head did not arrive in time.
    Header,
    /// The client did not take the response (a write stalled).
    Write,
}

impl Expired {
    /// The `fleetd_limit_hits_total` label.
    pub fn label(self) -> &'static str {
        match self {
            Expired::Header => "http_header_timeout",
            Expired::Write => "http_body_timeout",
        }
    }
}

#[derive(Debug)]
struct State {
    /// Requests whose handler runs.
    handlers: usize,
    /// Since when a request head is awaited with bytes (or a fresh connection) and no handler.
    head_from: Option<Instant>,
    /// Since when a write waits for the client.
    write_blocked: Option<Instant>,
}

/// One connection's progress, shared by its stream, its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
}

impl Activity {
    /// A connection accepted now (its first request head is awaited from now).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                handlers: 0,
                head_from: Some(Instant::now()),
                write_blocked: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("activity lock is never poisoned")
    }

    fn read_progress(&self) {
        let mut s = self.lock();
        if s.handlers == 0 && s.head_from.is_none() {
            s.head_from = Some(Instant::now());
        }
    }

    fn write_progress(&self, blocked: bool) {
        let mut s = self.lock();
        s.write_blocked = match (blocked, s.write_blocked) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
    }

    /// A request's handler starts: its head is complete. The guard ends it when dropped.
    pub fn handling(self: &Arc<Self>) -> HandlerGuard {
        let mut s = self.lock();
        s.handlers += 1;
        s.head_from = None;
        HandlerGuard(self.clone())
    }

    /// The timeout that has passed at `now`, if any.
    pub fn expired(&self, t: &Timeouts, now: Instant) -> Option<Expired> {
        let s = self.lock();
        let past = |since: Option<Instant>, limit: Duration| {
            since.is_some_and(|at| now.saturating_duration_since(at) >= limit)
        };
        if s.handlers == 0 && past(s.head_from, t.header) {
            return Some(Expired::Header);
        }
        if past(s.write_blocked, t.body) {
            return Some(Expired::Write);
        }
        None
    }
}

/// Marks a request as handled while it lives.
#[derive(Debug)]
pub struct HandlerGuard(Arc<Activity>);

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.handlers = s.handlers.saturating_sub(1);
    }
}

/// A connection's stream that reports its progress to an [`Activity`].
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let out = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(out, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_progress();
        }
        out
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_progress(out.is_pending());
        out
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_progress(out.is_pending());
        out
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.write_progress(out.is_pending());
        out
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Set on a request (as an extension) when its body stalled past the body timeout, so the
/// handler can say so rather than report whatever its parser made of the cut-off body.
#[derive(Debug, Clone, Default)]
pub struct BodyStall(Arc<std::sync::atomic::AtomicBool>);

impl BodyStall {
    /// Whether the body stalled.
    pub fn stalled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn mark(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A request body whose every piece must arrive within `timeout` of the previous one (a
/// timeout between reads, not on the whole body); `on_timeout` is called when one does not,
/// and the body ends with an error naming the timeout.
pub fn timed_body(
    body: Body,
    timeout: Duration,
    stall: BodyStall,
    on_timeout: impl Fn() + Send + 'static,
) -> Body {
    let stream = body.into_data_stream();
    let timed = futures_util::stream::unfold(Some(stream), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
            Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no request body data for {} s (--http-body-timeout-secs)",
                        timeout.as_secs()
                    ),
                )),
                None,
            )),
        }
    });
    Body::from_stream(timed.inspect(move |item| {
        if matches!(item, Err(e) if e.kind() == io::ErrorKind::TimedOut) {
            stall.mark();
            on_timeout();
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        body: Duration::from_secs(60),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_head_that_does_not_complete_expires_and_a_handled_request_does_not() {
        let a = Activity::new();
        let t0 = Instant::now();
        assert_eq!(a.expired(&T, t0 + Duration::from_secs(9)), None);
        assert_eq!(
            a.expired(&T, t0 + Duration::from_secs(11)),
            Some(Expired::Header)
        );
        let guard = a.handling();
        assert_eq!(a.expired(&T, t0 + Duration::from_secs(100)), None);
        drop(guard);
        // Idle after the request: no head awaited until a byte arrives.
        assert_eq!(a.expired(&T, t0 + Duration::from_secs(100)), None);
        a.read_progress();
        let later = Instant::now() + Duration::from_secs(11);
        assert_eq!(a.expired(&T, later), Some(Expired::Header));
    }

    #[test]
    fn a_stalled_write_expires_after_the_body_timeout() {
        let a = Activity::new();
        let _guard = a.handling();
        a.write_progress(true);
        let t0 = Instant::now();
        assert_eq!(a.expired(&T, t0 + Duration::from_secs(30)), None);
        assert_eq!(
            a.expired(&T, t0 + Duration::from_secs(61)),
            Some(Expired::Write)
        );
        a.write_progress(false);
        assert_eq!(a.expired(&T, t0 + Duration::from_secs(61)), None);
    }
}
