//! Who may use the admin API: a bearer token when one is set; when none is,
//! only loopback peers may change anything, and only requests addressed to a
//! loopback name are answered at all.
//!
//! The last rules close the admin API to web pages: a page can make the
//! user's browser send requests to `127.0.0.1:8081`, either directly
//! (cross-origin, with an `Origin` header naming the page, which may itself
//! be served from loopback, e.g. by a guest on the project listener) or
//! through a name of its own that it re-points at 127.0.0.1 (DNS rebinding,
//! with a `Host` header naming the page's domain). So a request whose `Host`
//! is not a loopback name, or whose `Origin` is not the admin API's own
//! origin, is refused with 403. The CLI sends no `Origin`.

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
                if let Some(refused) = foreign_page(request) {
                    return Some(text_response(StatusCode::FORBIDDEN, &refused));
                }
                let mutating = changes_something(request.method());
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

/// Whether a request with this method may change something: anything but
/// GET and HEAD.
pub(crate) fn changes_something(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD
}

/// Why a request looks sent by a web page of another origin, if it does: its
/// `Host` is not a loopback name (DNS rebinding), or it carries an `Origin`
/// that is not the admin API's own, `http://` + its `Host` (a cross-origin
/// request, from any other site or port). A request without `Host`
/// (HTTP/1.0) cannot come from a browser and is let through.
fn foreign_page<B>(request: &Request<B>) -> Option<String> {
    let header_text = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap_or("(not text)").to_string())
    };
    if let Some(host) = header_text(header::HOST)
        && !is_loopback_authority(&host)
    {
        return Some(format!(
            "the admin API answers only requests addressed to localhost, 127.0.0.1 or [::1], not `{host}` (set --admin-token to serve other names)"
        ));
    }
    if let Some(origin) = header_text(header::ORIGIN) {
        let own = header_text(header::HOST).map(|host| format!("http://{host}"));
        if !own.is_some_and(|own| own.eq_ignore_ascii_case(&origin)) {
            return Some(format!(
                "the admin API refuses requests from web pages of other origins, such as `{origin}`"
            ));
        }
    }
    None
}

/// `localhost`, a loopback IPv4 address or `[::1]`, with any port or none.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => v6,
            _ => return false,
        },
        None => authority.split(':').next().unwrap_or(authority),
    };
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

    fn with(host: Option<&str>, origin: Option<&str>) -> Request<()> {
        let mut request = Request::builder().method(Method::GET).uri("/projects");
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        let mut request = request.body(()).expect("request");
        let peer = "127.0.0.1:40000".parse().expect("socket address");
        request.extensions_mut().insert(Peer(peer));
        request
    }

    #[test]
    fn without_a_token_only_loopback_names_and_origins_are_answered() {
        let access = Access {
            token: None,
            max_deploy_size: 1,
        };
        for host in [
            "localhost",
            "localhost:8081",
            "LOCALHOST.",
            "127.0.0.1",
            "127.0.0.1:8081",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8081",
        ] {
            assert_eq!(status(&access, &with(Some(host), None)), None, "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8081",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "192.168.1.10:8081",
            "[::2]:8081",
            "[::1",
        ] {
            assert_eq!(
                status(&access, &with(Some(host), None)),
                Some(StatusCode::FORBIDDEN),
                "{host}"
            );
        }
        // The admin API's own pages may call it; nothing else may.
        for (host, origin) in [
            ("localhost:8081", "http://localhost:8081"),
            ("127.0.0.1:8081", "http://127.0.0.1:8081"),
            ("[::1]:8081", "http://[::1]:8081"),
        ] {
            assert_eq!(
                status(&access, &with(Some(host), Some(origin))),
                None,
                "{origin}"
            );
        }
        for origin in [
            "https://attacker.example",
            "null",
            "http://localhost.attacker.example",
            // A page on another loopback port, e.g. a guest on the project listener.
            "http://127.0.0.1:8080",
            "http://localhost:8081",
            "https://127.0.0.1:8081",
        ] {
            assert_eq!(
                status(&access, &with(Some("127.0.0.1:8081"), Some(origin))),
                Some(StatusCode::FORBIDDEN),
                "{origin}"
            );
        }
    }
}
