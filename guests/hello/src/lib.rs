//! `hello`: the smallest useful guest. Answers every request with a fixed
//! plain-text greeting; the baseline for benchmarks.

use wasmhost_guest_support::{Guest, IncomingRequest, ResponseOutparam, respond_text};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        respond_text(out, 200, "Hello, world!\n");
    }
}

wasmhost_guest_support::export_guest!(Hello);
