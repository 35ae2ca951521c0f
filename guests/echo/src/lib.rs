//! `echo`: answers with the request it received. Method, path with query and
//! every request header come back as `echo-method`, `echo-path` and
//! `echo-header-NAME` response headers; the request body is streamed back
//! as the response body, chunk by chunk, so bodies of any size work without
//! buffering them in guest memory. `?status=N` answers with status N instead
//! of 200 (for health-check tests).

use wasmhost_guest_support::wasi::http::types::Method;
use wasmhost_guest_support::{
    Guest, IncomingRequest, ResponseOutparam, copy_stream, finish_response, path_with_query,
    query_param, start_response,
};

struct Echo;

impl Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = match request.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Other(other) => other,
        };
        let mut headers = vec![
            ("echo-method".to_string(), method.into_bytes()),
            (
                "echo-path".to_string(),
                path_with_query(&request).into_bytes(),
            ),
        ];
        for (name, value) in request.headers().entries() {
            headers.push((format!("echo-header-{name}"), value));
        }
        let status = query_param(&request, "status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let Ok(incoming) = request.consume() else {
            return;
        };
        let Ok(input) = incoming.stream() else {
            return;
        };
        if let Some((body, output)) = start_response(out, status, &headers) {
            copy_stream(&input, &output);
            finish_response(body, output);
        }
    }
}

wasmhost_guest_support::export_guest!(Echo);
