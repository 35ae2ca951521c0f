//! Reading a deploy upload: the raw component, or a multipart body with the
//! component and a config, bounded by `--max-deploy-size`.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::{Request, Response, StatusCode, header};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::admin::multipart;
use crate::front::responses::text_response;

/// Reads a deploy body: the component bytes, and the config when the body is
/// multipart. At most `max_size` bytes.
pub(crate) async fn read_deploy<B>(
    request: Request<B>,
    max_size: u64,
) -> Result<(Vec<u8>, Option<String>), Box<Response<HyperOutgoingBody>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let refuse = |status: StatusCode, text: &str| Box::new(text_response(status, text));
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/wasm")
        .to_string();
    let boundary = multipart::boundary(&content_type);
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if boundary.is_none()
        && media_type != "application/wasm"
        && media_type != "application/octet-stream"
    {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "send the component as application/wasm, or multipart/form-data with a `component` part; not {media_type}"
            ),
        ));
    }
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the upload is larger than {} (--max-deploy-size)",
                crate::units::format_size(max_size)
            ),
        )
    };
    if crate::front::body_limit::declared_length(request.headers())
        .is_some_and(|length| length > max_size)
    {
        return Err(too_large());
    }
    let limit = usize::try_from(max_size).unwrap_or(usize::MAX);
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large());
        }
        Err(err) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                &format!("failed to read the request body: {err}"),
            ));
        }
    };
    let Some(boundary) = boundary else {
        return Ok((body, None));
    };
    let mut parts = multipart::parse(&body, &boundary)
        .map_err(|err| refuse(StatusCode::BAD_REQUEST, &err.to_string()))?;
    let component = parts.remove("component").ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "the multipart body has no `component` part",
        )
    })?;
    let config = match parts.remove("config") {
        None => None,
        Some(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "the `config` part is not UTF-8 text",
            )
        })?),
    };
    if let Some(other) = parts.keys().next() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!("unexpected multipart part `{other}`: only `component` and `config`"),
        ));
    }
    Ok((component, config))
}
