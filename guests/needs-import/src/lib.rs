//! `needs-import`: a proxy that imports `wasmhost:guest/unavailable`, which no
//! host provides. The host must reject it at link time.

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasmhost:guest/needs-unavailable",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct NeedsImport;

impl Guest for NeedsImport {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        wasmhost::guest::unavailable::nothing();
    }
}

export!(NeedsImport);
