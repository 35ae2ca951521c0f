//! Who may use the admin API: a bearer token when one is set, and only
//! loopback peers for changes when none is.

use hyper::{Method, Request, Response, StatusCode, header};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::front::responses::text_response;

/// Who may use the admin API, and how much they may upload.
#[derive(Clone, Debug)]
pub struct Access {
    /// When set, every request needs `Authorization: Bearer TOKEN`. When not,
    /// the listener is loopback-only (the config refuses anything else) and
    /// changes are refused from any non-loopback peer.
    pub token: Option<String>,
    /// Largest deploy body accepted, in bytes (413 beyond).
    pub max_deploy_size: u64,
}

impl Access {
    /// Why `request` may not proceed, as the response to send; `None` when it may.
    pub(crate) fn refuse<B>(&self, request: &Request<B>) -> Option<Response<HyperOutgoingBody>> {
        let unauthorized = |text: &str| {
            let mut response = text_response(StatusCode::UNAUTHORIZED, text);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"wasmhost\""),
            );
            Some(response)
        };
        match &self.token {
            Some(token) => {
                let offered = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "));
                match offered {
                    Some(offered) if same_secret(offered.trim(), token) => None,
                    Some(_) => unauthorized("wrong admin token"),
                    None => unauthorized("this admin API needs Authorization: Bearer TOKEN"),
                }
            }
            None => {
                let mutating = request.method() != Method::GET && request.method() != Method::HEAD;
                let remote = request
                    .extensions()
                    .get::<crate::front::listener::Peer>()
                    .is_some_and(|peer| !peer.0.ip().is_loopback());
                if mutating && remote {
                    unauthorized("changes from other hosts need an admin token (--admin-token)")
                } else {
                    None
                }
            }
        }
    }
}

/// Compares two secrets in time independent of where they differ (and of
/// their lengths: both are hashed first), so timing cannot reveal a prefix.
fn same_secret(offered: &str, expected: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let (a, b) = (Sha256::digest(offered), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::listener::Peer;

    fn from(peer: &str, method: Method, authorization: Option<&str>) -> Request<()> {
        let mut request = Request::builder().method(method).uri("/projects/app");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let mut request = request.body(()).expect("request");
        let peer = peer.parse().expect("socket address");
        request.extensions_mut().insert(Peer(peer));
        request
    }

    fn status(access: &Access, request: &Request<()>) -> Option<StatusCode> {
        access.refuse(request).map(|response| response.status())
    }

    /// Without a token the listener is loopback-only, so no real socket can
    /// bring a remote peer here; this guards the check behind that rule.
    #[test]
    fn without_a_token_only_reads_are_allowed_from_other_hosts() {
        let access = Access {
            token: None,
            max_deploy_size: 1,
        };
        let remote = "192.0.2.7:40000";
        assert_eq!(
            status(&access, &from(remote, Method::PUT, None)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&access, &from(remote, Method::DELETE, None)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(status(&access, &from(remote, Method::GET, None)), None);
        assert_eq!(
            status(&access, &from("127.0.0.1:40000", Method::PUT, None)),
            None
        );
        assert_eq!(
            status(&access, &from("[::1]:40000", Method::POST, None)),
            None
        );
    }

    #[test]
    fn with_a_token_every_request_needs_it() {
        let access = Access {
            token: Some("s3cret".into()),
            max_deploy_size: 1,
        };
        let local = "127.0.0.1:40000";
        assert_eq!(
            status(&access, &from(local, Method::GET, None)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&access, &from(local, Method::GET, Some("Bearer wrong"))),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(
                &access,
                &from("192.0.2.7:1", Method::PUT, Some("Bearer s3cret"))
            ),
            None
        );
        assert!(same_secret("s3cret", "s3cret") && !same_secret("s3cre", "s3cret"));
    }
}
