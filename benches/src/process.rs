//! The servers a benchmark runs against, each a real child process on
//! 127.0.0.1:0: the release `wasmhost serve`, `wasmtime serve`, and the native
//! hyper baseline. Each is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::Error;

/// A running server process, killed on drop.
pub struct Server {
    child: Child,
    /// Where it serves HTTP.
    pub addr: SocketAddr,
    /// Where its admin API listens (wasmhost only).
    pub admin: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system, every thread) the process has used so far.
    pub fn cpu(&self) -> Result<Duration, Error> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // The fields after `(comm)` start with the state; utime and stime are
        // the 14th and 15th fields of the line, so the 12th and 13th here.
        let after = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |index: usize| -> Result<u64, Error> {
            Ok(fields.get(index).ok_or("short /proc stat")?.parse()?)
        };
        // USER_HZ is 100 on every Linux this runs on.
        Ok(Duration::from_millis((field(11)? + field(12)?) * 10))
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> Result<u64, Error> {
        crate::rss_kib(self.child.id())
    }
}

/// The release wasmhost binary: `WASMHOST`, or `target/release/wasmhost`.
pub fn wasmhost_binary() -> PathBuf {
    std::env::var_os("WASMHOST").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/wasmhost"),
        PathBuf::from,
    )
}

/// Starts `wasmhost serve` on `projects` with its own compile cache, on
/// loopback ports, with `extra` flags, and waits until it is ready.
pub fn start_wasmhost(projects: &Path, cache: &Path, extra: &[&str]) -> Result<Server, Error> {
    let binary = wasmhost_binary();
    let child = Command::new(&binary)
        .arg("serve")
        .arg(projects)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| {
            format!(
                "failed to start {}: {err} (cargo build --release -p wasmhost)",
                binary.display()
            )
        })?;
    ready(child)
}

/// Starts this very executable with `flag`, which makes it serve the native
/// hyper baseline instead of running the benchmark.
pub fn start_native(flag: &str) -> Result<Server, Error> {
    let child = Command::new(std::env::current_exe()?)
        .arg(flag)
        .stderr(Stdio::piped())
        .spawn()?;
    ready(child)
}

/// The `wasmtime` binary to compare with: `WASMTIME`, else `wasmtime` on PATH.
pub fn find_wasmtime() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WASMTIME") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("wasmtime"))
        .find(|path| path.is_file())
}

/// `wasmtime --version`, to name the baseline in the report.
pub fn wasmtime_version(binary: &Path) -> Result<String, Error> {
    let output = Command::new(binary).arg("--version").output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Starts `wasmtime serve -Scli` on `component`, as a user would run it.
pub fn start_wasmtime(binary: &Path, component: &Path) -> Result<Server, Error> {
    let child = Command::new(binary)
        .args(["serve", "-Scli", "--addr", "127.0.0.1:0"])
        .arg(component)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("failed to start {}: {err}", binary.display()))?;
    ready(child)
}

/// Reads the child's stderr up to its readiness line, keeps draining it on a
/// thread (so the server never blocks on a full pipe), and returns the handle.
///
/// Recognized lines: wasmhost's `listening on http://ADDR` and `admin on
/// http://ADDR` (the last one it prints), wasmtime's `Serving HTTP on
/// http://ADDR/`, and `ready` from the native server.
fn ready(mut child: Child) -> Result<Server, Error> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let (mut addr, mut admin) = (None, None);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(a) = line.strip_prefix("listening on http://") {
            addr = Some(a.trim().parse()?);
        }
        if let Some(a) = line.strip_prefix("admin on http://") {
            admin = Some(a.trim().parse()?);
            break;
        }
        if let Some(a) = line.strip_prefix("Serving HTTP on http://") {
            addr = Some(a.trim().trim_end_matches('/').parse()?);
            break;
        }
        if line.starts_with("ready") {
            break;
        }
        seen.push(line);
    }
    std::thread::spawn(move || lines.for_each(drop));
    let server = Server {
        child,
        addr: addr.ok_or_else(|| {
            format!(
                "the server printed no address; its output was:\n{}",
                seen.join("\n")
            )
        })?,
        admin,
    };
    Ok(server)
}
