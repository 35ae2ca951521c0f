//! Guests making outgoing HTTP requests (the `fetch` guest): refused unless
//! the project's `allowed_outbound_hosts` lists the host, and the admin API
//! out of reach whatever the list says.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use wasmhost_tests::guests;

use crate::harness::TestHost;

/// An HTTP server on 127.0.0.1:0 for guests to call: answers every request
/// with `text`, or, with `None`, accepts and never answers.
struct Upstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start(text: Option<&'static str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| async move {
                        match text {
                            Some(text) => Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                Full::new(Bytes::from_static(text.as_bytes())),
                            )),
                            None => std::future::pending().await,
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_guest_cannot_reach_the_admin_api_even_when_every_loopback_port_is_allowed() {
    let host = TestHost::new()
        .project("victim", guests::HELLO)
        .project("evil", guests::FETCH)
        .manifest(
            "evil",
            "allowed_outbound_hosts = [\"http://127.0.0.1:*\", \"http://localhost:*\", \"http://0.0.0.0:*\"]\n",
        )
        .spawn();
    let port = host.admin.port();
    // By address, by a name that resolves to it, and through the wildcard address.
    for authority in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("0.0.0.0:{port}"),
    ] {
        let reply = host
            .get(&format!(
                "/evil?to={authority}&method=DELETE&path=/projects/victim"
            ))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{authority}: {}",
            reply.text()
        );
        assert!(
            reply.text().contains("HttpRequestDenied"),
            "{authority}: {}",
            reply.text()
        );
    }
    let victim = host.get("/victim").await;
    assert_eq!(victim.text(), "Hello, world!\n");
    assert!(host.dir().join("victim/victim.wasm").is_file());
    assert_eq!(host.admin_project("victim").await["state"], "active");
    let log = host.wait_for_log("is the admin API").await;
    assert!(
        log.contains(&format!(
            "evil: v1 outgoing request to 127.0.0.1:{port} refused"
        )),
        "{log}"
    );
}

#[tokio::test]
async fn outgoing_requests_reach_only_listed_hosts_and_refusals_are_counted_and_rate_limited() {
    let upstream = Upstream::start(Some("upstream says hi")).await;
    let other = Upstream::start(Some("not for you")).await;
    let host = TestHost::new()
        .project("open", guests::FETCH)
        .manifest(
            "open",
            &format!(
                "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
                upstream.addr.port()
            ),
        )
        .project("closed", guests::FETCH)
        .spawn();

    let allowed = host.get(&format!("/open?to={}", upstream.addr)).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
    assert_eq!(allowed.text(), "status 200\nupstream says hi");
    let wrong_port = host.get(&format!("/open?to={}", other.addr)).await;
    assert_eq!(wrong_port.status, StatusCode::BAD_GATEWAY);
    assert!(
        wrong_port.text().contains("HttpRequestDenied"),
        "{}",
        wrong_port.text()
    );

    // Nothing listed: nothing reached, and the guest handles the refusal.
    let started = Instant::now();
    let attempts = 25;
    for _ in 0..attempts {
        let denied = host.get(&format!("/closed?to={}", upstream.addr)).await;
        assert_eq!(denied.status, StatusCode::BAD_GATEWAY);
        assert!(
            denied.text().contains("HttpRequestDenied"),
            "{}",
            denied.text()
        );
    }
    let seconds = started.elapsed().as_secs() + 1;
    let closed = host.admin_project("closed").await;
    assert_eq!(closed["stats"]["outbound_denied"], attempts);
    assert_eq!(closed["allowed_outbound_hosts"], serde_json::json!([]));
    let open = host.admin_project("open").await;
    assert_eq!(
        open["allowed_outbound_hosts"],
        serde_json::json!([format!("http://127.0.0.1:{}", upstream.addr.port())])
    );
    let log = host
        .wait_for_log(&format!(
            "closed: v1 outgoing request to {} refused",
            upstream.addr
        ))
        .await;
    let logged = log
        .lines()
        .filter(|line| line.contains("closed: v1 outgoing request to"))
        .count() as u64;
    // At most one line per second of refusals, plus one for a second boundary.
    assert!(
        logged >= 1 && logged <= seconds + 1,
        "{logged} lines in {seconds} s:\n{log}"
    );
}

#[tokio::test]
async fn a_changed_allow_list_is_a_new_version() {
    let upstream = Upstream::start(Some("hi")).await;
    let host = TestHost::new()
        .project("app", guests::FETCH)
        .manifest("app", "")
        .spawn();
    let before = host.get(&format!("/app?to={}", upstream.addr)).await;
    assert_eq!(before.status, StatusCode::BAD_GATEWAY);
    std::fs::write(
        host.dir().join("app/wasmhost.toml"),
        format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            upstream.addr.port()
        ),
    )
    .expect("write manifest");
    host.wait_for_project("app", "v2 live", |app| app["version"] == 2)
        .await;
    let after = host.get(&format!("/app?to={}", upstream.addr)).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text());
    assert_eq!(after.header("wasmhost-version"), Some("2"));
}

#[tokio::test]
async fn an_allowed_request_counts_against_the_request_timeout() {
    let silent = Upstream::start(None).await;
    let host = TestHost::new()
        .project("app", guests::FETCH)
        .manifest(
            "app",
            &format!(
                "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n[limits]\nrequest_timeout = \"1s\"\n",
                silent.addr.port()
            ),
        )
        .spawn();
    let reply = host.get(&format!("/app?to={}", silent.addr)).await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
}

/// A guest that keeps an outgoing response's body unread keeps its
/// connection (a socket, and one of the 16 slots) open past its request. Its
/// instance must not be kept for reuse: idle, it would hold the socket, and
/// the next request would start with a slot fewer.
#[tokio::test]
async fn an_instance_with_an_outgoing_connection_still_open_is_not_kept_for_reuse() {
    // A body bigger than the host's buffers, so its connection lives until read.
    let big: &'static str = Box::leak("x".repeat(8 << 20).into_boxed_str());
    let upstream = Upstream::start(Some(big)).await;
    let host = TestHost::new()
        .project("app", guests::FETCH)
        .manifest(
            "app",
            &format!(
                "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n\n[instances]\nreuse = 100\nidle_timeout = \"10m\"\n",
                upstream.addr.port()
            ),
        )
        .spawn();
    // Read to its end, the response leaves nothing open: the instance is kept.
    let read = host.get(&format!("/app?to={}", upstream.addr)).await;
    assert_eq!(read.status, StatusCode::OK);
    host.wait_for_project("app", "the instance back in the pool", |app| {
        app["versions"][0]["idle_instances"] == 1
    })
    .await;
    // Kept unread, it does: that instance is dropped after its request.
    let kept = host.get(&format!("/app?to={}&keep=1", upstream.addr)).await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.text());
    assert!(kept.text().ends_with("kept"), "{}", kept.text());
    crate::observe::until_no_instance_is_alive(&host, "no instance left alive").await;
    assert_eq!(host.admin_project("app").await["stats"]["reused"], 1);
}
