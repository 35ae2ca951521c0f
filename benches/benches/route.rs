//! Route lookup: the per-request routing cost, by path and by Host header,
//! with 200 projects loaded. Everything else on the request path is measured
//! by the load harness.

use criterion::{Criterion, criterion_main};
use std::hint::black_box;

fn route_lookup(c: &mut Criterion) {
    let router = wasmhost_benches::many_projects(200);
    let mut group = c.benchmark_group("route");
    group.bench_function("path_prefix", |b| {
        b.iter(|| router.route(black_box(None), black_box("/p150/some/path?x=1")))
    });
    group.bench_function("nested_strip_prefix", |b| {
        b.iter(|| router.route(black_box(None), black_box("/p0/api/v1/items")))
    });
    group.bench_function("host_header", |b| {
        b.iter(|| router.route(black_box(Some("p150.localhost:8080")), black_box("/x")))
    });
    group.bench_function("miss", |b| {
        b.iter(|| router.route(black_box(None), black_box("/nothing/here")))
    });
    group.finish();
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::route_lookup);
}
criterion_main!(group::benches);
