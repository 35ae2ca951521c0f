//! `GET /`: the live dashboard, one HTML page compiled into the binary. It
//! needs no build step and loads nothing from the network; its
//! Content-Security-Policy lets it talk to this admin API only.

use hyper::header::{CACHE_CONTROL, HeaderValue};
use hyper::{Response, StatusCode};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::front::responses::full_response;

/// The page, script and styles inline.
const PAGE: &str = include_str!("dashboard.html");

/// Inline script and styles, requests to this origin only, no frames: a
/// project's guest or an injected string cannot make the page load or send
/// anything elsewhere.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

/// The dashboard.
pub(crate) fn page() -> Response<HyperOutgoingBody> {
    let mut response = full_response(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}
