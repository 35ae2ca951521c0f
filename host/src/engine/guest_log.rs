//! Guest stdout and stderr, turned into host log lines tagged with the
//! project and version, so an operator can tell which of many components said what.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

/// A wasi:cli output stream whose lines become tracing events.
#[derive(Clone)]
pub(crate) struct GuestLog {
    project: Arc<str>,
    version: u64,
    stream: Stream,
}

impl GuestLog {
    /// Output of `project` version `version` on `stream`.
    pub(crate) fn new(project: Arc<str>, version: u64, stream: Stream) -> Self {
        Self {
            project,
            version,
            stream,
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return;
        }
        let (project, version) = (&*self.project, self.version);
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "guest", project, version, stream = "stdout", "{line}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "guest", project, version, stream = "stderr", "{line}")
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
