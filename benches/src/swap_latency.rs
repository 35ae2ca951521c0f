//! Swap latency: from the end of a file write (or from the deploy call) to
//! the first response served by the new version, over many swaps, for a
//! compile-cache miss and a cache hit.
//!
//! Every swap writes different bytes: the hello component plus a custom
//! section holding the swap number, which changes the digest but not the
//! behaviour.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::Error;
use crate::process::start_wasmhost;

/// The debounce the host runs with here; subtracted from file-write latencies,
/// since it is a setting (`--debounce`), not work.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Pause between polls for the new version: the resolution of the figures.
/// Polling back to back would be a load of its own, and compiles run at the
/// lowest CPU priority, so it would measure how long the compile waits for
/// that load rather than how long a change takes to go live.
const POLL: Duration = Duration::from_millis(1);

/// One way of swapping, and how long each swap took, sorted.
pub struct Row {
    /// What was measured.
    pub label: String,
    /// One sample per swap, shortest first.
    pub samples: Vec<Duration>,
}

/// The rows as a markdown table: path, swaps, p50, p99.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("| swap path | swaps | p50 | p99 |\n|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} ms | {:.1} ms |\n",
            row.label,
            row.samples.len(),
            crate::percentile(&row.samples, 0.50).as_secs_f64() * 1e3,
            crate::percentile(&row.samples, 0.99).as_secs_f64() * 1e3,
        ));
    }
    out
}

/// Starts a watching host on a temp folder and measures `swaps` swaps each
/// way: file write with a cache miss, the same writes again (cache hits:
/// `--keep-versions 1` leaves only the cache), and deploy calls.
pub async fn measure(hello: &[u8], swaps: usize) -> Result<Vec<Row>, Error> {
    let projects = tempfile::tempdir()?;
    let cache = tempfile::tempdir()?;
    let component = projects.path().join("app/app.wasm");
    std::fs::create_dir_all(projects.path().join("app"))?;
    std::fs::write(&component, crate::variant(hello, 0))?;
    let debounce = format!("{}ms", DEBOUNCE.as_millis());
    let host = start_wasmhost(
        projects.path(),
        cache.path(),
        &["--debounce", &debounce, "--keep-versions", "1"],
    )?;
    let admin = host.admin.ok_or("wasmhost printed no admin address")?;

    let mut version = 1;
    let mut rows = Vec::new();
    for label in ["cache miss", "cache hit"] {
        let mut samples = Vec::new();
        for swap in 0..swaps {
            let tmp = component.with_file_name(".app.wasm.tmp");
            std::fs::write(&tmp, crate::variant(hello, 1 + swap))?;
            std::fs::rename(&tmp, &component)?;
            let written = Instant::now();
            version += 1;
            wait_for_version(host.addr, version).await?;
            samples.push(written.elapsed().saturating_sub(DEBOUNCE));
        }
        rows.push(Row {
            label: format!("file write → first response ({label}, debounce subtracted)"),
            samples,
        });
    }
    let mut samples = Vec::new();
    for swap in 0..swaps {
        let bytes = crate::variant(hello, 10_000 + swap);
        let started = Instant::now();
        crate::deploy(admin, "app", bytes).await?;
        version += 1;
        wait_for_version(host.addr, version).await?;
        samples.push(started.elapsed());
    }
    rows.push(Row {
        label: "deploy call → first response (cache miss)".into(),
        samples,
    });
    for row in &mut rows {
        row.samples.sort();
    }
    Ok(rows)
}

/// Polls until a response carries `wasmhost-version: version` (30 s at most).
async fn wait_for_version(addr: SocketAddr, version: u64) -> Result<(), Error> {
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
        tokio::time::sleep(POLL).await;
    }
}
