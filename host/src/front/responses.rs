//! The responses the host writes itself (404s, errors, admin JSON), in the
//! same body type guests' responses use, so every handler returns one type.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A complete response with the given status, content type and body.
pub(crate) fn full_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<HyperOutgoingBody> {
    let body = Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A short `text/plain` response; a newline is added.
pub(crate) fn text_response(status: StatusCode, text: &str) -> Response<HyperOutgoingBody> {
    full_response(status, "text/plain; charset=utf-8", format!("{text}\n"))
}

/// `value` as pretty-printed JSON.
pub(crate) fn json_response(
    status: StatusCode,
    value: &impl Serialize,
) -> Response<HyperOutgoingBody> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut text) => {
            text.push(b'\n');
            full_response(status, "application/json", text)
        }
        Err(err) => text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("failed to encode JSON: {err}"),
        ),
    }
}
