//! The admin event stream (Server-Sent Events).

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use wasmhost_tests::guests;

use crate::harness::{DEADLINE, TestHost, empty, request};

/// An open `GET /events` stream.
struct EventStream {
    body: Incoming,
    text: String,
}

impl EventStream {
    async fn open(admin: std::net::SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let response = sender
            .send_request(request("GET", "localhost", "/events", empty()))
            .await
            .expect("events");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut events = Self {
            body: response.into_body(),
            text: String::new(),
        };
        // The stream announces itself once subscribed: events after this are seen.
        events.wait_for_text(": wasmhost events").await;
        events
    }

    async fn wait_for_text(&mut self, needle: &str) {
        let started = Instant::now();
        while !self.text.contains(needle) {
            let left = DEADLINE.saturating_sub(started.elapsed());
            let frame = tokio::time::timeout(left, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in the event stream:\n{}", self.text))
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Waits for the next `event: KIND` and returns its data.
    async fn next(&mut self, kind: &str) -> Value {
        let marker = format!("event: {kind}\ndata: ");
        self.wait_for_text(&marker).await;
        let start = self.text.find(&marker).expect("found") + marker.len();
        self.wait_for_text_after(start, "\n\n").await;
        let end = start + self.text[start..].find("\n\n").expect("end");
        let data: Value = serde_json::from_str(&self.text[start..end]).expect("JSON event");
        self.text.drain(..end);
        data
    }

    async fn wait_for_text_after(&mut self, start: usize, needle: &str) {
        while !self.text[start..].contains(needle) {
            let frame = tokio::time::timeout(DEADLINE, self.body.frame())
                .await
                .expect("in time")
                .expect("open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_shows_each_lifecycle_step() {
    let host = TestHost::new().project("app", guests::SLOW).spawn();
    let mut events = EventStream::open(host.admin).await;

    let addr = host.addr;
    let slow = tokio::spawn(async move {
        crate::harness::send(addr, request("GET", "localhost", "/app?ms=800", empty())).await
    });
    host.wait_for_project("app", "a request in flight", |p| p["in_flight"] == 1)
        .await;
    host.deploy_guest("app", guests::HELLO).await;
    let compiled = events.next("compiled").await;
    assert_eq!(
        (compiled["project"].as_str(), compiled["version"].as_u64()),
        (Some("app"), Some(2))
    );
    assert!(compiled["compile_ms"].as_f64().expect("compile_ms") > 0.0);
    let live = events.next("live").await;
    assert_eq!(
        (live["version"].as_u64(), live["previous"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(live["swap_ms"].is_number() && live["digest"].as_str().is_some_and(|d| d.len() == 64));
    let draining = events.next("draining").await;
    assert_eq!(
        (draining["version"].as_u64(), draining["in_flight"].as_u64()),
        (Some(1), Some(1))
    );
    slow.await.expect("slow request");
    let released = events.next("released").await;
    assert_eq!(released["version"].as_u64(), Some(1));

    assert_eq!(
        host.deploy("app", b"not a component").await.status,
        hyper::StatusCode::UNPROCESSABLE_ENTITY
    );
    let rejected = events.next("rejected").await;
    assert_eq!(
        (rejected["version"].as_u64(), rejected["step"].as_str()),
        (Some(3), Some("prepare"))
    );
    assert!(
        rejected["reason"]
            .as_str()
            .expect("reason")
            .contains("not a valid WebAssembly component")
    );

    std::fs::write(
        host.dir().join("app/app.wasm"),
        std::fs::read(guests::ECHO).expect("read"),
    )
    .expect("write");
    let detected = events.next("change_detected").await;
    assert_eq!(detected["project"].as_str(), Some("app"));
    assert_eq!(events.next("live").await["version"].as_u64(), Some(4));

    assert_eq!(
        host.admin("DELETE", "/projects/app", Vec::new())
            .await
            .status,
        hyper::StatusCode::OK
    );
    assert_eq!(
        events.next("removed").await["project"].as_str(),
        Some("app")
    );
}

#[tokio::test]
async fn an_open_event_stream_does_not_hold_up_shutdown() {
    let mut host = TestHost::new()
        .project("app", guests::HELLO)
        .arg("--grace-period")
        .arg("60s")
        .spawn();
    let _events = EventStream::open(host.admin).await;
    let started = Instant::now();
    host.terminate();
    let status = host.wait_exit().await;
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown waited on the event stream"
    );
}
