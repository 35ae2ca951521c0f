//! Shared set-up for wasmhost's benchmarks: the servers under test, the
//! swap-latency measurement, and the helpers every benchmark uses.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use wasmhost::model::router::{Router, RouterBuilder};

pub mod native;
pub mod plot;
pub mod process;
pub mod swap_latency;
pub mod wrk;

/// The error type of the benchmark binaries: anything, with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The `p` quantile (0.0–1.0) of `sorted`, nearest-rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (sorting them); for an even count, the mean of
/// the middle two; NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Where within each `interval` connection `index` of `connections` sends,
/// when each sends once per `interval`: evenly staggered, so that together
/// they offer a steadier load. Started together, every connection
/// sent at the same instant: at 10,000 requests/s over 32 connections, a
/// burst of 32 requests every 3.2 ms, which one wasmhost worker answered at
/// a p50 of about 800 µs (about 350 µs staggered). tokio's timer fires on
/// whole milliseconds, so the requests due within one millisecond still
/// leave together: at that rate about 10 (`docs/performance.md`).
pub fn stagger(interval: Duration, index: usize, connections: usize) -> Duration {
    interval.mul_f64(index as f64 / connections.max(1) as f64)
}

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

/// How long a benchmark waits for one deploy to answer. The admin API
/// answers once the new version is live, and under a saturating load a
/// compile runs on idle CPU until the host raises it (`--compile-patience`,
/// 30 s of starvation): the 18 MB Python example took up to 390 s in the
/// harness on the 2-core AMD EPYC VM of 2026-12-06. Past this, the run fails
/// with a message instead of hanging until CI's own limit.
pub const DEPLOY_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// Sends `bytes` as `project` to the admin API at `admin` (`PUT
/// /projects/NAME`) and returns the status and body of the answer; fails
/// past [`DEPLOY_DEADLINE`].
pub async fn put(
    admin: SocketAddr,
    project: &str,
    bytes: Vec<u8>,
) -> Result<(hyper::StatusCode, Bytes), Error> {
    put_within(DEPLOY_DEADLINE, admin, project, bytes).await
}

/// [`put`], failing past `deadline`.
async fn put_within(
    deadline: Duration,
    admin: SocketAddr,
    project: &str,
    bytes: Vec<u8>,
) -> Result<(hyper::StatusCode, Bytes), Error> {
    let size = bytes.len();
    tokio::time::timeout(deadline, put_unbounded(admin, project, bytes))
        .await
        .map_err(|_| {
            format!(
                "deploying {size} bytes as project {project} got no answer within {:?}",
                deadline
            )
        })?
}

async fn put_unbounded(
    admin: SocketAddr,
    project: &str,
    bytes: Vec<u8>,
) -> Result<(hyper::StatusCode, Bytes), Error> {
    let stream = tokio::net::TcpStream::connect(admin).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::put(format!("/projects/{project}"))
        .header("host", "localhost")
        .header("content-type", "application/wasm")
        .body(Full::new(Bytes::from(bytes)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// Deploys `bytes` as `project` through the admin API at `admin`, and fails
/// unless the answer is a success.
pub async fn deploy(admin: SocketAddr, project: &str, bytes: Vec<u8>) -> Result<(), Error> {
    let (status, body) = put(admin, project, bytes).await?;
    if !status.is_success() {
        return Err(format!(
            "deploy answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(())
}

/// `base` with a component-level custom section holding `n`: a component that
/// behaves the same but has a different digest, so it is a new version and a
/// compile-cache miss.
pub fn variant(base: &[u8], n: usize) -> Vec<u8> {
    let name = b"wasmhost-bench";
    let mut content = leb128(name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(&n.to_le_bytes());
    let mut bytes = base.to_vec();
    bytes.push(0); // custom section id
    bytes.extend(leb128(content.len()));
    bytes.extend(content);
    bytes
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Resident memory of process `pid`, in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS")?
        .parse()?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{median, put_within, stagger};

    #[test]
    fn the_median_is_the_middle_value_whatever_the_order() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [24.0, 29.3, 22.7]), 24.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn staggered_connections_send_evenly_spread_over_one_interval() {
        let interval = Duration::from_micros(3200);
        let offsets: Vec<Duration> = (0..32).map(|i| stagger(interval, i, 32)).collect();
        assert_eq!(offsets[0], Duration::ZERO);
        for pair in offsets.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap.abs_diff(Duration::from_micros(100)) < Duration::from_nanos(10),
                "{offsets:?}"
            );
        }
        assert!(offsets[31] < interval);
        assert_eq!(stagger(interval, 0, 0), Duration::ZERO);
    }

    /// A deploy whose admin API never answers fails the run with a message
    /// naming it, instead of hanging it: a listener that accepts and stays
    /// silent.
    #[tokio::test]
    async fn a_deploy_that_never_answers_fails_past_its_deadline() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin = silent.local_addr().expect("address");
        let held = tokio::spawn(async move {
            let (stream, _) = silent.accept().await.expect("accept");
            std::future::pending::<()>().await;
            drop(stream);
        });
        let err = put_within(Duration::from_millis(200), admin, "hello", vec![0; 8])
            .await
            .expect_err("no answer must fail");
        assert_eq!(
            err.to_string(),
            "deploying 8 bytes as project hello got no answer within 200ms"
        );
        held.abort();
    }
}
