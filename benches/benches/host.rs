//! Micro-benchmarks of the request path and the swap pipeline, on the real
//! engine, compiler and cache:
//! - the per-request lookup: routing snapshot, route, current version;
//! - a swap (one atomic store) while another thread keeps reading, and a
//!   read while another thread keeps swapping;
//! - instantiating the hello component from its `ProxyPre`, with the same
//!   per-request store set-up a request gets;
//! - loading a compiled component from the compile cache (a cache hit), and
//!   wasmtime's unchecked `deserialize_file` beside it;
//! - compiling each guest.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_main};
use wasmhost::engine;
use wasmhost::front::invoke;
use wasmhost::model::build::Build;
use wasmhost::model::events::Events;
use wasmhost::model::manifest::ProjectName;
use wasmhost::model::project::Project;
use wasmhost::model::registry::Registry;
use wasmhost::model::version::{RunConfig, Stats, Version};
use wasmhost::swap::cache::{CompileCache, Lookup};
use wasmhost::swap::compiler::Compiler;

/// The real engine and a compiler with a cache in a temp dir.
struct Setup {
    engine: wasmtime::Engine,
    compiler: Compiler,
    cache: CompileCache,
    runtime: tokio::runtime::Runtime,
    _cache_dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let engine = engine::new_engine(engine::DEFAULT_INSTANCES).expect("engine");
    let linker = engine::new_linker(&engine).expect("linker");
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache = CompileCache::new(Some(cache_dir.path()), &engine);
    let compiler = Compiler::new(engine.clone(), linker, cache.clone(), 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    Setup {
        engine,
        compiler,
        cache,
        runtime,
        _cache_dir: cache_dir,
    }
}

impl Setup {
    fn build(&self, path: &str) -> Arc<Build> {
        let bytes: Arc<[u8]> = std::fs::read(path).expect("guest").into();
        let build = self
            .runtime
            .block_on(self.compiler.prepare(Path::new(path), bytes))
            .expect("prepare");
        Arc::new(build)
    }

    fn version(&self, build: &Arc<Build>, number: u64) -> Arc<Version> {
        Arc::new(Version::new(
            "hello".into(),
            number,
            build.clone(),
            RunConfig {
                env: Arc::from([]),
                request_timeout: Duration::from_secs(30),
                drain_timeout: Duration::from_secs(30),
                memory: 128 << 20,
                max_body: 16 << 20,
                log_rate: 1 << 20,
                max_concurrency: 100,
                outbound: Arc::default(),
                forbidden_outbound: Arc::from([]),
                reuse: 1,
                idle_timeout: Duration::from_secs(1),
            },
            Arc::new(Stats::default()),
            Events::default(),
        ))
    }
}

/// Runs `work` on another thread until the returned guard drops.
fn beside(work: impl Fn() + Send + 'static) -> impl Drop {
    struct Stop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            if let Some(thread) = self.1.take() {
                let _ = thread.join();
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            work();
        }
    });
    Stop(stop, Some(thread))
}

fn request_path(c: &mut Criterion) {
    let setup = setup();
    let build = setup.build(wasmhost_tests::guests::HELLO);
    let project = Arc::new(Project::new(
        ProjectName::parse("hello").expect("valid name"),
        "hello.wasm".into(),
    ));
    project.current.store(Some(setup.version(&build, 1)));
    let registry = Registry::default();
    let router = wasmhost_benches::many_projects(200);

    let mut group = c.benchmark_group("request_path");
    let lookup = || {
        let snapshot = registry.snapshot();
        let found = router.route(black_box(None), black_box("/p150/some/path"));
        black_box((snapshot, found, project.current.load_full()))
    };
    group.bench_function("snapshot_route_version", |b| b.iter(lookup));
    {
        let (project, next) = (project.clone(), setup.version(&build, 2));
        let _swapper = beside(move || project.current.store(Some(next.clone())));
        group.bench_function("snapshot_route_version_while_swapping", |b| b.iter(lookup));
    }
    group.finish();

    let mut group = c.benchmark_group("swap");
    let next = setup.version(&build, 3);
    group.bench_function("store_no_readers", |b| {
        b.iter(|| project.current.store(Some(next.clone())))
    });
    {
        let reader = project.clone();
        let _reader = beside(move || drop(black_box(reader.current.load_full())));
        group.bench_function("store_with_a_reader", |b| {
            b.iter(|| project.current.store(Some(next.clone())))
        });
    }
    group.finish();
}

fn instantiate(c: &mut Criterion) {
    let setup = setup();
    let build = setup.build(wasmhost_tests::guests::HELLO);
    let version = setup.version(&build, 1);
    c.bench_function("instantiate/hello_from_proxy_pre", |b| {
        b.iter(|| {
            setup
                .runtime
                .block_on(invoke::trial_instantiate(&version))
                .expect("instantiates")
        })
    });
}

fn cache_hit(c: &mut Criterion) {
    let setup = setup();
    // Preparing once stores the entry; every load after that is a hit.
    let build = setup.build(wasmhost_tests::guests::HELLO);
    c.bench_function("cache/hit_hello", |b| {
        b.iter(|| match setup.cache.load(&setup.engine, &build.digest) {
            Lookup::Hit(component) => component,
            Lookup::Miss | Lookup::Corrupt(_) => panic!("expected a cache hit"),
        })
    });
}

/// wasmtime's own fast path, for comparison with [`cache_hit`]: mmap an
/// artifact file with `deserialize_file`, trusting its contents. wasmhost
/// reads and checks a checksum first instead (see `cache.rs`).
#[allow(unsafe_code)]
fn deserialize_file(c: &mut Criterion) {
    let setup = setup();
    let bytes = std::fs::read(wasmhost_tests::guests::HELLO).expect("guest");
    let component = wasmtime::component::Component::new(&setup.engine, &bytes).expect("compiles");
    let dir = tempfile::tempdir().expect("temp dir");
    let artifact = dir.path().join("hello.cwasm");
    std::fs::write(&artifact, component.serialize().expect("serializes")).expect("written");
    c.bench_function("cache/deserialize_file_hello_unchecked", |b| {
        b.iter(|| {
            // SAFETY: the file was just written by this engine's `serialize`
            // and nothing else writes to this private temp dir.
            unsafe { wasmtime::component::Component::deserialize_file(&setup.engine, &artifact) }
                .expect("deserializes")
        })
    });
}

fn compile(c: &mut Criterion) {
    let setup = setup();
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for (name, path) in wasmhost_tests::guests::RUST {
        let bytes = std::fs::read(path).expect("guest");
        group.bench_function(*name, |b| {
            b.iter(|| wasmtime::component::Component::new(&setup.engine, &bytes).expect("compiles"))
        });
    }
    group.finish();
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::request_path,
        super::instantiate,
        super::cache_hit,
        super::deserialize_file,
        super::compile
    );
}
criterion_main!(group::benches);
