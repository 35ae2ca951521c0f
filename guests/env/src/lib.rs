//! `env`: answers with its environment, one `KEY=VALUE` line each, sorted.
//! It reads the environment through Rust's std, which imports
//! wasi:cli/environment, so it also proves the host links the wasi:cli world
//! beyond the proxy world. It logs the count to stdout to exercise the
//! host's guest-output logging.

use wasmhost_guest_support::{Guest, IncomingRequest, ResponseOutparam, respond_text};

struct Env;

impl Guest for Env {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let mut vars: Vec<(String, String)> = std::env::vars().collect();
        vars.sort();
        println!("env guest: serving {} variables", vars.len());
        let body: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        respond_text(out, 200, &body);
    }
}

wasmhost_guest_support::export_guest!(Env);
