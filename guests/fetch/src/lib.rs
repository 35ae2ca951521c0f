//! `fetch`: makes one outgoing HTTP request, as a guest calling an API would,
//! and reports what came back. `?to=HOST:PORT` names the authority,
//! `&scheme=http|https` (default `http`), `&path=/x` (default `/`) and
//! `&method=GET|PUT|POST|DELETE` (default `GET`). Answers 200 with
//! `status N` and the response body, or 502 with `error: CODE` when the
//! request failed or was refused (e.g. `HttpRequestDenied`): the guest
//! handles the error, it does not trap. Without `to` it answers 400.
//! `&keep=1` reads nothing of the response body and keeps it past the
//! request (in the instance), as a leaky guest would: it answers
//! `status N\nkept`.

use std::cell::RefCell;
use wasmhost_guest_support::wasi::http::outgoing_handler;

use wasmhost_guest_support::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    Scheme,
};
use wasmhost_guest_support::wasi::io::streams::StreamError;
use wasmhost_guest_support::{Guest, IncomingRequest, ResponseOutparam, query_param, respond_text};

struct Fetch;

thread_local! {
    /// Response bodies `&keep=1` keeps, unread, for as long as the instance lives.
    static KEPT: RefCell<Vec<IncomingBody>> = const { RefCell::new(Vec::new()) };
}

impl Guest for Fetch {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let Some(to) = query_param(&request, "to") else {
            respond_text(
                out,
                400,
                "usage: ?to=HOST:PORT[&scheme=http][&path=/x][&method=GET]\n",
            );
            return;
        };
        let scheme = match query_param(&request, "scheme").as_deref() {
            Some("https") => Scheme::Https,
            _ => Scheme::Http,
        };
        let method = match query_param(&request, "method").as_deref() {
            Some("PUT") => Method::Put,
            Some("POST") => Method::Post,
            Some("DELETE") => Method::Delete,
            _ => Method::Get,
        };
        let path = query_param(&request, "path").unwrap_or_else(|| "/".to_string());
        let keep = query_param(&request, "keep").as_deref() == Some("1");
        match send(&to, scheme, method, &path, keep) {
            Ok((status, body)) => respond_text(out, 200, &format!("status {status}\n{body}")),
            Err(code) => respond_text(out, 502, &format!("error: {code:?}\n")),
        }
    }
}

/// Sends the request and reads the whole response, or with `keep` keeps its
/// body unread.
fn send(
    to: &str,
    scheme: Scheme,
    method: Method,
    path: &str,
    keep: bool,
) -> Result<(u16, String), ErrorCode> {
    let internal = |what: &str| ErrorCode::InternalError(Some(what.to_string()));
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(&method)
        .map_err(|()| internal("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| internal("scheme"))?;
    request
        .set_authority(Some(to))
        .map_err(|()| internal("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| internal("path"))?;
    let body = request.body().map_err(|()| internal("body"))?;
    let future = outgoing_handler::handle(request, None)?;
    OutgoingBody::finish(body, None)?;
    future.subscribe().block();
    let response: IncomingResponse = match future.get() {
        Some(Ok(result)) => result?,
        Some(Err(())) | None => return Err(internal("the response was already taken")),
    };
    let status = response.status();
    let incoming = response.consume().map_err(|()| internal("consume"))?;
    if keep {
        KEPT.with(|kept| kept.borrow_mut().push(incoming));
        return Ok((status, "kept".to_string()));
    }
    let stream = incoming.stream().map_err(|()| internal("stream"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(internal("read")),
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

wasmhost_guest_support::export_guest!(Fetch);
