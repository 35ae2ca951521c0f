//! `hostile`: misbehaves as the query asks, to show the host contains it.
//!
//! - `?oom`: allocates 1 MiB blocks (and touches them) until memory runs out;
//! - `?half`: sends the head and half its announced body, then stalls forever;
//! - `?cut`: sends the head and half its announced body, then returns;
//! - `?none`: returns without ever setting a response;
//! - `?linger`: answers 200 `ok` in full, then waits forever instead of
//!   returning;
//! - `?read`: reads the whole request body before answering, and traps if
//!   reading fails (as when the host cuts it off at `max_body`);
//! - `?fields`: makes header field lists of 1 KiB each and keeps them all,
//!   up to [`FIELD_LISTS`] (about 100 MB of host memory); answers 200 with
//!   how many it made, unless the host refuses one first (the guest traps);
//! - `?leak`: makes [`LEAKED`] header field lists and never drops them (as a
//!   guest with a leak, or a garbage collector that does not run, would),
//!   then answers 200;
//! - `?log=N`: prints `N` numbered lines of about 100 bytes to stdout as
//!   fast as it can, then answers 200;
//! - otherwise it answers 200 with how much memory it may use, `ok`.

use wasmhost_guest_support::wasi::clocks::monotonic_clock;
use wasmhost_guest_support::wasi::io::streams::StreamError;
use wasmhost_guest_support::{
    Fields, Guest, IncomingRequest, ResponseOutparam, path_with_query, respond_text,
    start_response, write_all,
};

struct Hostile;

/// How many field lists `?fields` makes at most: far past what a host should
/// let one request hold, yet small enough not to hurt a host that allows it.
const FIELD_LISTS: usize = 100_000;

/// How many field lists `?leak` leaves behind on every request.
const LEAKED: usize = 50;

/// What `?half` and `?cut` announce as their length, then send half of.
const ANNOUNCED: usize = 1 << 20;

impl Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = path_with_query(&request);
        let query = query.split_once('?').map_or("", |(_, query)| query);
        match query {
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used.
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "half" | "cut" => {
                let headers = [(
                    "content-length".to_string(),
                    ANNOUNCED.to_string().into_bytes(),
                )];
                let Some((body, stream)) = start_response(out, 200, &headers) else {
                    return;
                };
                write_all(&stream, &vec![b'x'; ANNOUNCED / 2]);
                if query == "half" {
                    loop {
                        monotonic_clock::subscribe_duration(u64::MAX).block();
                    }
                }
                // Returning without finishing the body: it is incomplete.
                drop(stream);
                drop(body);
            }
            "none" => drop(out),
            "linger" => {
                respond_text(out, 200, "ok\n");
                loop {
                    monotonic_clock::subscribe_duration(u64::MAX).block();
                }
            }
            "read" => {
                let body = request.consume().expect("the body, once");
                let input = body.stream().expect("the body's stream, once");
                let mut total = 0usize;
                loop {
                    match input.blocking_read(64 * 1024) {
                        Ok(bytes) => total += bytes.len(),
                        Err(StreamError::Closed) => break,
                        Err(StreamError::LastOperationFailed(err)) => {
                            panic!("reading the request body failed: {}", err.to_debug_string())
                        }
                    }
                }
                respond_text(out, 200, &format!("read {total} bytes\n"));
            }
            "fields" => {
                let value = vec![b'x'; 1024];
                let mut kept = Vec::new();
                for _ in 0..FIELD_LISTS {
                    let fields = Fields::from_list(&[("x-hoard".to_string(), value.clone())])
                        .expect("a valid field list");
                    kept.push(fields);
                }
                respond_text(out, 200, &format!("made {} field lists\n", kept.len()));
            }
            "leak" => {
                for _ in 0..LEAKED {
                    std::mem::forget(Fields::new());
                }
                respond_text(out, 200, "leaked\n");
            }
            query if query.starts_with("log=") => {
                let lines: u32 = query["log=".len()..].parse().unwrap_or(0);
                let padding = "x".repeat(80);
                for line in 0..lines {
                    println!("flood {line:06} {padding}");
                }
                respond_text(out, 200, &format!("printed {lines} lines\n"));
            }
            _ => respond_text(out, 200, "ok\n"),
        }
    }
}

wasmhost_guest_support::export_guest!(Hostile);
