//! A request body that ends in an error once it has carried more than a
//! project's `max_body` bytes, for bodies that do not say their length up
//! front (chunked). Bodies that do are refused before the guest runs.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// The body length a request declares in `Content-Length`, if it declares
/// one that parses; a body longer than its limit can be refused before any
/// of it is read.
pub(crate) fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Wraps `B`, counting data bytes; past `limit` it yields
/// `HttpRequestBodySize` to the guest and sets the shared `exceeded` flag, so
/// the host can answer 413 if the guest fails because of it.
pub(crate) struct LimitedBody<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl<B> LimitedBody<B> {
    /// `inner`, cut off after `limit` bytes; `exceeded` turns true if it is.
    pub(crate) fn new(inner: B, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            exceeded,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.limit)),
                        )));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::convert::Infallible;

    /// A body of data frames of the given sizes.
    struct Chunks(VecDeque<usize>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; n])))),
            )
        }
    }

    fn chunks(sizes: &[usize]) -> Chunks {
        Chunks(sizes.iter().copied().collect())
    }

    #[tokio::test]
    async fn a_body_within_the_limit_passes_whole() {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = LimitedBody::new(chunks(&[4, 4, 2]), 10, exceeded.clone());
        let collected = body.collect().await.expect("within the limit");
        assert_eq!(collected.to_bytes().len(), 10);
        assert!(!exceeded.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_errors_and_flags() {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = LimitedBody::new(chunks(&[4, 4, 4]), 10, exceeded.clone());
        let err = body.collect().await.expect_err("past the limit");
        assert!(
            matches!(
                err,
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(10))
            ),
            "{err:?}"
        );
        assert!(exceeded.load(Ordering::Acquire));
    }
}
