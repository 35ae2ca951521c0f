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

/// Sends `bytes` as `project` to the admin API at `admin` (`PUT
/// /projects/NAME`) and returns the status and body of the answer.
pub async fn put(
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
    use super::median;

    #[test]
    fn the_median_is_the_middle_value_whatever_the_order() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [24.0, 29.3, 22.7]), 24.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
