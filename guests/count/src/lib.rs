//! `count`: shows whether instances are reused. Each instance draws a random
//! id on its first request and counts the requests it has served; the answer
//! is `instance ID request N`. A fresh instance per request always says
//! `request 1`. `?ms=N` waits N ms first (so requests overlap); `?spin=N`
//! computes for N ms first (a guest heavy on every request); `?trap` traps
//! after counting, and `?leave` returns keeping its response slot unset (a
//! leaked handle): either must end the instance.

use std::sync::atomic::{AtomicU64, Ordering};

use wasmhost_guest_support::wasi::clocks::monotonic_clock;
use wasmhost_guest_support::wasi::random::random;
use wasmhost_guest_support::{Guest, IncomingRequest, ResponseOutparam, query_param, respond_text};

static ID: AtomicU64 = AtomicU64::new(0);
static SERVED: AtomicU64 = AtomicU64::new(0);

struct Count;

impl Guest for Count {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if ID.load(Ordering::Relaxed) == 0 {
            ID.store(random::get_random_u64() | 1, Ordering::Relaxed);
        }
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(ms) = query_param(&request, "ms").and_then(|v| v.parse::<u64>().ok()) {
            monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
        }
        if let Some(ms) = query_param(&request, "spin").and_then(|v| v.parse::<u64>().ok()) {
            let until = monotonic_clock::now().saturating_add(ms.saturating_mul(1_000_000));
            while monotonic_clock::now() < until {
                std::hint::spin_loop();
            }
        }
        if query_param(&request, "trap").is_some() {
            panic!("asked to trap on request {served}");
        }
        if query_param(&request, "leave").is_some() {
            // Never dropped: the host's response slot stays in the table.
            std::mem::forget(out);
            return;
        }
        let id = ID.load(Ordering::Relaxed);
        respond_text(out, 200, &format!("instance {id:016x} request {served}\n"));
    }
}

wasmhost_guest_support::export_guest!(Count);
