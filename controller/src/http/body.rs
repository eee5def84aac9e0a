//! [`LimitedBody`]: the body of an API request (JSON, or a manifest) read whole, within
//! `--max-request-body-bytes`. A declared `Content-Length` over the limit is refused before
//! any byte is read; a body that turns out larger is refused as soon as it passes the limit.
//! Both answers are 413 naming the limit, and count as a hit of `request_body_bytes`.

use super::{ApiFailure, AppState};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use futures_util::StreamExt;

/// A request body of at most `--max-request-body-bytes`.
#[derive(Debug)]
pub struct LimitedBody(pub Bytes);

impl std::ops::Deref for LimitedBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

fn too_large(st: &AppState, size: Option<u64>) -> ApiFailure {
    let max = st.max_request_body_bytes;
    st.metrics.limits.hit("request_body_bytes", || {
        format!("a request body was larger than {max} bytes (--max-request-body-bytes); refused")
    });
    let what = size.map_or_else(
        || "the request body is".to_string(),
        |n| format!("the request body ({n} bytes) is"),
    );
    ApiFailure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{what} larger than the limit of {max} bytes (--max-request-body-bytes)"),
    )
}

impl FromRequest<AppState> for LimitedBody {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, ApiFailure> {
        let max = st.max_request_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large(st, declared));
        }
        let stall = req
            .extensions()
            .get::<crate::server::watch::BodyStall>()
            .cloned()
            .unwrap_or_default();
        let mut stream = req.into_body().into_data_stream();
        let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                super::upload::stalled_or(
                    &stall,
                    ApiFailure::bad_request(format!("reading the request body failed: {e}")),
                )
            })?;
            if out.len() + chunk.len() > max {
                return Err(too_large(st, None));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(LimitedBody(Bytes::from(out)))
    }
}
