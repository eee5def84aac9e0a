//! API request latency as a Prometheus histogram, labelled by method, route template (never
//! the raw path, so ids do not make new series) and status code; recorded by an axum
//! middleware around every routed request.

use crate::http::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Labels of one latency series.
type RouteLabels = Vec<(&'static str, String)>;

/// Bucket bounds, seconds: 1 ms to about 16 s.
fn new_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// The histogram family (cheap to clone: shared state).
#[derive(Clone, Debug)]
pub struct HttpLatency {
    family: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpLatency {
    fn default() -> Self {
        Self {
            family: Family::new_with_constructor(new_histogram),
        }
    }
}

impl HttpLatency {
    /// Records one request.
    pub fn observe(&self, method: String, route: String, status: u16, seconds: f64) {
        self.family
            .get_or_create(&vec![
                ("method", method),
                ("route", route),
                ("status", status.to_string()),
            ])
            .observe(seconds);
    }

    /// The family, for registering in a scrape's registry.
    pub fn family(&self) -> Family<RouteLabels, Histogram, fn() -> Histogram> {
        self.family.clone()
    }
}

/// The middleware: times the request through to its response headers.
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    st.metrics.telemetry.latency.observe(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
