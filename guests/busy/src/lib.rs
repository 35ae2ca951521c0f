//! `busy`: burns CPU without ever yielding to the host, for `?ms=N`
//! milliseconds (default: forever), then answers. It stands for a guest stuck
//! in a loop: only the host's epoch deadline can stop it.

use wasmhost_guest_support::wasi::clocks::monotonic_clock;
use wasmhost_guest_support::{Guest, IncomingRequest, ResponseOutparam, query_param, respond_text};

struct Busy;

impl Guest for Busy {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let limit_ns = query_param(&request, "ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(u64::MAX, |ms| ms.saturating_mul(1_000_000));
        let start = monotonic_clock::now();
        let mut spins: u64 = 0;
        while monotonic_clock::now().saturating_sub(start) < limit_ns {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        respond_text(out, 200, &format!("spun {spins} times\n"));
    }
}

wasmhost_guest_support::export_guest!(Busy);
