//! The client side of the admin API, for `wasmhost deploy`, `status`,
//! `reload`, `rollback` and `rm`: one request per command over plain HTTP/1.1.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

/// An admin API address, e.g. `http://127.0.0.1:8081`.
#[derive(Clone, Debug)]
pub(crate) struct AdminClient {
    authority: String,
    /// Sent as `Authorization: Bearer TOKEN` when set.
    token: Option<String>,
}

/// A complete admin answer.
pub(crate) struct Answer {
    /// Status code.
    pub(crate) status: StatusCode,
    /// Body as text.
    pub(crate) body: String,
}

impl Answer {
    /// The body as JSON.
    pub(crate) fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("failed to parse the admin answer as JSON: {}", self.body))
    }
}

impl AdminClient {
    /// A client for the admin API at `url` (`http://HOST:PORT`).
    pub(crate) fn new(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("failed to parse admin URL `{url}`"))?;
        if uri.scheme_str() != Some("http") {
            bail!("admin URL `{url}` must start with http://");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("admin URL `{url}` has no host"))?
            .to_string();
        let authority = if authority.contains(':') {
            authority
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            token: None,
        })
    }

    /// Sends `token` as a bearer token with every request.
    pub(crate) fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|token| !token.is_empty());
        self
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| {
                format!(
                    "failed to connect to the admin API at {} (is `wasmhost serve` running?)",
                    self.authority
                )
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("failed to start HTTP with the admin API")?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if let Some(content_type) = content_type {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .context("failed to build the admin request")?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("failed to send {method} {path} to the admin API"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("failed to read the admin answer")?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
