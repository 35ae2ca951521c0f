//! `wrk`, the out-of-process load generator, against a server: a second
//! opinion on the in-process client, with its own threads and none of our
//! client code in the measurement.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::process::Server;

/// What one `wrk` run measured.
pub struct Run {
    /// The server's name in the report.
    pub name: String,
    /// Completed requests per second, as wrk counts them.
    pub rps: f64,
    /// Median latency, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// Server CPU (user + system) per completed request, in microseconds.
    pub cpu_per_request_us: f64,
    /// Requests that failed: non-2xx answers, socket errors and timeouts.
    pub errors: u64,
}

/// `wrk` on PATH.
pub fn find() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("wrk"))
        .find(|path| path.is_file())
}

/// Runs `wrk` with 2 threads and `connections` keep-alive connections for
/// `duration` against `server`'s `/hello`, after a one-second warm-up.
pub fn run(
    wrk: &Path,
    name: &str,
    server: &Server,
    duration: Duration,
    connections: usize,
) -> Result<Run, Error> {
    let url = format!("http://{}/hello", server.addr);
    let wrk_for = |seconds: u64| -> Result<String, Error> {
        let output = Command::new(wrk)
            .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
            .args(["--latency", "-H", "host: localhost", &url])
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "wrk failed against {name}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    wrk_for(1)?;
    let cpu_before = server.cpu()?;
    let report = wrk_for(duration.as_secs().max(1))?;
    let cpu = server.cpu()?.saturating_sub(cpu_before);
    let requests = field(&report, "requests in", 0)?;
    Ok(Run {
        name: name.to_string(),
        rps: field(&report, "Requests/sec:", 1)?,
        p50_us: latency(&report, "50%")?,
        p99_us: latency(&report, "99%")?,
        cpu_per_request_us: cpu.as_secs_f64() * 1e6 / requests.max(1.0),
        errors: errors(&report),
    })
}

/// The number at whitespace position `index` of the line containing `needle`.
fn field(report: &str, needle: &str, index: usize) -> Result<f64, Error> {
    report
        .lines()
        .find(|line| line.contains(needle))
        .and_then(|line| line.split_whitespace().nth(index))
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| format!("no `{needle}` figure in wrk's report:\n{report}").into())
}

/// A latency percentile line of `--latency` (`99%  1.23ms`), in microseconds.
fn latency(report: &str, percentile: &str) -> Result<f64, Error> {
    let value = report
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(percentile))
        .map(str::trim)
        .ok_or_else(|| format!("no {percentile} latency in wrk's report:\n{report}"))?;
    let (number, scale) = if let Some(us) = value.strip_suffix("us") {
        (us, 1.0)
    } else if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1e3)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1e6)
    } else {
        return Err(format!("unreadable latency `{value}` in wrk's report").into());
    };
    Ok(number.parse::<f64>()? * scale)
}

/// Failed requests in wrk's report: non-2xx/3xx answers and socket errors.
fn errors(report: &str) -> u64 {
    let mut errors = 0;
    for line in report.lines().map(str::trim) {
        if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += count.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(kinds) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += kinds
                .split(',')
                .filter_map(|kind| kind.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 3s test @ http://127.0.0.1:1/hello
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   610.12us  300.00us   9.10ms   90.00%
  Latency Distribution
     50%  512.00us
     75%  700.00us
     90%    1.00ms
     99%    2.50ms
  150000 requests in 3.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  50000.00
Transfer/sec:      6.67MB
";

    #[test]
    fn reads_wrks_report() {
        assert_eq!(field(REPORT, "requests in", 0).ok(), Some(150_000.0));
        assert_eq!(field(REPORT, "Requests/sec:", 1).ok(), Some(50_000.0));
        assert_eq!(latency(REPORT, "50%").ok(), Some(512.0));
        assert_eq!(latency(REPORT, "99%").ok(), Some(2_500.0));
        assert_eq!(errors(REPORT), 7);
    }
}
