//! The native hyper baseline: "Hello, world!\n" from plain hyper, with no
//! WebAssembly, on one thread or on as many as wasmhost has request workers.
//!
//! With more than one thread it is set up the way `wasmhost serve --workers
//! N` is: one thread per worker, each with its own current_thread runtime and
//! its own `SO_REUSEPORT` socket on one port, and each pinned to a CPU of its
//! own when the process may use exactly N CPUs. What its second thread adds
//! per request is then what a second core costs any server on this machine
//! (the client shares the cores, and a request whose client runs on the
//! other core crosses caches), against which wasmhost's second worker is
//! read (`docs/performance.md`).

use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustix::thread::CpuSet;
use tokio::net::TcpSocket;

use crate::Error;

/// Pending connections each socket queues, as tokio's `bind` and wasmhost's
/// workers use.
const BACKLOG: u32 = 1024;

/// Pause after a failed `accept`, as wasmhost's workers take.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves until killed, on `threads` threads. Prints `listening on
/// http://ADDR`, then `ready` once every thread's socket listens. Returns an
/// error as soon as any thread stops: the kernel would hand its socket's
/// share of connections to the others, and a "2 threads" phase would
/// measure one.
pub fn serve(threads: usize) -> Result<(), Error> {
    let threads = threads.max(1);
    let sockets = bind(threads)?;
    let addr = sockets[0].local_addr()?;
    let cpus = pin_plan(threads);
    let (report, reports) = std::sync::mpsc::channel();
    for (index, socket) in sockets.into_iter().enumerate() {
        let cpu = cpus.as_ref().map(|cpus| cpus[index]);
        let report = report.clone();
        std::thread::Builder::new()
            .name(format!("native-{index}"))
            .spawn(move || serve_one(index, socket, cpu, &report))?;
    }
    drop(report);
    // Each thread reports once when its socket listens (or why it cannot)
    // and once more if it ever stops.
    let next = || -> Result<Report, Error> {
        reports
            .recv()
            .map_err(|_| "every native server thread ended".into())
    };
    for _ in 0..threads {
        match next()? {
            Report::Listening => {}
            Report::Ended(index, why) => {
                return Err(format!("native server thread {index}: {why}").into());
            }
        }
    }
    eprintln!("listening on http://{addr}");
    eprintln!("ready");
    loop {
        if let Report::Ended(index, why) = next()? {
            return Err(format!("native server thread {index} stopped: {why}").into());
        }
    }
}

/// What a server thread tells [`serve`].
enum Report {
    Listening,
    /// Thread `.0` stopped, or never started, for reason `.1`.
    Ended(usize, String),
}

/// `threads` sockets bound to one loopback port, with `SO_REUSEPORT` when
/// there are several so the kernel spreads connections over them.
fn bind(threads: usize) -> Result<Vec<TcpSocket>, Error> {
    let one = |addr: SocketAddr| -> Result<TcpSocket, Error> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(threads > 1)?;
        socket.bind(addr)?;
        Ok(socket)
    };
    let first = one(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..threads {
        sockets.push(one(addr)?);
    }
    Ok(sockets)
}

/// A CPU for each of `threads` threads when the process may use exactly
/// that many, as wasmhost pins its workers (`front/affinity.rs`); else none.
fn pin_plan(threads: usize) -> Option<Vec<usize>> {
    let allowed = rustix::thread::sched_getaffinity(None).ok()?;
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
        .filter(|cpu| allowed.is_set(*cpu))
        .collect();
    (cpus.len() == threads).then_some(cpus)
}

/// One thread's server: pinned to `cpu` if given, listening on `socket`,
/// answering every request on every connection with the greeting.
fn serve_one(
    index: usize,
    socket: TcpSocket,
    cpu: Option<usize>,
    report: &std::sync::mpsc::Sender<Report>,
) {
    // The loop below never returns: however this thread ends, a panic
    // included, `serve` hears of it when this guard drops.
    let mut ended = Ended {
        index,
        why: "panicked".to_string(),
        report,
    };
    if let Some(cpu) = cpu {
        // Best effort, as for wasmhost's workers: unpinned, the thread runs
        // wherever the scheduler puts it.
        let mut set = CpuSet::new();
        set.set(cpu);
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
    let started = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            // Registering with the reactor needs the runtime's context.
            let listener = runtime.block_on(async { socket.listen(BACKLOG) })?;
            Ok((runtime, listener))
        });
    let (runtime, listener) = match started {
        Ok(started) => started,
        Err(err) => {
            ended.why = format!("failed to build its runtime or to listen: {err}");
            return;
        }
    };
    let _ = ended.report.send(Report::Listening);
    runtime.block_on(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // As wasmhost's workers do (`front/listener.rs`): a
                    // failed accept (out of file descriptors) passes.
                    eprintln!("native-{index}: failed to accept a connection: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
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
    });
}

/// Tells [`serve`] that thread `index` ended, and why, when dropped.
struct Ended<'a> {
    index: usize,
    why: String,
    report: &'a std::sync::mpsc::Sender<Report>,
}

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let why = std::mem::take(&mut self.why);
        let _ = self.report.send(Report::Ended(self.index, why));
    }
}
