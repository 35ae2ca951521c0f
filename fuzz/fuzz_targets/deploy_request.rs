//! Deploy request parsing: the multipart boundary from any Content-Type, and
//! any body under any boundary, give parts or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmhost::admin::multipart;

fuzz_target!(|input: (String, Vec<u8>)| {
    let (content_type, body) = input;
    let boundary = multipart::boundary(&content_type).unwrap_or_else(|| "fuzz".into());
    if let Ok(parts) = multipart::parse(&body, &boundary) {
        let total: usize = parts.values().map(Vec::len).sum();
        assert!(total <= body.len());
    }
});
