//! Swap latency: from the end of a file write (or from the deploy call) to
//! the first response served by the new version, p50/p99 over many swaps,
//! for a compile-cache miss and a cache hit.
//!
//! Runs the release `wasmhost serve` (path in `WASMHOST`, default
//! `target/release/wasmhost`) on a temp projects folder on 127.0.0.1. Every
//! swap writes different bytes: the hello component plus a custom section
//! holding the swap number, which changes the digest but not the behaviour.
//!
//! Usage: `cargo run --release -p wasmhost-benches --bin swap-latency [SWAPS]`

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// The debounce the host runs with; subtracted from file-write latencies.
const DEBOUNCE: Duration = Duration::from_millis(100);

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let swaps: usize = std::env::args().nth(1).map_or(Ok(20), |n| n.parse())?;
    let binary = std::env::var("WASMHOST").unwrap_or_else(|_| "target/release/wasmhost".into());
    let projects = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let hello = std::fs::read(wasmhost_tests::guests::HELLO)?;
    let component = projects.path().join("app/app.wasm");
    std::fs::create_dir_all(component.parent().ok_or("no parent")?)?;
    std::fs::write(&component, wasmhost_benches::variant(&hello, 0))?;

    let mut child = Command::new(&binary)
        .args(["serve", projects.path().to_str().ok_or("path")?, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--debounce", &format!("{}ms", DEBOUNCE.as_millis()), "--keep-versions", "1", "--cache-dir"])
        .arg(cache.path())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("failed to start {binary}: {err} (build it with `cargo build --release -p wasmhost`)"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let _host = Host(child);
    let (mut http, mut admin) = (None, None);
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(addr) = line.strip_prefix("listening on http://") {
            http = Some(addr.parse::<SocketAddr>()?);
        }
        if let Some(addr) = line.strip_prefix("admin on http://") {
            admin = Some(addr.parse::<SocketAddr>()?);
            break;
        }
    }
    let (http, admin) = (http.ok_or("no listen line")?, admin.ok_or("no admin line")?);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut version = 1;
        let mut rows = Vec::new();
        // Phase 1 writes never-seen bytes (cache miss); phase 2 writes the
        // same bytes again (cache hit: keep-versions 1 leaves only the cache).
        for (label, offset) in [("cache miss", 1), ("cache hit", 1)] {
            let mut from_write = Vec::new();
            for swap in 0..swaps {
                let bytes = wasmhost_benches::variant(&hello, offset + swap);
                let tmp = component.with_file_name(".app.wasm.tmp");
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &component)?;
                let written = Instant::now();
                version += 1;
                wait_for_version(http, version).await?;
                from_write.push(written.elapsed().saturating_sub(DEBOUNCE));
            }
            rows.push((
                format!("file write → first response ({label}, debounce subtracted)"),
                from_write,
            ));
        }
        let mut from_deploy = Vec::new();
        for swap in 0..swaps {
            let bytes = wasmhost_benches::variant(&hello, 10_000 + swap);
            let started = Instant::now();
            wasmhost_benches::deploy(admin, "app", bytes)
                .await
                .map_err(|err| err.to_string())?;
            version += 1;
            wait_for_version(http, version).await?;
            from_deploy.push(started.elapsed());
        }
        rows.push((
            "deploy call → first response (cache miss)".into(),
            from_deploy,
        ));

        println!("| swap path | swaps | p50 | p99 |\n|---|---|---|---|");
        for (label, mut samples) in rows {
            samples.sort();
            println!(
                "| {label} | {} | {:.1} ms | {:.1} ms |",
                samples.len(),
                ms(percentile(&samples, 0.50)),
                ms(percentile(&samples, 0.99))
            );
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Polls until a response carries `wasmhost-version: version` (30 s at most).
async fn wait_for_version(
    addr: SocketAddr,
    version: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sender.ready().await?;
        let request = Request::get("/app")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let seen = response
            .headers()
            .get("wasmhost-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        response.into_body().collect().await?;
        if seen == Some(version) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("v{version} never served (last saw {seen:?})").into());
        }
    }
}
