//! `count`: shows whether instances are reused. Each instance draws a random
//! id on its first request and counts the requests it has served; the answer
//! is `instance ID request N`. A fresh instance per request always says
//! `request 1`. `?ms=N` waits N ms first (so requests overlap); `?spin=N`
//! computes for N ms first (a guest heavy on every request); `?trap` traps
//! after counting, and `?leave` returns keeping its response slot unset (a
//! leaked handle): either must end the instance. `?scatter` checks, then
//! dirties, one byte in every other 4 KiB page of two buffers, one in the
//! memory image and one past it: the answer adds `stale S wrote W`, where S
//! counts bytes a previous instance left changed (0 for a properly reset
//! memory) and W the pages written, each its own region of dirty memory.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use wasmhost_guest_support::wasi::clocks::monotonic_clock;
use wasmhost_guest_support::wasi::random::random;
use wasmhost_guest_support::{Guest, IncomingRequest, ResponseOutparam, query_param, respond_text};

static ID: AtomicU64 = AtomicU64::new(0);
static SERVED: AtomicU64 = AtomicU64::new(0);

/// A host page, and the stride of `?scatter`: every other page, so each
/// written page is a separate region for the host's reset.
const PAGE: usize = 4096;
/// Initialised to 1: part of the component's memory image (a data segment).
static IMAGED: [AtomicU8; 64 * PAGE] = [const { AtomicU8::new(1) }; 64 * PAGE];
/// Initialised to 0: past the image, in memory that starts zeroed.
static ZEROED: [AtomicU8; 128 * PAGE] = [const { AtomicU8::new(0) }; 128 * PAGE];

/// Counts bytes of `buffer` (every other page) that differ from `initial`,
/// then writes to each of those pages. Returns (stale, written).
fn scatter(buffer: &[AtomicU8], initial: u8) -> (usize, usize) {
    let (mut stale, mut written) = (0, 0);
    for byte in buffer.iter().step_by(2 * PAGE) {
        if byte.load(Ordering::Relaxed) != initial {
            stale += 1;
        }
        byte.store(0xAA, Ordering::Relaxed);
        written += 1;
    }
    (stale, written)
}

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
        if query_param(&request, "scatter").is_some() {
            let (stale_image, written_image) = scatter(&IMAGED, 1);
            let (stale_zeroed, written_zeroed) = scatter(&ZEROED, 0);
            respond_text(
                out,
                200,
                &format!(
                    "instance {id:016x} request {served} stale {} wrote {}\n",
                    stale_image + stale_zeroed,
                    written_image + written_zeroed
                ),
            );
            return;
        }
        respond_text(out, 200, &format!("instance {id:016x} request {served}\n"));
    }
}

wasmhost_guest_support::export_guest!(Count);
