//! Bindings to the vendored `wit/` world (`wasi:http/proxy`) and the few
//! helpers every wasmhost guest needs: answering with a status, headers and a
//! body, and streaming a request body into a response body.
//!
//! Every helper treats a closed output stream as "the client went away" and
//! stops quietly: a guest must never trap because its client hung up.

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasmhost:guest/http-guest",
    pub_export_macro: true,
    export_macro_name: "export_guest",
    default_bindings_module: "wasmhost_guest_support",
    generate_all,
});

pub use exports::wasi::http::incoming_handler::Guest;
pub use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// The largest write `blocking-write-and-flush` accepts in one call.
const MAX_WRITE: usize = 4096;

/// The request's path with its query, `/` when the request has none.
pub fn path_with_query(request: &IncomingRequest) -> String {
    request.path_with_query().unwrap_or_else(|| "/".to_string())
}

/// The value of `name` in the request's query string, if present.
pub fn query_param(request: &IncomingRequest, name: &str) -> Option<String> {
    let path = path_with_query(request);
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| value.to_string())
    })
}

/// Sets the response head and returns the body and its stream, so the caller
/// can stream the body after the client already has the status line.
///
/// Returns `None` when the host refused the headers or the body; the guest
/// then has nothing more to do.
pub fn start_response(
    out: ResponseOutparam,
    status: u16,
    headers: &[(String, Vec<u8>)],
) -> Option<(OutgoingBody, OutputStream)> {
    let fields = Fields::from_list(headers).ok()?;
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).ok()?;
    let body = response.body().ok()?;
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().ok()?;
    Some((body, stream))
}

/// Ends a response body started with [`start_response`]. Errors mean the
/// client is gone, which is not the guest's problem.
pub fn finish_response(body: OutgoingBody, stream: OutputStream) {
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

/// Writes all of `bytes`, stopping early (and returning `false`) if the
/// client hung up.
pub fn write_all(stream: &OutputStream, bytes: &[u8]) -> bool {
    bytes
        .chunks(MAX_WRITE)
        .all(|chunk| stream.blocking_write_and_flush(chunk).is_ok())
}

/// Answers with a complete plain-text body.
pub fn respond_text(out: ResponseOutparam, status: u16, text: &str) {
    let headers = [(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )];
    if let Some((body, stream)) = start_response(out, status, &headers) {
        write_all(&stream, text.as_bytes());
        finish_response(body, stream);
    }
}

/// Copies `input` into `output` until the input ends or either side fails.
/// Returns the number of bytes copied.
pub fn copy_stream(input: &InputStream, output: &OutputStream) -> u64 {
    let mut copied = 0;
    loop {
        match output.blocking_splice(input, 64 * 1024) {
            Ok(n) => copied += n,
            Err(StreamError::Closed) | Err(StreamError::LastOperationFailed(_)) => return copied,
        }
    }
}
