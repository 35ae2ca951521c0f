//! The request workers: one thread per core, each with its own
//! current_thread runtime and its own listening socket on the project port.
//!
//! A worker keeps the single-thread path a request always had: its
//! connection, its guest (polled on the connection's task first, then on a
//! task of its own if it waits) and its instance stay on the worker's thread,
//! unless the guest computes for 2 ms and moves to the worker's slow lane.
//! No task is handed between workers. Each worker is pinned to a CPU of its
//! own when the process may use exactly that many CPUs (`--pin-workers`,
//! `affinity.rs`). What workers share is only what a request
//! touches through atomics: the registry (`arc_swap` loads), its version's
//! admission word and its project's counters, and the engine's instance pool,
//! which wasmtime 48 shards per core.
//!
//! **One `SO_REUSEPORT` socket per worker, not one socket shared by all.**
//! Measured with `wrk`, 16 connections, 2 workers, 5 runs each
//! (`docs/performance.md`): with one shared socket, every new connection
//! woke both workers and whichever called `accept` first took it, and the
//! first awake took a burst of connections whole. In 3 of 5 runs one worker
//! got about 88 % of the CPU, which leaves the other cores idle. With a
//! socket per worker the kernel spreads connections by a hash of their
//! addresses: every run was within 6 % of even, and no idle worker is woken
//! for a connection it does not get. The hash ignores how busy a worker is,
//! which matters little here: a guest that computes for long moves to its
//! worker's slow lane (`slow_lane.rs`), so no worker stays stuck. Only
//! processes of the same user may join a port's group, and only while it has
//! more than one socket: with `--workers 1` the option is never set. That is
//! an exposure a plain socket does not have: another program of the same
//! user could take a share of the connections by binding the port with
//! `SO_REUSEPORT`. Run wasmhost as a user of its own.
//!
//! Per worker: its runtime, its socket and accept loop, its slow lane
//! (`slow_lane.rs`) and its shard of every version's idle instances
//! (`engine/idle_shards.rs`), so an instance stays on one core (each found
//! by `engine/worker.rs`). Shared: the
//! connection cap (one semaphore per listener, so `--max-connections`
//! bounds the listener, not each worker), the epoch
//! ticker (one atomic increment per millisecond serves any number of
//! workers), the compile threads (off the request path, bounded by
//! `--max-compiles`) and everything on the main thread: the admin API, the
//! swap pipeline, the watcher and the drains.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::engine::{faults, worker};
use crate::front::connection::ConnectionLimits;
use crate::front::{affinity, listener};

/// The request workers, running until the shutdown signal and their drain.
pub(crate) struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Whether each worker was pinned to a CPU of its own.
    pinned: bool,
    /// Receives a worker's index when its thread ends, however it ends.
    ended: mpsc::UnboundedReceiver<usize>,
}

/// Reports its worker's end when dropped: on return and on a panic alike.
struct Ended {
    index: usize,
    to: mpsc::UnboundedSender<usize>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.to.send(self.index);
    }
}

/// How many workers `wasmhost serve` starts when not told: one per CPU the
/// process may use. The standard library reads the affinity mask and the
/// cgroup CPU quota, so a container limited to 4 CPUs gets 4 workers on a
/// 64-core machine.
pub(crate) fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Binds `count` sockets to `addr` in one `SO_REUSEPORT` group, one per
/// worker. Port 0 picks a free port for the first; the others join it.
///
/// The first socket is bound before `SO_REUSEPORT` is set on it, so a port
/// that anything else holds, another wasmhost's group included, fails as
/// "address already in use" instead of quietly sharing its traffic. The
/// option is set before `listen`, when the kernel forms the group, so the
/// other workers' sockets can join.
pub(crate) fn bind(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr, Group::Start { open: count > 1 })
        .with_context(|| format!("failed to bind {addr}"))?;
    let bound = first
        .local_addr()
        .context("failed to read the bound address")?;
    let mut sockets = vec![first];
    for _ in 1..count.max(1) {
        sockets.push(bind_one(bound, Group::Join).with_context(|| {
            format!("failed to bind another request worker's socket to {bound}")
        })?);
    }
    Ok(sockets)
}

/// How a socket relates to the port's `SO_REUSEPORT` group.
#[derive(Clone, Copy)]
enum Group {
    /// The first socket: bound alone, so a port in use fails. `open`: set
    /// `SO_REUSEPORT` after binding, so the other workers can join. With one
    /// worker it stays unset, and no other process of the user can join.
    Start { open: bool },
    /// Another worker's socket, joining the group the first one opened.
    Join,
}

/// One non-blocking listening socket on `addr`, with `SO_REUSEADDR` (as
/// tokio's `bind` sets it, so a restart does not wait out TIME_WAIT) and
/// `SO_REUSEPORT` as `group` says.
fn bind_one(addr: SocketAddr, group: Group) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_port(matches!(group, Group::Join))?;
    socket.bind(&addr.into())?;
    if matches!(group, Group::Start { open: true }) {
        socket.set_reuse_port(true)?;
    }
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Pending connections each socket queues before the kernel refuses more,
/// as tokio's `bind` uses.
const BACKLOG: i32 = 1024;

impl Workers {
    /// Starts one worker per socket of [`bind`], each serving `handler`
    /// until `stop` turns `true`; then each stops accepting and drains its
    /// connections for up to `grace`. With `pin`, each worker is pinned to
    /// a CPU of its own when the process may use exactly that many
    /// (`affinity.rs`). Fails if a worker's runtime or thread cannot be
    /// made; `wasmhost serve` then exits, and with it any worker already
    /// started.
    pub(crate) fn start<H, F>(
        sockets: Vec<std::net::TcpListener>,
        handler: H,
        stop: &watch::Receiver<bool>,
        grace: Duration,
        limits: ConnectionLimits,
        pin: bool,
    ) -> anyhow::Result<Self>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<HyperOutgoingBody>> + Send + 'static,
    {
        let slots = listener::slots(limits);
        let cpus = if pin {
            affinity::plan(sockets.len())
        } else {
            None
        };
        let mut ready = Vec::with_capacity(sockets.len());
        for (index, socket) in sockets.into_iter().enumerate() {
            let runtime = crate::runtime::build_with(affinity::unpin_this_thread)
                .with_context(|| format!("failed to build request worker {index}'s runtime"))?;
            // Registered with the worker's own reactor, here, so a failure
            // stops start-up instead of leaving one worker silently idle.
            let socket = {
                let _entered = runtime.enter();
                tokio::net::TcpListener::from_std(socket).with_context(|| {
                    format!("failed to register the listening socket with request worker {index}")
                })?
            };
            ready.push((index, socket, runtime));
        }
        let (report, ended) = mpsc::unbounded_channel();
        let mut threads = Vec::with_capacity(ready.len());
        for (index, socket, runtime) in ready {
            let (handler, slots) = (handler.clone(), slots.clone());
            let cpu = cpus.as_ref().and_then(|cpus| cpus.get(index).copied());
            let mut stop = stop.clone();
            let ended = Ended {
                index,
                to: report.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("wasmhost-w{index}"))
                .spawn(move || {
                    let _ended = ended;
                    if let Some(cpu) = cpu {
                        affinity::pin_this_thread(cpu);
                    }
                    // Its slow lane, its shard of idle instances and its
                    // page-fault count all go by this.
                    worker::become_worker(index);
                    faults::start_counting();
                    runtime.block_on(async move {
                        let shutdown = async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        };
                        listener::serve(socket, handler, shutdown, grace, limits, slots).await;
                    });
                    // The connections are drained; do not wait for blocking
                    // work still queued (a guest's DNS lookup may take its
                    // full timeout), which would stretch the grace period.
                    runtime.shutdown_background();
                })
                .with_context(|| format!("failed to start request worker {index}"))?;
            threads.push(thread);
        }
        Ok(Self {
            threads,
            pinned: cpus.is_some(),
            ended,
        })
    }

    /// Resolves with a worker's index when one stops: before shutdown, only
    /// if it panicked, which leaves its socket's connections unserved.
    pub(crate) async fn ended(&mut self) -> usize {
        match self.ended.recv().await {
            Some(index) => index,
            // Every worker holds a sender until it ends; with none left
            // there is nothing more to report.
            None => std::future::pending().await,
        }
    }

    /// Whether each worker was pinned to a CPU of its own.
    pub(crate) fn pinned(&self) -> bool {
        self.pinned
    }

    /// How many workers run.
    pub(crate) fn count(&self) -> usize {
        self.threads.len()
    }

    /// Waits until every worker has drained and stopped; fails naming the
    /// first worker that panicked, with its message.
    pub(crate) async fn join(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || {
            let mut failed = None;
            for (index, thread) in self.threads.into_iter().enumerate() {
                if let Err(panic) = thread.join() {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|message| (*message).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".to_string());
                    failed.get_or_insert(format!("request worker {index} panicked: {message}"));
                }
            }
            failed.map_or(Ok(()), |failed| Err(anyhow::anyhow!(failed)))
        })
        .await
        .context("failed to wait for the request workers")?
    }
}
