//! Guest stdout and stderr, turned into host log lines tagged with the
//! project, version and request id, so an operator can tell which of many
//! components said what, and for which request. Each project may log at
//! most its `log_rate` ([`LogBudget`]); past it, lines are dropped and
//! counted, so one guest cannot drown every other project's lines, fill the
//! operator's disk, or keep its worker busy writing.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderValue;
use tokio::io::AsyncWrite;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

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
/// by `front/invoke.rs`). On an instance reset in place, a stream's
/// partial line is logged when the reset drops the stream, still as the
/// request that wrote it (`RequestState::renew`). On one kept as it is
/// (`reuse` > 1), a stream the guest keeps open across requests logs a
/// partial line pending when the next request starts as the request
/// during which it ends.
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

/// How often, at most, a project's dropped lines are reported in the log.
const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// What one line costs beyond its text: about what the host adds to it
/// (time, level, project, version, request id, stream). Without it, a guest
/// writing one-byte lines would make the host write some 200 times its
/// `log_rate`.
const LINE_OVERHEAD: usize = 128;

/// One project's allowance of guest output: a token bucket in bytes, shared
/// by all its versions, instances and workers, so running more requests at
/// once does not buy a guest more log. It fills at the version's
/// `log_rate` bytes per second up to one second's worth; a line is logged
/// while the bucket is not empty and takes its cost from it (its length
/// and [`LINE_OVERHEAD`]), so a line longer than a second's worth still
/// gets out, and then pays for it.
#[derive(Debug)]
pub(crate) struct LogBudget {
    state: Mutex<BucketState>,
    /// Lines dropped so far (`wasmhost_guest_log_dropped_total`).
    dropped: AtomicU64,
}

#[derive(Debug)]
struct BucketState {
    /// Bytes that may still be logged; negative after a long line.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
    /// Lines dropped since the last notice.
    unreported: u64,
    /// When dropped lines were last reported.
    noticed: Option<Instant>,
}

/// What [`LogBudget::admit`] decided about one line.
#[derive(Debug, PartialEq, Eq)]
struct Admission {
    /// Whether the line is logged.
    logged: bool,
    /// Lines dropped since the last notice, to report now (at most once per
    /// [`NOTICE_EVERY`]).
    report: Option<u64>,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            state: Mutex::new(BucketState {
                tokens: f64::INFINITY,
                updated: Instant::now(),
                unreported: 0,
                noticed: None,
            }),
            dropped: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// Lines dropped so far because the project was over its rate.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether a line of `len` bytes may be logged at `rate` bytes per
    /// second, at `now`.
    fn admit(&self, len: usize, rate: u64, now: Instant) -> Admission {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rate = rate as f64;
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate).min(rate);
        state.updated = now;
        let logged = state.tokens > 0.0;
        if logged {
            state.tokens -= len as f64;
        } else {
            state.unreported += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let due = state
            .noticed
            .is_none_or(|at| now.saturating_duration_since(at) >= NOTICE_EVERY);
        let report = (state.unreported > 0 && due).then(|| {
            state.noticed = Some(now);
            std::mem::take(&mut state.unreported)
        });
        Admission { logged, report }
    }
}

/// Whose output a [`GuestLog`] carries and what it may log: one per
/// instance, shared by its two streams, so that a stream made for each
/// request only adds to a count of this instance's own, not to the
/// project's that every worker shares.
#[derive(Debug)]
pub(crate) struct LogSource {
    project: Arc<str>,
    version: u64,
    budget: Arc<LogBudget>,
    /// The version's `log_rate`, in bytes per second.
    rate: u64,
}

impl LogSource {
    /// Output of `project` version `version`, logged while `budget` allows
    /// at `rate` bytes per second.
    pub(crate) fn new(
        project: Arc<str>,
        version: u64,
        (budget, rate): (Arc<LogBudget>, u64),
    ) -> Self {
        Self {
            project,
            version,
            budget,
            rate,
        }
    }
}

/// A wasi:cli output stream whose lines become tracing events.
#[derive(Clone)]
pub(crate) struct GuestLog {
    source: Arc<LogSource>,
    stream: Stream,
    request: RequestTag,
}

impl GuestLog {
    /// Output of `source` on `stream`, while it serves the request
    /// `request` names.
    pub(crate) fn new(source: Arc<LogSource>, stream: Stream, request: RequestTag) -> Self {
        Self {
            source,
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
        let source = &*self.source;
        let (project, version) = (&*source.project, source.version);
        let admission =
            source
                .budget
                .admit(line.len() + LINE_OVERHEAD, source.rate, Instant::now());
        if let Some(dropped) = admission.report {
            tracing::warn!(
                project,
                version,
                dropped,
                "guest output over the project's log_rate of {} bytes/s: {dropped} lines dropped",
                source.rate
            );
        }
        if !admission.logged {
            return;
        }
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

impl GuestLog {
    fn writer(&self) -> LineWriter {
        LineWriter {
            log: self.clone(),
            pending: Vec::new(),
        }
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }

    /// The guest's stream, written through at once on the guest's own
    /// thread. wasmtime-wasi's default wraps [`StdoutStream::async_stream`]
    /// in a writer task of its own, which made a guest that prints wait for
    /// that task (so it could never finish in its request's first poll,
    /// `front/invoke.rs`), and which dropped the writer, and logged its
    /// partial line, whenever the runtime got round to the aborted task:
    /// possibly after the instance's next request had retagged the log.
    /// Written through, a stream dropped with its request's resource table
    /// logs its partial line then and there, as that request's.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }
}

/// How much a guest may write to its output in one `write`
/// (`check-write`); more is refused, as wasi:io asks.
const WRITE_PERMIT: usize = 64 * 1024;

#[async_trait]
impl Pollable for LineWriter {
    /// Always ready: a write is logged (or dropped over the budget) at once.
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > WRITE_PERMIT {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "a write of {} bytes to a guest output stream exceeds its permit of {WRITE_PERMIT}",
                bytes.len()
            )));
        }
        self.pending.extend_from_slice(&bytes);
        self.take_lines();
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON log lines this thread emits while the guard lives.
    fn capture() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().expect("log buffer").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Shared(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        (buffer, tracing::subscriber::set_default(subscriber))
    }

    /// The guest lines logged so far, as (text, request id).
    fn guest_lines(buffer: &Mutex<Vec<u8>>) -> Vec<(String, String)> {
        let text = String::from_utf8(buffer.lock().expect("log buffer").clone()).expect("UTF-8");
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
            .filter(|line| line["target"] == "guest")
            .map(|line| {
                let field = |name: &str| {
                    line["fields"][name]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                };
                (field("message"), field("request_id"))
            })
            .collect()
    }

    /// A guest's output stream logs each whole line as it is written, and
    /// its partial line when it is dropped, then and there: as the request
    /// that wrote it, even when the instance is retagged for the next one
    /// right after (`RequestState::restart`).
    #[tokio::test]
    async fn a_dropped_streams_partial_line_is_logged_at_once_as_its_request() {
        let (buffer, _guard) = capture();
        let tag = RequestTag::new(HeaderValue::from_static("first"));
        let source = Arc::new(LogSource::new("p".into(), 1, (Arc::default(), 1 << 20)));
        let log = GuestLog::new(source, Stream::Stdout, tag.clone());

        let mut stream = log.p2_stream();
        assert!(stream.check_write().expect("writable") >= 13);
        stream
            .write(Bytes::from_static(b"whole\npartial"))
            .expect("a permitted write");
        assert_eq!(guest_lines(&buffer), [("whole".into(), "first".into())]);

        drop(stream);
        tag.set(HeaderValue::from_static("second"));
        // Anything the stream left to run elsewhere runs now.
        tokio::task::yield_now().await;
        assert_eq!(
            guest_lines(&buffer),
            [
                ("whole".into(), "first".into()),
                ("partial".into(), "first".into())
            ]
        );
    }

    #[test]
    fn a_project_logs_a_seconds_worth_then_its_rate_and_reports_what_it_dropped() {
        let budget = LogBudget::default();
        let start = Instant::now();
        // 1,000 bytes/s: ten 100-byte lines pass, the eleventh is dropped
        // and reported at once.
        for line in 0..10 {
            let admitted = budget.admit(100, 1000, start);
            assert_eq!(
                admitted,
                Admission {
                    logged: true,
                    report: None
                },
                "line {line}"
            );
        }
        let over = budget.admit(100, 1000, start);
        assert_eq!(
            over,
            Admission {
                logged: false,
                report: Some(1)
            }
        );
        // More drops at once are counted, not reported.
        for _ in 0..5 {
            let over = budget.admit(100, 1000, start);
            assert_eq!(
                over,
                Admission {
                    logged: false,
                    report: None
                }
            );
        }
        assert_eq!(budget.dropped(), 6);
        // A tenth of a second later there is room for one line, and the
        // next drop's notice waits for its second.
        let later = start + Duration::from_millis(100);
        assert_eq!(
            budget.admit(100, 1000, later),
            Admission {
                logged: true,
                report: None
            }
        );
        assert_eq!(
            budget.admit(100, 1000, later),
            Admission {
                logged: false,
                report: None
            }
        );
        // Past the second, the next line (logged or not) reports the rest.
        let next = start + Duration::from_millis(1200);
        assert_eq!(
            budget.admit(100, 1000, next),
            Admission {
                logged: true,
                report: Some(6)
            }
        );
        assert_eq!(budget.dropped(), 7);
    }

    #[test]
    fn a_line_longer_than_a_seconds_worth_gets_out_and_is_paid_for() {
        let budget = LogBudget::default();
        let start = Instant::now();
        assert!(budget.admit(5000, 1000, start).logged);
        // 4,000 bytes of debt: 4 s before anything else is logged.
        assert!(
            !budget
                .admit(10, 1000, start + Duration::from_secs(3))
                .logged
        );
        assert!(
            budget
                .admit(10, 1000, start + Duration::from_millis(4100))
                .logged
        );
    }

    #[test]
    fn an_idle_project_saves_up_at_most_a_seconds_worth() {
        let budget = LogBudget::default();
        let start = Instant::now();
        let later = start + Duration::from_secs(3600);
        let logged = (0..100)
            .filter(|_| budget.admit(100, 1000, later).logged)
            .count();
        assert_eq!(logged, 10);
    }
}
