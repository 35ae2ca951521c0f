//! Guest stdout and stderr, turned into host log lines tagged with the
//! project, version and request id, so an operator can tell which of many
//! components said what, and for which request.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::header::HeaderValue;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// A guest's output line longer than this is logged in pieces, so a guest
/// that never writes a newline cannot make the host buffer without bound.
const MAX_LINE: usize = 16 * 1024;

/// Which of the guest's streams a [`GuestLog`] carries.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    /// wasi:cli/stdout, logged at info.
    Stdout,
    /// wasi:cli/stderr, logged at warn.
    Stderr,
}

/// The `x-request-id` of the request an instance is serving. Shared by the
/// instance's two streams and its store, which sets it anew each time a
/// kept instance serves another request (`RequestState::restart`, called
/// by `front/invoke.rs`). A partial line still pending when the next
/// request starts is tagged with the request during which it ends.
#[derive(Clone, Debug)]
pub(crate) struct RequestTag(Arc<Mutex<HeaderValue>>);

impl RequestTag {
    /// Tagged with `id`.
    pub(crate) fn new(id: HeaderValue) -> Self {
        Self(Arc::new(Mutex::new(id)))
    }

    /// From now on, lines belong to request `id`.
    pub(crate) fn set(&self, id: HeaderValue) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    fn get(&self) -> HeaderValue {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A wasi:cli output stream whose lines become tracing events.
#[derive(Clone)]
pub(crate) struct GuestLog {
    project: Arc<str>,
    version: u64,
    stream: Stream,
    request: RequestTag,
}

impl GuestLog {
    /// Output of `project` version `version` on `stream`, while it serves
    /// the request `request` names.
    pub(crate) fn new(
        project: Arc<str>,
        version: u64,
        stream: Stream,
        request: RequestTag,
    ) -> Self {
        Self {
            project,
            version,
            stream,
            request,
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return;
        }
        let (project, version) = (&*self.project, self.version);
        let request_id = self.request.get();
        let request_id = request_id.to_str().unwrap_or_default();
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "guest", project, version, request_id, stream = "stdout", "{line}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "guest", project, version, request_id, stream = "stderr", "{line}")
            }
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// Splits writes into lines; a trailing partial line is logged on flush or drop.
struct LineWriter {
    log: GuestLog,
    pending: Vec<u8>,
}

impl LineWriter {
    fn take_lines(&mut self) {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.log.emit(&line);
        }
        while self.pending.len() >= MAX_LINE {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            self.log.emit(&piece);
        }
    }

    fn flush_partial(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.log.emit(&rest);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        self.take_lines();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_partial();
    }
}
