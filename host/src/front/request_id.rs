//! `x-request-id`: one id per request, taken from the client when it sent a
//! sane one (so a proxy in front can follow a request through) or made
//! here. The guest sees it as a request header, the client gets it back on
//! the response, and the access log and the guest's log lines carry it.

use std::cell::Cell;
use std::hash::{BuildHasher as _, Hasher as _};

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

/// The header's name.
pub(crate) static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a client; a longer one is replaced.
const MAX_LEN: usize = 128;

thread_local! {
    /// This thread's random prefix and how many ids it has made: unique
    /// without any state shared between the request workers.
    static NEXT: Cell<(u64, u64)> = Cell::new((random(), 0));
}

/// 64 random bits from the standard library's per-thread hash keys, which
/// are seeded from the OS: ids from two hosts or two threads do not collide.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// Whether a client's id can be used as is: 1 to 128 characters, letters,
/// digits and `-_.:+/=@` only, so it is safe in a log line and a header.
fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b))
}

/// A new id: 32 lowercase hex digits.
fn make() -> HeaderValue {
    let (prefix, count) = NEXT.with(|next| {
        let (prefix, count) = next.get();
        next.set((prefix, count.wrapping_add(1)));
        (prefix, count)
    });
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { count };
        let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

/// The request's id: the client's when sane, else a new one, which then
/// replaces the client's in `headers` (what the guest sees).
pub(crate) fn take_or_make(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(&HEADER)
        && is_sane(value)
        && headers.get_all(&HEADER).iter().count() == 1
    {
        // A copy of its at most 128 bytes: a clone would share, and keep
        // alive, the buffer hyper read the whole request head into.
        return HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| make());
    }
    let id = make();
    headers.insert(HEADER.clone(), id.clone());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER.clone(), HeaderValue::from_static("abc-123_X:y/z"));
        assert_eq!(take_or_make(&mut headers), "abc-123_X:y/z");
        assert_eq!(headers[&HEADER], "abc-123_X:y/z");

        for bad in ["", "has space", "quote\"", &"x".repeat(129), "caf\u{e9}"] {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_bytes(bad.as_bytes()).expect("header value");
            headers.insert(HEADER.clone(), value);
            let id = take_or_make(&mut headers);
            assert_ne!(id.as_bytes(), bad.as_bytes(), "{bad:?} was kept");
            assert_eq!(id.len(), 32);
            assert_eq!(headers[&HEADER], id, "the guest sees the new id");
        }

        // Two ids in one request: neither is trusted.
        let mut headers = HeaderMap::new();
        headers.append(HEADER.clone(), HeaderValue::from_static("one"));
        headers.append(HEADER.clone(), HeaderValue::from_static("two"));
        let id = take_or_make(&mut headers);
        assert_eq!(id.len(), 32);
        assert_eq!(headers.get_all(&HEADER).iter().count(), 1);
    }

    #[test]
    fn made_ids_are_hex_and_never_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = take_or_make(&mut HeaderMap::new());
            let text = id.to_str().expect("ASCII");
            assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
            assert!(seen.insert(text.to_string()), "{text} repeated");
        }
        let other = std::thread::spawn(|| take_or_make(&mut HeaderMap::new()))
            .join()
            .expect("thread");
        assert!(!seen.contains(other.to_str().expect("ASCII")));
    }
}
