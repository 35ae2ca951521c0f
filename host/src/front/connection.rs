//! One client connection's clock: how long a request head has been
//! arriving, and how long the connection has been idle, so slow or idle
//! clients cannot hold connections (and file descriptors) forever.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive
//! connection waits for its next request, so it would close every idle
//! connection at the header timeout. Here the two are apart: the header
//! timeout runs from the first byte of a request head to its end, and the
//! idle timeout from the last byte in either direction while no request is
//! being handled.
//!
//! The request path pays two relaxed atomic additions per read or write and
//! two per request; a watcher task per connection wakes a few times per
//! timeout to compare counters.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The connection limits of a listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    /// Longest a request head may take to arrive, from its first byte.
    pub(crate) header_timeout: Duration,
    /// Longest a connection may sit with no request running and no bytes
    /// moving.
    pub(crate) idle_timeout: Duration,
    /// Most connections open at once; more wait in the listen backlog.
    pub(crate) max_connections: usize,
}

/// Counters the connection's I/O and its requests update, and its watcher reads.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Bytes read from the client so far.
    read: AtomicU64,
    /// Bytes written to the client so far.
    written: AtomicU64,
    /// Request heads parsed so far (each reached the handler).
    heads: AtomicU64,
    /// Requests being handled right now.
    busy: AtomicUsize,
    /// `read` when the last request finished: bytes past it, while no
    /// request is handled, are the start of the next request head.
    read_at_rest: AtomicU64,
}

impl Activity {
    /// Marks a request as handled until the guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> Busy {
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request being handled; see [`Activity::request`].
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let read = self.0.read.load(Ordering::Relaxed);
        self.0.read_at_rest.store(read, Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as handled until the body
/// ends (hyper drops it), so a response that streams with pauses, such as
/// `GET /events`, is never taken for an idle connection.
pub(crate) struct Streaming<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Streaming<B> {
    /// `inner`, holding `busy` until it is dropped.
    pub(crate) fn new(inner: B, busy: Busy) -> Self {
        Self { inner, _busy: busy }
    }
}

impl<B: Body + Unpin> Body for Streaming<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a connection was closed by its watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// A request head took longer than the header timeout.
    Header,
    /// Nothing happened for the idle timeout.
    Idle,
}

/// Resolves when the connection has broken one of `limits`. Poll it beside
/// the connection and drop the connection when it resolves.
pub(crate) async fn expiry(activity: Arc<Activity>, limits: ConnectionLimits) -> Expired {
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 8)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut seen = (0, 0, 0);
    let mut last_activity = Instant::now();
    let mut head_started: Option<Instant> = None;
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let counters = (
            activity.read.load(Ordering::Relaxed),
            activity.written.load(Ordering::Relaxed),
            activity.heads.load(Ordering::Relaxed),
        );
        if counters != seen {
            last_activity = now;
        }
        seen = counters;
        if activity.busy.load(Ordering::Relaxed) > 0 {
            head_started = None;
            continue;
        }
        // Bytes read since the last request finished: the next head has begun.
        if counters.0 > activity.read_at_rest.load(Ordering::Relaxed) {
            head_started.get_or_insert(now - tick);
        } else {
            head_started = None;
        }
        match head_started {
            Some(started) if now.duration_since(started) >= limits.header_timeout => {
                return Expired::Header;
            }
            None if now.duration_since(last_activity) >= limits.idle_timeout => {
                return Expired::Idle;
            }
            _ => {}
        }
    }
}

/// A stream that counts the bytes through it into an [`Activity`].
pub(crate) struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    /// `inner`, counted into `activity`.
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }

    /// Counts the bytes a write reports, and hands its result on.
    fn count_written(&self, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(written)) = &poll {
            self.activity
                .written
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.activity.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.count_written(poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.count_written(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header_ms: u64, idle_ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            max_connections: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_at_the_idle_timeout() {
        let activity = Arc::new(Activity::default());
        let started = Instant::now();
        let expired = expiry(activity, limits(1000, 5000)).await;
        assert_eq!(expired, Expired::Idle);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(5000) && took <= Duration::from_millis(5200),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_expires_at_the_header_timeout_even_while_bytes_arrive() {
        let activity = Arc::new(Activity::default());
        let trickle = activity.clone();
        tokio::spawn(async move {
            loop {
                trickle.read.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let started = Instant::now();
        let expired = expiry(activity, limits(2000, 60_000)).await;
        assert_eq!(expired, Expired::Header);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took <= Duration::from_millis(2300),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_being_handled_never_expires() {
        let activity = Arc::new(Activity::default());
        // A request's head arrives and is handled for ten minutes, silently.
        activity.read.fetch_add(100, Ordering::Relaxed);
        let busy = activity.request();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            drop(busy);
        });
        let started = Instant::now();
        let expired = expiry(activity, limits(1000, 2000)).await;
        assert_eq!(expired, Expired::Idle);
        assert!(started.elapsed() >= Duration::from_secs(600));
    }
}
