//! The load harness: requests/s, latency percentiles and server CPU per
//! request for `wasmhost serve` on the hello component, steady and while a
//! new version is deployed every 100 ms, with a native hyper hello server as
//! the baseline in the same run (same load, same client, same machine).
//!
//! Everything runs on 127.0.0.1. Server CPU comes from `/proc/PID/stat`
//! (user + system ticks of the server process only).
//!
//! Usage: `cargo run --release -p wasmhost-benches --bin load [SECONDS] [CONNECTIONS]`
//! (default 5 s per phase, 32 connections). Writes `target/bench/report.md`
//! and `target/bench/report.json`. Exits non-zero on a correctness failure
//! (a failed request, or a deployed version never observed), never on a time.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A child process killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// CPU time (user + system) the server process has used so far.
    fn cpu(&self) -> Result<Duration, Error> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the `(comm)`: state is 3rd; utime and stime are the 14th and 15th.
        let after = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // The kernel's USER_HZ is 100 on every Linux this runs on.
        Ok(Duration::from_millis(ticks * 10))
    }
}

/// What one phase measured.
struct Phase {
    name: String,
    requests: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu: Duration,
    versions: usize,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index]
    }
    fn cpu_per_request_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("--native-server") {
        return native_server();
    }
    let seconds: u64 = first.map_or(Ok(5), |s| s.parse())?;
    let connections: usize = args.next().map_or(Ok(32), |s| s.parse())?;
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let projects = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let hello = std::fs::read(wasmhost_tests::guests::HELLO)?;
    std::fs::write(projects.path().join("hello.wasm"), &hello)?;
    let echo = std::fs::read(wasmhost_tests::guests::ECHO)?;

    let mut phases = Vec::new();
    let memory;
    {
        let native = start_native()?;
        phases.push(runtime.block_on(load(
            "native hyper (baseline)",
            &native,
            duration,
            connections,
            None,
        ))?);
    }
    {
        let host = start_wasmhost(projects.path(), cache.path())?;
        phases.push(runtime.block_on(load(
            "wasmhost steady",
            &host,
            duration,
            connections,
            None,
        ))?);
        let swaps = (hello.clone(), echo);
        phases.push(runtime.block_on(load(
            "wasmhost swapping every 100 ms",
            &host,
            duration,
            connections,
            Some(swaps),
        ))?);
        memory = runtime.block_on(swap_memory(&host, &hello, MANY_SWAPS))?;
    }
    let (cold, warm, rss_many_projects) = startup(&hello, PROJECTS)?;

    let native_rps = phases[0].rps();
    let native_cpu = phases[0].cpu_per_request_us();
    let steady_p99 = phases[1].percentile(0.99);
    let mut report = "| phase | requests/s | p50 | p99 | p99.9 | server CPU/request | failed | versions seen |\n|---|---|---|---|---|---|---|---|\n".to_string();
    for phase in &phases {
        report.push_str(&format!(
            "| {} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} µs | {} | {} |\n",
            phase.name,
            phase.rps(),
            phase.percentile(0.50).as_secs_f64() * 1e6,
            phase.percentile(0.99).as_secs_f64() * 1e6,
            phase.percentile(0.999).as_secs_f64() * 1e6,
            phase.cpu_per_request_us(),
            phase.failed,
            phase.versions
        ));
    }
    let swap_p99_ratio =
        phases[2].percentile(0.99).as_secs_f64() / steady_p99.as_secs_f64().max(1e-9);
    report.push_str(&format!(
        "\nwasmhost/native: requests/s {:.2}×, CPU per request {:.1}×; p99 swapping/steady {:.2}×\n",
        phases[1].rps() / native_rps,
        phases[1].cpu_per_request_us() / native_cpu.max(1e-9),
        swap_p99_ratio
    ));
    report.push_str(&format!(
        "\n| measure | value |\n|---|---|\n\
         | RSS after 1 swap | {:.1} MiB |\n\
         | RSS after {MANY_SWAPS} more swaps | {:.1} MiB ({:.2}×) |\n\
         | RSS with {PROJECTS} projects loaded | {:.1} MiB |\n\
         | startup with {PROJECTS} projects, cold cache | {:.0} ms |\n\
         | startup with {PROJECTS} projects, warm cache | {:.0} ms |\n",
        memory.0 as f64 / 1024.0,
        memory.1 as f64 / 1024.0,
        memory.1 as f64 / memory.0.max(1) as f64,
        rss_many_projects as f64 / 1024.0,
        cold.as_secs_f64() * 1000.0,
        warm.as_secs_f64() * 1000.0,
    ));
    println!("{report}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.md"), &report)?;
    let raw: Vec<_> = phases
        .iter()
        .map(|p| {
            json!({
                "phase": p.name, "requests": p.requests, "failed": p.failed,
                "seconds": p.elapsed.as_secs_f64(), "rps": p.rps(),
                "p50_us": p.percentile(0.5).as_secs_f64() * 1e6,
                "p99_us": p.percentile(0.99).as_secs_f64() * 1e6,
                "p999_us": p.percentile(0.999).as_secs_f64() * 1e6,
                "cpu_per_request_us": p.cpu_per_request_us(), "versions_seen": p.versions,
            })
        })
        .collect();
    let raw = json!({
        "phases": raw,
        "rss_kib_after_1_swap": memory.0,
        "rss_kib_after_many_swaps": memory.1,
        "many_swaps": MANY_SWAPS,
        "rss_kib_with_projects": rss_many_projects,
        "projects": PROJECTS,
        "startup_ms_cold": cold.as_secs_f64() * 1000.0,
        "startup_ms_warm": warm.as_secs_f64() * 1000.0,
    });
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&raw)?)?;

    // Correctness only: never an absolute time.
    let failed: u64 = phases.iter().map(|p| p.failed).sum();
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    if phases[2].versions < 3 {
        return Err(format!(
            "swapping phase observed only {} versions",
            phases[2].versions
        )
        .into());
    }
    // Generous: allocator slack and caches may grow, a per-swap leak would not stop.
    if memory.1 > memory.0 * 3 {
        return Err(format!(
            "RSS grew from {} KiB to {} KiB over {MANY_SWAPS} swaps",
            memory.0, memory.1
        )
        .into());
    }
    Ok(())
}

/// Swaps in the memory phase; a leak of even a few KiB per swap shows.
const MANY_SWAPS: usize = 500;

/// Projects in the many-projects phase.
const PROJECTS: usize = 200;

/// RSS (KiB) after one swap, then after `swaps` more, alternating two builds.
async fn swap_memory(host: &Server, hello: &[u8], swaps: usize) -> Result<(u64, u64), Error> {
    let admin = host.admin.ok_or("wasmhost printed no admin address")?;
    let builds = [
        wasmhost_benches::variant(hello, 1_000_001),
        wasmhost_benches::variant(hello, 1_000_002),
    ];
    wasmhost_benches::deploy(admin, "hello", builds[0].clone()).await?;
    let after_one = wasmhost_benches::rss_kib(host.child.id())?;
    for swap in 0..swaps {
        wasmhost_benches::deploy(admin, "hello", builds[(swap + 1) % 2].clone()).await?;
    }
    Ok((after_one, wasmhost_benches::rss_kib(host.child.id())?))
}

/// Startup time to readiness with `count` distinct projects, with a cold
/// and then a warm compile cache, and the RSS once they are loaded.
fn startup(hello: &[u8], count: usize) -> Result<(Duration, Duration, u64), Error> {
    let projects = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    for index in 0..count {
        std::fs::write(
            projects.path().join(format!("p{index}.wasm")),
            wasmhost_benches::variant(hello, index),
        )?;
    }
    let started = Instant::now();
    let host = start_wasmhost(projects.path(), cache.path())?;
    let cold = started.elapsed();
    let rss = wasmhost_benches::rss_kib(host.child.id())?;
    drop(host);
    let started = Instant::now();
    let host = start_wasmhost(projects.path(), cache.path())?;
    let warm = started.elapsed();
    drop(host);
    Ok((cold, warm, rss))
}

fn start_wasmhost(projects: &std::path::Path, cache: &std::path::Path) -> Result<Server, Error> {
    let binary = std::env::var("WASMHOST").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/wasmhost").into()
    });
    let child = Command::new(&binary)
        .arg("serve")
        .arg(projects)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--no-watch",
            "--cache-dir",
        ])
        .arg(cache)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| {
            format!("failed to start {binary}: {err} (cargo build --release -p wasmhost)")
        })?;
    ready(child)
}

fn start_native() -> Result<Server, Error> {
    let child = Command::new(std::env::current_exe()?)
        .arg("--native-server")
        .stderr(Stdio::piped())
        .spawn()?;
    ready(child)
}

/// Waits for the readiness lines every server here prints on stderr.
fn ready(mut child: Child) -> Result<Server, Error> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let (mut addr, mut admin) = (None, None);
    for line in lines.by_ref() {
        let line = line?;
        if let Some(a) = line.strip_prefix("listening on http://") {
            addr = Some(a.trim().parse()?);
        }
        if let Some(a) = line.strip_prefix("admin on http://") {
            admin = Some(a.trim().parse()?);
        }
        if line.starts_with("ready") || admin.is_some() {
            break;
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Server {
        child,
        addr: addr.ok_or("server printed no address")?,
        admin,
    })
}

/// A native hyper server answering "Hello, world!\n" on a current_thread
/// runtime: the physical limit of this machine's HTTP stack.
fn native_server() -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("listening on http://{}", listener.local_addr()?);
        eprintln!("ready");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"Hello, world!\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Runs `connections` keep-alive clients against `server` for `duration`;
/// with `swaps`, deploys the two builds alternately every 100 ms meanwhile.
async fn load(
    name: &str,
    server: &Server,
    duration: Duration,
    connections: usize,
    swaps: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<Phase, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu_before = server.cpu()?;
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (addr, stop, failed) = (server.addr, stop.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut versions = std::collections::BTreeSet::new();
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let request = Request::get("/hello")
                    .header("host", "localhost")
                    .body(Empty::<Bytes>::new())?;
                let ok = match sender.ready().await {
                    Ok(()) => match sender.send_request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            if let Some(v) = response
                                .headers()
                                .get("wasmhost-version")
                                .and_then(|v| v.to_str().ok())
                            {
                                versions.insert(v.to_string());
                            }
                            response.into_body().collect().await.is_ok() && status.is_success()
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if ok {
                    latencies.push(sent.elapsed());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            Ok::<_, Error>((latencies, versions))
        }));
    }
    if let (Some((a, b)), Some(admin)) = (&swaps, server.admin) {
        let mut turn = 0usize;
        while started.elapsed() < duration {
            let bytes = if turn.is_multiple_of(2) {
                b.clone()
            } else {
                a.clone()
            };
            wasmhost_benches::deploy(admin, "hello", bytes).await?;
            turn += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        tokio::time::sleep(duration).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    for client in clients {
        let (mut l, v) = client.await??;
        latencies.append(&mut l);
        versions.extend(v);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Phase {
        name: name.to_string(),
        requests: latencies.len() as u64,
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        cpu: server.cpu()?.saturating_sub(cpu_before),
        versions: versions.len(),
        latencies,
    })
}
