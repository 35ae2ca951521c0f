//! Starting a server as a child process, for the integration tests and the
//! benchmarks alike: its stderr is collected on a thread (so the server never
//! blocks on a full pipe), readiness is found by polling that log (and a
//! wasmhost's `/readyz`), and the process is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How much of a child's stderr is kept; past it the older half is dropped,
/// so a long benchmark run cannot grow the log without bound.
const MAX_LOG: usize = 8 << 20;

/// A running child process with its stderr collected; killed on drop.
pub struct Process {
    child: Child,
    /// Everything the child printed to stderr so far (the last [`MAX_LOG`] bytes).
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `command` with stdin closed and stderr collected.
    pub fn spawn(mut command: Command) -> std::io::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    if log.len() > MAX_LOG {
                        let half = log.ceil_char_boundary(log.len() / 2);
                        log.drain(..half);
                    }
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Ok(Self { child, log })
    }

    /// Everything the process printed to stderr so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls the log until `find` returns something, and returns it. Fails,
    /// with the log, when the process exits first or `deadline` passes.
    pub fn wait_for<T>(
        &mut self,
        deadline: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        let started = Instant::now();
        loop {
            let log = self.log();
            if let Some(found) = find(&log) {
                return Ok(found);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}; its output was:\n{log}"));
            }
            if started.elapsed() > deadline {
                return Err(format!(
                    "not ready within {deadline:?}; its output was:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The address in the first line of `log` that starts with `prefix`
/// (e.g. `listening on http://`), or whose JSON `message` does
/// (`--log-format json`), if it parses.
pub fn address_after(log: &str, prefix: &str) -> Option<SocketAddr> {
    let json_prefix = format!("\"message\":\"{prefix}");
    let rest = log.lines().find_map(|line| {
        line.strip_prefix(prefix).or_else(|| {
            let start = line.find(&json_prefix)? + json_prefix.len();
            line[start..].split('"').next()
        })
    })?;
    rest.trim().trim_end_matches('/').parse().ok()
}

/// Where a `wasmhost serve` listens, once it has printed both address
/// lines: the project listener and the admin listener. Projects may still be
/// loading then; [`wait_until_loaded`] waits for them.
pub fn wasmhost_listening(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    Some((
        address_after(log, "listening on http://")?,
        address_after(log, "admin on http://")?,
    ))
}

/// Waits until a `wasmhost serve` listens and has loaded every project it
/// found at start-up (its `GET /readyz` answers 200); returns its project
/// and admin addresses.
pub fn wait_until_loaded(
    process: &mut Process,
    deadline: Duration,
) -> Result<(SocketAddr, SocketAddr), String> {
    let started = Instant::now();
    let (addr, admin) = process.wait_for(deadline, wasmhost_listening)?;
    let left = deadline.saturating_sub(started.elapsed());
    process.wait_for(left, |_| ready(admin).then_some(()))?;
    Ok((addr, admin))
}

/// Whether `GET /readyz` on a wasmhost admin listener answers 200.
pub fn ready(admin: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    stream.write_all(request).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200 ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_both_lines() {
        let log = "loading\nlistening on http://127.0.0.1:4000\n";
        assert_eq!(wasmhost_listening(log), None);
        let log = format!("{log}admin on http://127.0.0.1:4001\n");
        let (http, admin) = wasmhost_listening(&log).expect("both lines");
        assert_eq!((http.port(), admin.port()), (4000, 4001));
        assert_eq!(
            address_after(
                "Serving HTTP on http://127.0.0.1:9/",
                "Serving HTTP on http://"
            ),
            "127.0.0.1:9".parse().ok()
        );
    }
}
