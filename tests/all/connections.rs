//! Hostile and careless clients at the connection level: heads trickled a
//! byte at a time, idle keep-alive connections, and more connections than
//! the host takes at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wasmhost_tests::guests;

use crate::harness::{DEADLINE, TestHost};

const GET_HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nhost: localhost\r\n\r\n";

/// Sends a whole GET on `stream` and reads one response head and body.
async fn get_on(stream: &mut TcpStream) -> String {
    stream.write_all(GET_HELLO).await.expect("write request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("Hello, world!") {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client that sends a request head one byte a second and reports how
/// many bytes it got out, and after how long, when the server closed it.
async fn trickle(addr: SocketAddr) -> (usize, Duration) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 64];
    loop {
        if sent < GET_HELLO.len() && stream.write_all(&GET_HELLO[sent..=sent]).await.is_ok() {
            sent += 1;
        }
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return (sent, started.elapsed()),
                Ok(_) => panic!("answered a request whose head never finished"),
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        assert!(started.elapsed() < DEADLINE, "never closed");
    }
}

#[tokio::test]
async fn a_thousand_trickling_heads_are_closed_at_the_header_timeout_and_others_are_served() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .arg("--header-timeout")
        .arg("3s")
        .spawn();
    let tricklers: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(trickle(host.addr)))
        .collect();
    // Everyone else is served meanwhile.
    for _ in 0..50 {
        let reply = host.get("/hello").await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    for trickler in tricklers {
        let (sent, after) = trickler.await.expect("trickler task");
        // Closed by the header timeout: never before it (one watcher tick
        // early at most), and long before the head could have finished.
        assert!(
            after >= Duration::from_millis(2500),
            "closed after {after:?}"
        );
        assert!(sent < GET_HELLO.len(), "the whole head went through");
    }
    assert_eq!(host.get("/hello").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_long_request_is_not() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .project("slow", guests::SLOW)
        .arg("--idle-timeout")
        .arg("1s")
        .arg("--header-timeout")
        .arg("60s")
        .spawn();
    let mut stream = TcpStream::connect(host.addr).await.expect("connect");
    let answer = get_on(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let idle_since = Instant::now();
    // Closed for being idle, well before the header timeout could do it.
    let mut buf = [0u8; 64];
    let ended = tokio::time::timeout(Duration::from_secs(45), stream.read(&mut buf)).await;
    assert!(
        matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
        "not closed while idle: {ended:?}"
    );
    assert!(idle_since.elapsed() >= Duration::from_millis(800));

    // A request that takes longer than the idle timeout is not idle.
    let slow = host.get("/slow?ms=2500").await;
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(slow.text(), "slept 2500 ms\n");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .arg("--max-connections")
        .arg("2")
        .spawn();
    let mut first = TcpStream::connect(host.addr).await.expect("connect");
    let mut second = TcpStream::connect(host.addr).await.expect("connect");
    get_on(&mut first).await;
    get_on(&mut second).await;
    // The third is accepted by the kernel, but the host does not take it yet.
    let mut third = TcpStream::connect(host.addr).await.expect("connect");
    third.write_all(GET_HELLO).await.expect("write");
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served past the connection cap: {early:?}");
    drop(first);
    let n = tokio::time::timeout(DEADLINE, third.read(&mut buf))
        .await
        .expect("served once a slot freed")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    get_on(&mut second).await;
}

#[tokio::test]
async fn a_streaming_response_is_not_idle_between_its_chunks() {
    let host = TestHost::new().arg("--idle-timeout").arg("1s").spawn();
    let mut stream = TcpStream::connect(host.admin).await.expect("connect");
    stream
        .write_all(b"GET /events HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(": wasmhost events") {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("the stream starts")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // Longer than the idle timeout passes with no request and at most a
    // keep-alive comment (every 15 s), yet the stream stays open.
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => panic!("the stream was closed while idle"),
            Ok(Ok(_)) => {}
        }
    }
}
