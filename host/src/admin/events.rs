//! `GET /events`: lifecycle events as Server-Sent Events, so a page or a
//! tool can react (e.g. reload a browser tab) the moment a new version is live.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::{broadcast, mpsc};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::model::events::Events;

/// How often an idle stream sends a comment, so dead clients are noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A `text/event-stream` response that follows `events` from now on.
pub(crate) fn stream(events: &Events) -> Response<HyperOutgoingBody> {
    let (mut events, mut closed) = events.subscribe();
    let (chunks, body) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if chunks
            .send(Bytes::from_static(b": wasmhost events\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        loop {
            let chunk = tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => Bytes::copy_from_slice(event.as_bytes()),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Bytes::from(format!("event: lagged\ndata: {{\"missed\": {missed}}}\n\n"))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
                _ = closed.wait_for(|closed| *closed) => return,
            };
            if chunks.send(chunk).await.is_err() {
                return; // the client went away
            }
        }
    });
    let body = ChunkBody(body)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A response body fed chunk by chunk from a channel.
struct ChunkBody(mpsc::Receiver<Bytes>);

impl Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}
