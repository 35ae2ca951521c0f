//! Errors callers branch on, and the one place they become HTTP responses.

use std::time::Duration;

use hyper::{Response, StatusCode};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::front::responses::text_response;

/// What a 503 for a full or starting project tells the client: requests are
/// short, so a second is plenty to find a free slot; a starting project's
/// compile takes seconds, and a client retrying each second sees it go live.
const RETRY_AFTER_SECONDS: &str = "1";

/// Why a request routed to a project got no response from its guest.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvokeError {
    /// The request ran past its project's request timeout and was interrupted.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The request's version was retired and did not finish within its drain deadline.
    #[error("interrupted: its version was retired and the drain deadline passed")]
    Drained,
    /// The guest trapped (panicked, hit `unreachable`, ran out of memory, …).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest answered with a wasi:http error code instead of a response.
    #[error("guest answered with error {0:?}")]
    Guest(ErrorCode),
    /// The guest returned without ever setting a response.
    #[error("guest returned without setting a response")]
    NoResponse,
    /// The request could not be handed to the guest as it was (e.g. an unparseable path).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The project's first version is still being prepared at start-up.
    #[error("the project is starting")]
    Starting,
    /// The project already runs its `max_concurrency` requests.
    #[error("too many concurrent requests (limit {0})")]
    Overloaded(u32),
    /// The host's instance pool (`--max-instances`) is full: every slot runs
    /// a request, of this project or others (idle instances gave theirs back
    /// first).
    #[error("no free instance slot in the host's pool ({0})")]
    PoolExhausted(String),
    /// The request body is larger than the project's `max_body`.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    /// The host failed to set up the request; not the guest's fault.
    #[error("host failed to run the request: {0}")]
    Host(String),
}

impl InvokeError {
    /// The status a client sees for this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            InvokeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            InvokeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            InvokeError::Drained
            | InvokeError::Starting
            | InvokeError::Overloaded(_)
            | InvokeError::PoolExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            InvokeError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            InvokeError::Trap(_)
            | InvokeError::Guest(_)
            | InvokeError::NoResponse
            | InvokeError::Host(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response a client sees. The body is deliberately generic: trap
    /// details can reveal guest internals, so they go to the log, not the client.
    pub(crate) fn to_response(&self) -> Response<HyperOutgoingBody> {
        let status = self.status();
        let text = match self {
            InvokeError::Timeout(_) => "the project did not answer in time",
            InvokeError::BadRequest(_) => "bad request",
            InvokeError::Drained => {
                "the project was replaced and this request ran past the drain deadline"
            }
            InvokeError::Starting => "the project is starting; retry shortly",
            InvokeError::Overloaded(_) => "the project is busy; retry shortly",
            InvokeError::PoolExhausted(_) => "the host is at capacity; retry shortly",
            InvokeError::BodyTooLarge(_) => "the request body is too large for this project",
            _ => "the project failed to handle the request",
        };
        let mut response = text_response(status, text);
        if let InvokeError::Starting | InvokeError::Overloaded(_) | InvokeError::PoolExhausted(_) =
            self
        {
            response.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}
