//! The servers a benchmark runs against, each a real child process on
//! 127.0.0.1:0: the release `wasmhost serve`, `wasmtime serve`, and the native
//! hyper baseline. They are started, watched for readiness and killed on drop
//! by `wasmhost_tests::process`, as the integration tests' hosts are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wasmhost_tests::process::{Process, address_after, wait_until_loaded};

use crate::Error;

/// How long a server may take to print its readiness line.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// A running server process, killed on drop.
pub struct Server {
    process: Process,
    /// Where it serves HTTP.
    pub addr: SocketAddr,
    /// Where its admin API listens (wasmhost only).
    pub admin: Option<SocketAddr>,
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// CPU time (user + system, every thread) the process has used so far.
    pub fn cpu(&self) -> Result<Duration, Error> {
        stat_cpu(&format!("/proc/{}/stat", self.pid()))
    }

    /// CPU time so far of each of the process's request threads (wasmhost's
    /// workers, `wasmhost-wN`, or the native server's, `native-N`), in the
    /// order of their names: how evenly a phase's work was spread.
    pub fn request_thread_cpu(&self) -> Result<Vec<(String, Duration)>, Error> {
        let mut threads = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let task = task?.path();
            // A thread that ended since the listing has no files left.
            let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
                continue;
            };
            let name = name.trim_end().to_string();
            if !(name.starts_with("wasmhost-w") || name.starts_with("native-")) {
                continue;
            }
            if let Ok(cpu) = stat_cpu(&task.join("stat").to_string_lossy()) {
                threads.push((name, cpu));
            }
        }
        threads.sort();
        Ok(threads)
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> Result<u64, Error> {
        crate::rss_kib(self.pid())
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
    let mut command = Command::new(&binary);
    command
        .arg("serve")
        .arg(projects)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .env("RUST_LOG", "warn");
    let mut process = Process::spawn(command).map_err(|err| {
        format!(
            "failed to start {}: {err} (cargo build --release -p wasmhost)",
            binary.display()
        )
    })?;
    let (addr, admin) = wait_until_loaded(&mut process, READY_DEADLINE)?;
    Ok(Server {
        process,
        addr,
        admin: Some(admin),
    })
}

/// Starts this very executable with `flag`, which makes it serve the native
/// hyper baseline on `threads` threads (`native.rs`) instead of running the
/// benchmark; it prints `listening on http://ADDR` and then `ready`.
pub fn start_native(flag: &str, threads: usize) -> Result<Server, Error> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(flag).arg(threads.to_string());
    started(Process::spawn(command)?, |log| {
        log.lines()
            .any(|line| line.starts_with("ready"))
            .then(|| address_after(log, "listening on http://"))
            .flatten()
    })
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

/// Starts `wasmtime serve -Scli` on `component` with `extra` flags, as a
/// user would run it; it prints `Serving HTTP on http://ADDR/` when ready.
pub fn start_wasmtime(binary: &Path, component: &Path, extra: &[&str]) -> Result<Server, Error> {
    let mut command = Command::new(binary);
    command
        .args(["serve", "-Scli", "--addr", "127.0.0.1:0"])
        .args(extra)
        .arg(component)
        .stdout(Stdio::null());
    let process = Process::spawn(command)
        .map_err(|err| format!("failed to start {}: {err}", binary.display()))?;
    started(process, |log| address_after(log, "Serving HTTP on http://"))
}

/// Waits until `ready` finds the server's address in its log.
fn started(
    mut process: Process,
    ready: impl Fn(&str) -> Option<SocketAddr>,
) -> Result<Server, Error> {
    let addr = process.wait_for(READY_DEADLINE, ready)?;
    Ok(Server {
        process,
        addr,
        admin: None,
    })
}

/// User + system CPU time from a `/proc/…/stat` file (a process's or a
/// thread's).
fn stat_cpu(path: &str) -> Result<Duration, Error> {
    let stat = std::fs::read_to_string(path)?;
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
