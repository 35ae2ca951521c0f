//! Shared set-up for wasmhost's benchmarks.

use wasmhost::router::{Router, RouterBuilder};

/// A router with `count` projects named `p0`, `p1`, … on routes `/p0`, `/p1`, …,
/// plus one nested route, as a many-project host would have.
pub fn many_projects(count: usize) -> Router {
    let mut builder = RouterBuilder::default();
    for index in 0..count {
        let name = format!("p{index}");
        let route = format!("/{name}");
        // Distinct names and routes cannot conflict.
        let _ = builder.add(index, &name, &route, &[], false);
    }
    let _ = builder.add(count, "nested", "/p0/api", &[], true);
    builder.build()
}
