//! A response body that was already whole when its head was sent: sent with
//! a `content-length`, not in chunks.
//!
//! A guest that sets no `content-length` gets its body streamed: hyper
//! cannot know the length, so it frames every piece as a chunk, and then
//! polls the body once more to learn that it ended. When the guest's run is
//! over before the head is sent (most guests: answer, write, return), the
//! whole body already waits in its channel. Taking it out first lets hyper
//! write a `content-length` (or none where it leaves one out, by method and
//! status: 1xx, 204, 304, HEAD with an empty body) and the body in one go. What is not whole yet
//! (trailers, an error, a guest still writing) is passed on as it comes,
//! after what was taken.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::Error as BodyError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// What [`take_ready`] found.
pub(crate) enum Taken {
    /// The body ended: all of it, with its exact length.
    Whole(HyperOutgoingBody),
    /// It has not ended: what was ready, then the rest as it comes.
    Partial(HyperOutgoingBody),
}

/// Takes every frame of `body` that is ready now, without waiting.
pub(crate) fn take_ready(mut body: HyperOutgoingBody) -> Taken {
    let mut cx = Context::from_waker(Waker::noop());
    let mut ready = Ready::default();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Taken::Whole(ready.boxed_unsync()),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => ready.push(data),
                Err(trailers) => {
                    ready.held = Some(Ok(trailers));
                    break;
                }
            },
            Poll::Ready(Some(Err(err))) => {
                ready.held = Some(Err(err));
                break;
            }
            // Its waker is this no-op one until hyper polls it again, with
            // its own, through `Ready`.
            Poll::Pending => break,
        }
    }
    ready.rest = Some(body);
    Taken::Partial(ready.boxed_unsync())
}

/// Data taken from a body, then what stopped the taking, then the body.
#[derive(Default)]
struct Ready {
    data: VecDeque<Bytes>,
    /// Bytes left in `data`.
    len: u64,
    /// A frame that was not data (trailers) or an error.
    held: Option<Result<Frame<Bytes>, BodyError>>,
    /// The body itself, while it has not ended.
    rest: Option<HyperOutgoingBody>,
}

impl Ready {
    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len() as u64;
            self.data.push_back(data);
        }
    }
}

impl Body for Ready {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(data) = this.data.pop_front() {
            this.len -= data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(held));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
            && self.held.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.held, &self.rest) {
            (None, None) => SizeHint::with_exact(self.len),
            // Never exact with trailers or an error to come: hyper would
            // send a content-length, and drop the trailers.
            (Some(_), _) => {
                let mut hint = SizeHint::new();
                let rest = self
                    .rest
                    .as_ref()
                    .map_or(0, |rest| rest.size_hint().lower());
                hint.set_lower(self.len.saturating_add(rest));
                hint
            }
            (None, Some(rest)) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(self.len.saturating_add(rest.lower()));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(self.len.saturating_add(upper));
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `frames`, then of what comes on `more` until it closes
    /// (the end, when there is none).
    struct Scripted {
        frames: VecDeque<Result<Frame<Bytes>, BodyError>>,
        more: Option<tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BodyError>>>,
    }

    impl Body for Scripted {
        type Data = Bytes;
        type Error = BodyError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            if let Some(frame) = self.frames.pop_front() {
                return Poll::Ready(Some(frame));
            }
            match &mut self.more {
                Some(more) => more.poll_recv(cx),
                None => Poll::Ready(None),
            }
        }
    }

    fn body_of(frames: Vec<Result<Frame<Bytes>, BodyError>>) -> HyperOutgoingBody {
        Scripted {
            frames: frames.into(),
            more: None,
        }
        .boxed_unsync()
    }

    fn data(text: &'static str) -> Result<Frame<Bytes>, BodyError> {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    #[tokio::test]
    async fn an_ended_body_is_whole_with_its_exact_length() {
        let body = body_of(vec![data("hello "), data(""), data("world")]);
        let Taken::Whole(body) = take_ready(body) else {
            panic!("an ended body is whole");
        };
        assert_eq!(body.size_hint().exact(), Some(11));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.expect("no error").to_bytes();
        assert_eq!(bytes, "hello world");

        let Taken::Whole(empty) = take_ready(body_of(vec![])) else {
            panic!("an empty body is whole");
        };
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn a_body_still_being_written_passes_on_what_was_ready_then_the_rest() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let body = Scripted {
            frames: [data("first ")].into(),
            more: Some(receiver),
        }
        .boxed_unsync();
        let Taken::Partial(body) = take_ready(body) else {
            panic!("a body still being written is not whole");
        };
        assert_eq!(body.size_hint().exact(), None);
        assert_eq!(body.size_hint().lower(), 6);
        let reader = tokio::spawn(body.collect());
        sender.send(data("second")).await.expect("open");
        drop(sender);
        let bytes = reader
            .await
            .expect("no panic")
            .expect("no error")
            .to_bytes();
        assert_eq!(bytes, "first second");
    }

    #[tokio::test]
    async fn trailers_and_errors_are_passed_on_in_order() {
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("x-sum", "1".parse().expect("a header value"));
        let body = body_of(vec![data("a"), Ok(Frame::trailers(trailers.clone()))]);
        let Taken::Partial(body) = take_ready(body) else {
            panic!("a body with trailers is passed on as it comes");
        };
        // The rest has ended (exactly 0 bytes more), but trailers come.
        assert_eq!(body.size_hint().exact(), None);
        let collected = body.collect().await.expect("no error");
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "a");

        let body = body_of(vec![data("a"), Err(BodyError::HttpProtocolError)]);
        let Taken::Partial(mut body) = take_ready(body) else {
            panic!("a body that failed is passed on as it comes");
        };
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"a")));
        assert!(matches!(
            body.frame().await,
            Some(Err(BodyError::HttpProtocolError))
        ));
    }
}
