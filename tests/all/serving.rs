//! What guests see and what clients get: bodies, env, traps, timeouts, logs.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Frame;
use wasmhost_tests::guests;

use crate::harness::{DEADLINE, TestHost, empty, full, request, send};

#[tokio::test]
async fn every_guest_is_served() {
    let mut builder = TestHost::new();
    for (name, path) in guests::RUST {
        builder = builder.project(name, path);
    }
    let host = builder.spawn();
    for (name, _) in guests::RUST {
        let expected = match *name {
            "trap" => StatusCode::INTERNAL_SERVER_ERROR,
            // Needs `?to=HOST:PORT`; what it reaches is tested in outbound.rs.
            "fetch" => StatusCode::BAD_REQUEST,
            // Not proxies: refused at load (their rejection is tested in swap.rs).
            "command" | "needs-import" => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        };
        // `busy` would spin forever without a limit; `slow` waits 1 s by default.
        let path = format!("/{name}?ms=10");
        let reply = host.get(&path).await;
        assert_eq!(reply.status, expected, "{name}: {}", reply.text());
        if expected != StatusCode::NOT_FOUND {
            assert_eq!(reply.header("wasmhost-project"), Some(*name));
        } else {
            assert_eq!(host.admin_project(name).await["state"], "failed", "{name}");
        }
    }
}

/// The Python and JavaScript examples, built by their own toolchains, run
/// unchanged beside a Rust guest, each on its own route.
#[tokio::test]
async fn python_and_javascript_guests_are_served() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .project("hello-py", guests::HELLO_PY)
        .project("hello-js", guests::HELLO_JS)
        .spawn();
    for (name, greeting) in [
        ("hello", "Hello, world!\n"),
        ("hello-py", "Hello from Python!\n"),
        ("hello-js", "Hello from JavaScript!\n"),
    ] {
        for _ in 0..3 {
            let reply = host.get(&format!("/{name}/some/path")).await;
            assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.text());
            assert_eq!(reply.text(), greeting, "{name}");
            assert_eq!(reply.header("wasmhost-project"), Some(name));
        }
    }
}

#[tokio::test]
async fn a_trap_is_a_500_and_the_project_keeps_serving() {
    let host = TestHost::new()
        .project("trap", guests::TRAP)
        .project("hello", guests::HELLO)
        .spawn();
    let trapped = host.get("/trap").await;
    assert_eq!(trapped.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(trapped.header("wasmhost-project"), Some("trap"));
    // Trap details stay in the log, not in the client's answer.
    assert!(
        !trapped.text().contains("unreachable"),
        "{}",
        trapped.text()
    );
    let log = host.wait_for_log("wasm trap").await;
    assert!(
        log.lines().any(|l| l.contains("wasm trap")
            && l.contains("project=\"trap\"")
            && l.contains("version=1")),
        "{log}"
    );
    // The guest's own stderr (its panic message) is in the host log, tagged.
    assert!(
        log.lines()
            .any(|l| l.contains("deliberate trap") && l.contains("stream=\"stderr\"")),
        "{log}"
    );

    let next = host.get("/trap?ok").await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.text(), "no trap this time\n");
    assert_eq!(host.get("/hello").await.status, StatusCode::OK);
}

#[tokio::test]
async fn five_megabytes_stream_through_echo_byte_for_byte() {
    let host = TestHost::new().project("echo", guests::ECHO).spawn();
    let payload: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // Send it as a stream of 64 KiB chunks, the way a large upload arrives.
    let body = Chunks(
        payload
            .chunks(64 * 1024)
            .map(Bytes::copy_from_slice)
            .collect(),
    )
    .boxed();
    let reply = send(
        host.addr,
        request("POST", "localhost", "/echo/upload", body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("echo-method"), Some("POST"));
    assert_eq!(reply.body.len(), payload.len());
    assert!(
        reply.body == payload,
        "echoed body differs from what was sent"
    );
}

/// A request body sent as separate chunks.
struct Chunks(VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// A guest that is done before its response head is sent has written its
/// whole body: it goes out with a `content-length` (hyper leaves out a 0
/// for HEAD). A guest still writing streams its body in chunks.
#[tokio::test]
async fn a_finished_guests_body_has_a_length_and_a_streaming_ones_comes_in_chunks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .project("echo", guests::ECHO)
        .spawn();
    // A guest is done in its first poll unless an epoch tick made it yield
    // (or its instantiation waited): then, rightly, its body is chunked.
    // So each kind of request is sent until one comes back with a length;
    // every answer must be right either way.
    let until_whole = |method: &'static str, path: &'static str| {
        let addr = host.addr;
        async move {
            for _ in 0..50 {
                let reply = send(addr, request(method, "localhost", path, empty())).await;
                assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
                if reply.header("content-length").is_some() {
                    assert_eq!(reply.header("transfer-encoding"), None, "{reply:?}");
                    return reply;
                }
                // (HEAD answers a body of unknown length with neither.)
                if method != "HEAD" {
                    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
                }
            }
            panic!("50 answers to {method} {path}, none with a content-length");
        }
    };
    let reply = until_whole("GET", "/hello").await;
    assert_eq!(reply.text(), "Hello, world!\n");
    assert_eq!(reply.header("content-length"), Some("14"), "{reply:?}");
    // HEAD: the length the GET's body has, and no body.
    let head = until_whole("HEAD", "/hello").await;
    assert_eq!(head.header("content-length"), Some("14"), "{head:?}");
    assert!(head.body.is_empty());
    // An empty body, finished: a length of 0.
    let reply = until_whole("GET", "/echo").await;
    assert_eq!(reply.header("content-length"), Some("0"), "{reply:?}");

    // Echo answers before the request body has ended, and copies it as it
    // comes: its response head goes out while it still runs.
    let mut stream = tokio::net::TcpStream::connect(host.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        )
        .await
        .expect("send the head and a first chunk");
    let mut seen = Vec::new();
    let head_end = tokio::time::timeout(DEADLINE, async {
        loop {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                return end;
            }
        }
    })
    .await
    .expect("the response head comes before the request body ends");
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    stream
        .write_all(b"6\r\nsecond\r\n0\r\n\r\n")
        .await
        .expect("send the rest");
    tokio::time::timeout(DEADLINE, async {
        while !seen.ends_with(b"0\r\n\r\n") {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the body ends");
    let body = String::from_utf8_lossy(&seen[head_end + 4..]);
    let unchunked: String = body.split("\r\n").skip(1).step_by(2).collect();
    assert_eq!(unchunked, "firstsecond", "{body:?}");
}

#[tokio::test]
async fn echo_returns_method_headers_and_small_bodies() {
    let host = TestHost::new().project("echo", guests::ECHO).spawn();
    let mut req = request("PUT", "localhost", "/echo/a?b=c", full("hello body"));
    req.headers_mut()
        .insert("x-custom", "value-1".parse().expect("valid"));
    let reply = send(host.addr, req).await;
    assert_eq!(reply.header("echo-method"), Some("PUT"));
    assert_eq!(reply.header("echo-path"), Some("/echo/a?b=c"));
    assert_eq!(reply.header("echo-header-x-custom"), Some("value-1"));
    assert_eq!(reply.text(), "hello body");
}

#[tokio::test]
async fn env_from_manifest_and_nothing_from_the_host() {
    let host = TestHost::new()
        .project("env", guests::ENV)
        .manifest(
            "env",
            "[env]\nGREETING = \"hello from toml\"\nEMPTY = \"\"\n",
        )
        .spawn();
    let reply = host.get("/env").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "EMPTY=\nGREETING=hello from toml\n");
    // The guest's stdout lands in the host log, tagged with project and version.
    let log = host.wait_for_log("env guest: serving 2 variables").await;
    let line = log
        .lines()
        .find(|l| l.contains("env guest: serving"))
        .expect("line");
    assert!(
        line.contains("project=\"env\"") && line.contains("version=1") && line.contains("stdout"),
        "{line}"
    );
}

#[tokio::test]
async fn a_waiting_guest_times_out_with_504() {
    let host = TestHost::new()
        .project("slow", guests::SLOW)
        .manifest("slow", "[limits]\nrequest_timeout = \"500ms\"\n")
        .spawn();
    let fast = host.get("/slow?ms=10").await;
    assert_eq!(fast.status, StatusCode::OK);
    let started = std::time::Instant::now();
    let late = host.get("/slow?ms=60000").await;
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "timeout not enforced"
    );
    host.wait_for_log("request timed out after 500ms").await;
}

#[tokio::test]
async fn a_spinning_guest_is_interrupted_by_its_epoch_deadline() {
    let host = TestHost::new()
        .project("busy", guests::BUSY)
        .manifest("busy", "[limits]\nrequest_timeout = \"1s\"\n")
        .project("hello", guests::HELLO)
        .spawn();
    let spinning = tokio::spawn({
        let addr = host.addr;
        async move {
            send(
                addr,
                request("GET", "localhost", "/busy", crate::harness::empty()),
            )
            .await
        }
    });
    // While the guest spins, the other project still answers: the busy guest
    // yields every epoch tick, and moves to the slow lane after 2 ms.
    for _ in 0..5 {
        assert_eq!(host.get("/hello").await.status, StatusCode::OK);
    }
    let reply = spinning.await.expect("task");
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.header("wasmhost-project"), Some("busy"));
    assert_eq!(host.get("/busy?ms=5").await.status, StatusCode::OK);
}
