//! `GET /`: the live dashboard, one HTML page compiled into the binary. It
//! needs no build step and loads nothing from the network.

use std::sync::LazyLock;

use hyper::header::{CACHE_CONTROL, HeaderValue};
use hyper::{Response, StatusCode};
use sha2::{Digest as _, Sha256};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::front::responses::full_response;

/// The page, with its one script and one style sheet inline.
const PAGE: &str = include_str!("dashboard.html");

/// The page's Content-Security-Policy. Only the page's own script and
/// styles run, named by their SHA-256: were a string from a guest or a
/// project ever to reach the page as markup, a script in it would not run,
/// so it could not read the admin token the tab keeps. Requests go to this
/// origin only, and no other page may frame this one.
static POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash_of(inline(PAGE, "script")),
        hash_of(inline(PAGE, "style")),
    )
});

/// The text of the first `<tag>` element of `page`.
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    page.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map_or("", |(text, _)| text)
}

/// A CSP source for exactly `text`: `sha256-` and its base64 digest.
fn hash_of(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::from("sha256-");
    for chunk in digest.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let word = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(word >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The dashboard.
pub(crate) fn page() -> Response<HyperOutgoingBody> {
    let mut response = full_response(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&POLICY) {
        headers.insert("content-security-policy", policy);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_one_script_and_style_and_nothing_else_inline() {
        // RFC 4648's test vector, through the digest: sha256("") in base64.
        assert_eq!(
            hash_of(""),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(
            !PAGE.contains(" style=\""),
            "inline style attributes are blocked"
        );
        let handler = PAGE.match_indices(" on").any(|(at, _)| {
            let rest = &PAGE[at + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "inline event handlers are blocked");
        assert!(!PAGE.contains("innerHTML"), "text only, never markup");
        assert!(POLICY.contains(&hash_of(inline(PAGE, "script"))));
        assert!(!POLICY.contains("unsafe-inline"));
    }
}
