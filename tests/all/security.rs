//! Admin access, upload caps, crash safety and shutdown under load: what
//! keeps a shared host safe from its clients and from itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hyper::StatusCode;
use tokio::io::AsyncWriteExt as _;
use wasmhost_tests::guests;

use crate::harness::{
    Connection, TestHost, admin_request, empty, eventually, request, send, wasmhost,
};

#[test]
fn an_admin_api_off_loopback_refuses_to_start_without_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = wasmhost()
        .arg("serve")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .env_remove("WASMHOST_ADMIN_TOKEN")
        .output()
        .expect("ran wasmhost");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("0.0.0.0:0 is not a loopback address") && stderr.contains("--admin-token"),
        "{stderr}"
    );
}

/// An admin request with `Authorization: Bearer token`.
fn with_token(
    mut request: hyper::Request<crate::harness::TestBody>,
    token: &str,
) -> hyper::Request<crate::harness::TestBody> {
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("valid header"),
    );
    request
}

#[tokio::test]
async fn with_a_token_every_admin_request_must_carry_it() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .arg("--admin-token")
        .arg("s3cret-token")
        .spawn();
    let get = || request("GET", "localhost", "/projects", empty());
    let reply = send(host.admin, get()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    let reply = send(host.admin, with_token(get(), "s3cret-tokeN")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Probes carry no token and name the host by address, as a kubelet
    // does; they are answered, and tell nothing but one bit.
    for probe in ["/livez", "/readyz"] {
        let reply = send(host.admin, request("GET", "10.1.2.3:8081", probe, empty())).await;
        assert_eq!(reply.status, StatusCode::OK, "{probe}: {}", reply.text());
    }
    let reply = send(
        host.admin,
        request("GET", "10.1.2.3:8081", "/healthz", empty()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(host.admin, with_token(get(), "s3cret-token"))
            .await
            .status,
        StatusCode::OK
    );

    // A deploy without the token changes nothing; with it, it goes live.
    let echo = std::fs::read(guests::ECHO).expect("echo");
    let reply = send(
        host.admin,
        admin_request("PUT", "/projects/hello", echo.clone()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        host.get("/hello").await.header("wasmhost-version"),
        Some("1")
    );
    let reply = send(
        host.admin,
        with_token(
            admin_request("PUT", "/projects/hello", echo),
            "s3cret-token",
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        host.get("/hello").await.header("wasmhost-version"),
        Some("2")
    );
}

#[tokio::test]
async fn the_admin_api_refuses_requests_from_web_pages_of_other_sites() {
    let host = TestHost::new().project("victim", guests::HELLO).spawn();
    // DNS rebinding: a page's own name, pointed at 127.0.0.1.
    let rebound = send(
        host.admin,
        request("GET", "attacker.example:8081", "/projects", empty()),
    )
    .await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN, "{}", rebound.text());
    assert!(
        rebound.text().contains("attacker.example"),
        "{}",
        rebound.text()
    );
    // Cross-site: a page's request to 127.0.0.1 carries the page's origin.
    let mut delete = request("DELETE", "127.0.0.1", "/projects/victim", empty());
    delete.headers_mut().insert(
        "origin",
        "https://attacker.example".parse().expect("valid header"),
    );
    let cross_site = send(host.admin, delete).await;
    assert_eq!(
        cross_site.status,
        StatusCode::FORBIDDEN,
        "{}",
        cross_site.text()
    );
    // A page served from loopback on another port (a guest on the project
    // listener, say) is another origin too.
    let mut reload = request("POST", "127.0.0.1", "/projects/victim/reload", empty());
    reload.headers_mut().insert(
        "origin",
        format!("http://{}", host.addr)
            .parse()
            .expect("valid header"),
    );
    let from_a_guest_page = send(host.admin, reload).await;
    assert_eq!(
        from_a_guest_page.status,
        StatusCode::FORBIDDEN,
        "{}",
        from_a_guest_page.text()
    );
    assert_eq!(host.get("/victim").await.text(), "Hello, world!\n");
    assert!(host.dir().join("victim/victim.wasm").is_file());
    // Local tools, which name a loopback host, are answered.
    let local = send(
        host.admin,
        request("GET", "127.0.0.1:8081", "/projects", empty()),
    )
    .await;
    assert_eq!(local.status, StatusCode::OK);
}

#[tokio::test]
async fn the_admin_token_comes_from_a_file_for_the_host_and_the_cli() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let file = secrets.path().join("token");
    std::fs::write(&file, "file-token-7c1\n").expect("write token");
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .arg("--admin-token-file")
        .arg(file.to_str().expect("utf-8 path"))
        .spawn();
    let get = || request("GET", "localhost", "/projects", empty());
    assert_eq!(
        send(host.admin, get()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(host.admin, with_token(get(), "file-token-7c1"))
            .await
            .status,
        StatusCode::OK
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", host.pid())).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains("file-token-7c1"));

    let admin = format!("http://{}", host.admin);
    let by_flag = wasmhost()
        .args(["status", "--admin", &admin, "--admin-token-file"])
        .arg(&file)
        .output()
        .expect("ran wasmhost status");
    assert!(by_flag.status.success(), "{by_flag:?}");
    let by_env = wasmhost()
        .args(["status", "--admin", &admin])
        .env("WASMHOST_ADMIN_TOKEN_FILE", &file)
        .output()
        .expect("ran wasmhost status");
    assert!(by_env.status.success(), "{by_env:?}");
    assert!(String::from_utf8_lossy(&by_env.stdout).contains("hello"));

    let empty_file = secrets.path().join("empty");
    std::fs::write(&empty_file, "\n").expect("write");
    let refused = TestHost::new()
        .arg("--admin-token-file")
        .arg(empty_file.to_str().expect("utf-8 path"))
        .command()
        .output()
        .expect("ran wasmhost serve");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("admin token file") && stderr.contains("is empty"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_token_also_comes_from_the_environment_for_the_cli() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .arg("--admin-token")
        .arg("from-env")
        .spawn();
    let admin = format!("http://{}", host.admin);
    let status = |token: Option<&str>| {
        let mut command = wasmhost();
        command.args(["status", "--admin", &admin]);
        match token {
            Some(token) => command.env("WASMHOST_ADMIN_TOKEN", token),
            None => command.env_remove("WASMHOST_ADMIN_TOKEN"),
        };
        command.output().expect("ran wasmhost status")
    };
    let refused = status(None);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    let allowed = status(Some("from-env"));
    assert!(allowed.status.success(), "{allowed:?}");
    assert!(
        String::from_utf8_lossy(&allowed.stdout).contains("hello"),
        "{allowed:?}"
    );
}

#[tokio::test]
async fn uploads_over_the_deploy_cap_get_413_and_change_nothing() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .arg("--max-deploy-size")
        .arg("16KiB")
        .spawn();
    let echo = std::fs::read(guests::ECHO).expect("echo");
    assert!(echo.len() > 16 << 10);
    let reply = host.deploy("hello", &echo).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        reply.text().contains("--max-deploy-size"),
        "{}",
        reply.text()
    );
    assert_eq!(
        host.get("/hello").await.header("wasmhost-version"),
        Some("1")
    );
}

#[tokio::test]
async fn killing_the_host_mid_upload_keeps_the_previous_component() {
    let host = TestHost::new().project("app", guests::HELLO).spawn();
    let hello = std::fs::read(guests::HELLO).expect("hello");
    let echo = std::fs::read(guests::ECHO).expect("echo");
    // Half an upload, on a raw socket, then SIGKILL.
    let mut stream = tokio::net::TcpStream::connect(host.admin)
        .await
        .expect("connect");
    let head = format!(
        "PUT /projects/app HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\n\r\n",
        echo.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&echo[..echo.len() / 2])
        .await
        .expect("half the body");
    stream.flush().await.expect("flush");
    let host = host.restart(&[]);
    drop(stream);
    assert_eq!(host.get("/app").await.status, StatusCode::OK);
    assert_eq!(host.get("/app").await.text(), "Hello, world!\n");
    let on_disk = std::fs::read(host.dir().join("app/app.wasm")).expect("component on disk");
    assert_eq!(on_disk, hello);
    let leftovers: Vec<_> = std::fs::read_dir(host.dir().join("app"))
        .expect("project folder")
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|name| name.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn sigterm_under_load_answers_every_accepted_request_and_exits_0() {
    let mut host = TestHost::new()
        .project("hello", guests::HELLO)
        .project("slow", guests::SLOW)
        .spawn();
    let addr = host.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        clients.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await;
            // Bounded: at most 5000 requests per connection.
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match connection.get("/hello").await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(_) => bad.fetch_add(1, Ordering::Relaxed),
                    // The connection closed between requests (shutdown):
                    // nothing was accepted on it, so nothing was lost.
                    Err(_) => break,
                };
            }
        }));
    }
    let slow = tokio::spawn(async move {
        send(addr, request("GET", "localhost", "/slow?ms=1500", empty())).await
    });
    eventually("served some load", || {
        let served = ok.load(Ordering::Relaxed);
        async move {
            if served >= 200 {
                Ok(())
            } else {
                Err(format!("{served} served"))
            }
        }
    })
    .await;
    host.terminate();
    let reply = slow.await.expect("slow task");
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request was cut"
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "non-200 answers during shutdown"
    );
    let status = host.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", host.log());
}
