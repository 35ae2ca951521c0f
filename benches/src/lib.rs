//! Shared set-up for wasmhost's benchmarks.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use wasmhost::router::{Router, RouterBuilder};

/// A router with `count` projects named `p0`, `p1`, … on routes `/p0`, `/p1`, …,
/// plus one nested route, as a many-project host would have.
pub fn many_projects(count: usize) -> Router {
    let mut builder = RouterBuilder::default();
    for index in 0..count {
        let name = format!("p{index}");
        let route = format!("/{name}");
        // Distinct names and routes cannot conflict.
        let _ = builder.add(index, &name, &route, &[], false);
    }
    let _ = builder.add(count, "nested", "/p0/api", &[], true);
    builder.build()
}

/// Deploys `bytes` as `project` through the admin API at `admin`, and fails
/// unless the answer is a success.
pub async fn deploy(
    admin: SocketAddr,
    project: &str,
    bytes: Vec<u8>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(admin).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::put(format!("/projects/{project}"))
        .header("host", "localhost")
        .header("content-type", "application/wasm")
        .body(Full::new(Bytes::from(bytes)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!(
            "deploy answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(())
}
