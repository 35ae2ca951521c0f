//! `slow`: answers after `?ms=N` milliseconds (default 1000), waiting on a
//! wasi:clocks timer rather than spinning, so tests can hold a request open
//! across a swap or a shutdown.

use wasmhost_guest_support::wasi::clocks::monotonic_clock;
use wasmhost_guest_support::{Guest, IncomingRequest, ResponseOutparam, query_param, respond_text};

struct Slow;

impl Guest for Slow {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let ms: u64 = match query_param(&request, "ms").map(|v| v.parse()) {
            None => 1000,
            Some(Ok(ms)) => ms,
            Some(Err(_)) => return respond_text(out, 400, "ms must be a whole number\n"),
        };
        monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
        respond_text(out, 200, &format!("slept {ms} ms\n"));
    }
}

wasmhost_guest_support::export_guest!(Slow);
