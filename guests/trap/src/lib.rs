//! `trap`: traps (a Rust panic becomes a wasm `unreachable`) on every
//! request, unless the query has `ok`, in which case it answers 200. The
//! `ok` path lets a test show that the project still serves after a trap.

use wasmhost_guest_support::{Guest, IncomingRequest, ResponseOutparam, query_param, respond_text};

struct Trap;

impl Guest for Trap {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if query_param(&request, "ok").is_some() {
            return respond_text(out, 200, "no trap this time\n");
        }
        eprintln!("trap guest: about to trap");
        panic!("trap guest: deliberate trap");
    }
}

wasmhost_guest_support::export_guest!(Trap);
