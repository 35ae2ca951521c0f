//! `hostile`: misbehaves as the query asks, to show the host contains it.
//!
//! - `?oom`: allocates 1 MiB blocks (and touches them) until memory runs out;
//! - `?half`: sends the head and half its announced body, then stalls forever;
//! - `?cut`: sends the head and half its announced body, then returns;
//! - `?none`: returns without ever setting a response;
//! - `?read`: reads the whole request body before answering, and traps if
//!   reading fails (as when the host cuts it off at `max_body`);
//! - otherwise it answers 200 with how much memory it may use, `ok`.

use wasmhost_guest_support::wasi::clocks::monotonic_clock;
use wasmhost_guest_support::wasi::io::streams::StreamError;
use wasmhost_guest_support::{
    Guest, IncomingRequest, ResponseOutparam, path_with_query, respond_text, start_response,
    write_all,
};

struct Hostile;

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
            _ => respond_text(out, 200, "ok\n"),
        }
    }
}

wasmhost_guest_support::export_guest!(Hostile);
