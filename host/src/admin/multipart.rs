//! `multipart/form-data` deploy bodies (RFC 7578): a `component` part and an
//! optional `config` part; parsed here for the admin API, encoded here for
//! `wasmhost deploy`. Strict and bounded: anything
//! malformed is an error that says what, never a panic.

use std::collections::HashMap;

/// Why a multipart body was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed multipart body: {0}")]
pub struct MultipartError(pub String);

/// The `boundary` parameter of a `multipart/form-data` content type, if it is one.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    if !pieces
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    pieces.find_map(|piece| {
        let (key, value) = piece.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Splits `body` into its parts, by the `name` of each part's
/// `Content-Disposition`. A name given twice is an error.
pub fn parse(body: &[u8], boundary: &str) -> Result<HashMap<String, Vec<u8>>, MultipartError> {
    let err = |what: &str| MultipartError(what.to_string());
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(err("the boundary must be 1 to 70 characters"));
    }
    let delimiter = format!("--{boundary}").into_bytes();
    let mut rest = body;
    // Anything before the first delimiter is a preamble and ignored.
    let start = find(rest, &delimiter).ok_or_else(|| err("no boundary delimiter found"))?;
    rest = &rest[start + delimiter.len()..];
    let mut parts = HashMap::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| err("a delimiter must be followed by CRLF"))?;
        let head_end =
            find(rest, b"\r\n\r\n").ok_or_else(|| err("a part has no end of headers"))?;
        let head = std::str::from_utf8(&rest[..head_end])
            .map_err(|_| err("part headers are not UTF-8"))?;
        let name = part_name(head).ok_or_else(|| err("a part has no Content-Disposition name"))?;
        rest = &rest[head_end + 4..];
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let end =
            find(rest, &closing).ok_or_else(|| err("a part is not closed by the boundary"))?;
        if parts.insert(name.clone(), rest[..end].to_vec()).is_some() {
            return Err(MultipartError(format!("part `{name}` appears twice")));
        }
        rest = &rest[end + closing.len()..];
    }
}

/// A multipart/form-data body with the given `(name, content type, bytes)`
/// parts: what `wasmhost deploy --config` sends, the inverse of [`parse`].
pub fn encode(boundary: &str, parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

fn part_name(head: &str) -> Option<String> {
    let disposition = head.lines().find(|line| {
        line.to_ascii_lowercase()
            .starts_with("content-disposition:")
    })?;
    disposition.split(';').find_map(|piece| {
        let (key, value) = piece.split_once('=')?;
        (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_the_client_encoder() {
        let body = encode(
            "XyZ",
            &[
                (
                    "component",
                    "application/wasm",
                    b"\0asm\r\n--Xy-almost\r\n\r\n",
                ),
                ("config", "text/plain", b"route = \"/a\"\n"),
            ],
        );
        let parts = parse(&body, "XyZ").expect("valid");
        assert_eq!(parts["component"], b"\0asm\r\n--Xy-almost\r\n\r\n");
        assert_eq!(parts["config"], b"route = \"/a\"\n");
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=x; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary("application/wasm"), None);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [
            &b""[..],
            b"no delimiter",
            b"--b\r\nno end of headers",
            b"--b\r\n\r\nunclosed",
            b"--bX",
        ] {
            assert!(
                parse(body, "b").is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let twice = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n2\r\n--b--";
        assert!(parse(twice, "b").expect_err("dup").0.contains("twice"));
        assert!(parse(b"--b--", "").is_err());
        // Senders must pick a boundary that is not in the content (RFC 2046).
        let inside = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--bx\r\n--b--";
        assert!(parse(inside, "b").is_err());
    }
}

/// Property tests: the fuzz targets' checks, run on every `cargo test`.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes, any boundary: an answer, never a panic.
        #[test]
        fn any_body_parses_or_errors(body in prop::collection::vec(any::<u8>(), 0..600), boundary in "[a-zA-Z0-9'()+_,./:=?-]{1,30}") {
            let _ = parse(&body, &boundary);
        }

        /// Whatever the client encodes, the parser gives back byte for byte.
        #[test]
        fn what_the_client_encodes_parses_back(
            component in prop::collection::vec(any::<u8>(), 0..300),
            config in "[ -~\n]{0,100}",
        ) {
            let boundary = "wasmhost-test-boundary-7f3a";
            let body = encode(boundary, &[
                ("component", "application/wasm", &component),
                ("config", "application/toml", config.as_bytes()),
            ]);
            let parts = parse(&body, boundary).map_err(|err| TestCaseError::fail(err.to_string()))?;
            prop_assert_eq!(parts.get("component"), Some(&component));
            prop_assert_eq!(parts.get("config"), Some(&config.into_bytes()));
        }
    }
}
