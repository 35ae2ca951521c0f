//! Routing by host and by path, as the README promises it.

use hyper::StatusCode;
use wasmhost_tests::guests;

use crate::harness::TestHost;

#[tokio::test]
async fn two_projects_side_by_side() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .file_project("echo", guests::ECHO)
        .spawn();
    let hello = host.get("/hello").await;
    assert_eq!(hello.status, StatusCode::OK);
    assert_eq!(hello.text(), "Hello, world!\n");
    assert_eq!(hello.header("wasmhost-project"), Some("hello"));
    assert_eq!(hello.header("wasmhost-version"), Some("1"));

    let echo = host.get("/echo/x?y=1").await;
    assert_eq!(echo.status, StatusCode::OK);
    assert_eq!(echo.header("echo-path"), Some("/echo/x?y=1"));
    assert_eq!(echo.header("wasmhost-project"), Some("echo"));
}

#[tokio::test]
async fn host_header_routes_and_keeps_the_path() {
    let host = TestHost::new()
        .project("echo", guests::ECHO)
        .manifest(
            "echo",
            "route = \"/e\"\nstrip_prefix = true\nhosts = [\"echo.example.com\"]\n",
        )
        .project("hello", guests::HELLO)
        .spawn();
    for host_header in [
        "echo.localhost",
        "ECHO.localhost:8080",
        "echo.example.com",
        "echo.example.com:1234",
    ] {
        let reply = host.get_with_host(host_header, "/e/x?q=1").await;
        assert_eq!(reply.status, StatusCode::OK, "{host_header}");
        // Host routing: the path is untouched, strip_prefix or not.
        assert_eq!(reply.header("echo-path"), Some("/e/x?q=1"), "{host_header}");
    }
    let root = host.get_with_host("echo.localhost", "/").await;
    assert_eq!(root.header("echo-path"), Some("/"));
    // An unknown host falls back to path routing.
    let fallback = host.get_with_host("other.localhost", "/hello").await;
    assert_eq!(fallback.header("wasmhost-project"), Some("hello"));
    let by_name = host.get_with_host("hello.localhost", "/anything").await;
    assert_eq!(by_name.text(), "Hello, world!\n");
}

#[tokio::test]
async fn longest_prefix_on_segment_boundaries() {
    let host = TestHost::new()
        .project("outer", guests::HELLO)
        .manifest("outer", "route = \"/app\"\n")
        .project("inner", guests::ECHO)
        .manifest("inner", "route = \"/app/api\"\n")
        .spawn();
    let cases = [
        ("/app", Some("outer")),
        ("/app/", Some("outer")),
        ("/app/x?y", Some("outer")),
        ("/app/apix", Some("outer")),
        ("/app/api", Some("inner")),
        ("/app/api/v1?z=2", Some("inner")),
        ("/apple", None),
        ("/", None),
    ];
    for (path, project) in cases {
        let reply = host.get(path).await;
        assert_eq!(reply.header("wasmhost-project"), project, "{path}");
        if project.is_none() {
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        }
    }
    assert_eq!(
        host.get("/app/api/v1?z=2").await.header("echo-path"),
        Some("/app/api/v1?z=2")
    );
}

#[tokio::test]
async fn strip_prefix_hands_the_guest_the_rest() {
    let host = TestHost::new()
        .project("echo", guests::ECHO)
        .manifest("echo", "strip_prefix = true\n")
        .spawn();
    for (path, seen) in [
        ("/echo/x?y", "/x?y"),
        ("/echo", "/"),
        ("/echo/", "/"),
        ("/echo?q=1", "/?q=1"),
    ] {
        assert_eq!(
            host.get(path).await.header("echo-path"),
            Some(seen),
            "{path}"
        );
    }
}

#[tokio::test]
async fn root_route_catches_what_nothing_else_matches() {
    let host = TestHost::new()
        .project("site", guests::ECHO)
        .manifest("site", "route = \"/\"\n")
        .project("hello", guests::HELLO)
        .spawn();
    assert_eq!(
        host.get("/hello").await.header("wasmhost-project"),
        Some("hello")
    );
    let other = host.get("/anything/else").await;
    assert_eq!(other.header("wasmhost-project"), Some("site"));
    assert_eq!(other.header("echo-path"), Some("/anything/else"));
}

#[tokio::test]
async fn unrouted_path_is_a_plain_404() {
    let host = TestHost::new().project("hello", guests::HELLO).spawn();
    let reply = host.get("/nobody/here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(reply.text().len() < 100 && !reply.text().is_empty());
    assert_eq!(reply.header("wasmhost-project"), None);
}

#[tokio::test]
async fn conflicting_routes_and_hosts_route_the_first_only() {
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .manifest("a", "route = \"/same\"\nhosts = [\"shared.test\"]\n")
        .project("b", guests::ECHO)
        .manifest("b", "route = \"/same\"\n")
        .project("c", guests::ECHO)
        .manifest("c", "hosts = [\"shared.test\"]\n")
        .spawn();
    assert_eq!(
        host.get("/same").await.header("wasmhost-project"),
        Some("a")
    );
    assert_eq!(
        host.get_with_host("shared.test", "/")
            .await
            .header("wasmhost-project"),
        Some("a")
    );
    // The losers are not routed at all, not even by their own name.
    assert_eq!(host.get("/c").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        host.get_with_host("b.localhost", "/").await.status,
        StatusCode::NOT_FOUND
    );
    let b = host.admin_project("b").await;
    assert_eq!(b["state"], "failed");
    assert_eq!(
        b["last_error"],
        "route `/same` is already claimed by project `a`"
    );
    let c = host.admin_project("c").await;
    assert_eq!(
        c["last_error"],
        "host `shared.test` is already claimed by project `a`"
    );
    host.wait_for_log("route `/same` is already claimed by project `a`")
        .await;
}

#[tokio::test]
async fn a_deploy_never_takes_another_projects_route_or_host() {
    let host = TestHost::new()
        .project("evil", guests::HELLO)
        .manifest("evil", "route = \"/evil\"\nhosts = [\"evil.example\"]\n")
        .spawn();
    let probe = std::fs::read(guests::ECHO).expect("guest");
    // Names before and after `evil`, which used to decide who kept the route.
    for (name, config, claim) in [
        ("aaa", "route = \"/evil\"\n", "route `/evil`"),
        ("zzz", "route = \"/evil\"\n", "route `/evil`"),
        ("aab", "hosts = [\"evil.example\"]\n", "host `evil.example`"),
        (
            "aac",
            "hosts = [\"evil.localhost\"]\n",
            "host `evil.localhost`",
        ),
    ] {
        let reply = host.deploy_with_config(name, &probe, config).await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{name}: {}",
            reply.text()
        );
        let answer = reply.json();
        assert_eq!(answer["step"], "route", "{answer}");
        let reason = answer["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(claim) && reason.contains("`evil`"),
            "{reason}"
        );
        // Nothing changed: the owner serves, the newcomer is unknown and not on disk.
        let owner = host.get("/evil").await;
        assert_eq!(owner.header("wasmhost-project"), Some("evil"));
        let by_host = host.get_with_host("evil.example", "/").await;
        assert_eq!(by_host.header("wasmhost-project"), Some("evil"));
        assert_eq!(
            host.admin_get(&format!("/projects/{name}")).await.status,
            StatusCode::NOT_FOUND
        );
        assert!(
            !host.dir().join(name).exists(),
            "{name} was written to disk"
        );
        host.wait_for_log(&format!(
            "{name}: v1 rejected: {claim} is already served by project `evil`"
        ))
        .await;
    }
    assert_eq!(host.admin_project("evil").await["state"], "active");

    // The CLI says so and exits 1.
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(config.path(), "route = \"/evil\"\n").expect("write config");
    let output = crate::harness::wasmhost()
        .args(["deploy", "aaa", guests::ECHO, "--config"])
        .arg(config.path())
        .args(["--admin", &format!("http://{}", host.admin)])
        .output()
        .expect("ran wasmhost deploy");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("route `/evil` is already served by project `evil`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_watched_change_or_reload_never_takes_another_projects_route() {
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .project("b", guests::ECHO)
        .spawn();
    let manifest = host.dir().join("b/wasmhost.toml");
    std::fs::write(&manifest, "route = \"/a\"\n").expect("write manifest");
    let b = host
        .wait_for_project("b", "the change rejected", |b| b["stats"]["rejected"] == 1)
        .await;
    assert_eq!(b["last_failure"]["step"], "route", "{b:#}");
    assert_eq!(b["version"], 1);
    assert_eq!(host.get("/a").await.header("wasmhost-project"), Some("a"));
    assert_eq!(host.get("/b").await.header("wasmhost-project"), Some("b"));
    // The file stays as the user wrote it; the host changes nothing on disk.
    assert_eq!(
        std::fs::read_to_string(&manifest).expect("read"),
        "route = \"/a\"\n"
    );
    let reload = host.admin("POST", "/projects/b/reload", Vec::new()).await;
    assert_eq!(reload.status, StatusCode::CONFLICT, "{}", reload.text());
    assert_eq!(host.get("/a").await.header("wasmhost-project"), Some("a"));
}

#[tokio::test]
async fn a_route_never_moves_off_the_project_serving_it() {
    // At start-up `p0` takes the host, so `pa` (host and route) is not routed
    // and `pb` gets the route.
    let host = TestHost::new()
        .project("p0", guests::HELLO)
        .manifest("p0", "hosts = [\"h.example\"]\n")
        .project("pa", guests::ECHO)
        .manifest("pa", "route = \"/x\"\nhosts = [\"h.example\"]\n")
        .project("pb", guests::HELLO)
        .manifest("pb", "route = \"/x\"\n")
        .spawn();
    assert_eq!(host.get("/x").await.header("wasmhost-project"), Some("pb"));
    assert_eq!(host.admin_project("pa").await["state"], "failed");
    // Removing `p0` frees the host, but `/x` stays with `pb`, which serves it,
    // although `pa` sorts first.
    let removed = host.admin("DELETE", "/projects/p0", Vec::new()).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());
    assert_eq!(host.get("/x").await.header("wasmhost-project"), Some("pb"));
    assert_eq!(host.admin_project("pb").await["state"], "active");
}

/// Sends `head` (a request line and headers) on a connection of its own
/// and returns the whole answer, read until the host closes.
async fn raw(addr: std::net::SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(crate::harness::DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("the host answers and closes")
        .expect("read");
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

/// Request-target forms besides a plain path: an absolute URL hands the
/// guest its path; a bare `host:port` (authority-form, as CONNECT uses)
/// has no path to route on or hand a guest, and is refused before any
/// guest runs.
#[tokio::test]
async fn every_request_target_form_routes_by_its_path_or_is_refused() {
    let host = TestHost::new().project("echo", guests::ECHO).spawn();
    let closing = "host: localhost\r\nconnection: close\r\n\r\n";
    let absolute = raw(
        host.addr,
        &format!("GET http://localhost/echo/x?y=1 HTTP/1.1\r\n{closing}"),
    )
    .await;
    assert!(absolute.starts_with("http/1.1 200"), "{absolute}");
    assert!(
        absolute.contains("echo-path: /echo/x?y=1\r\n"),
        "{absolute}"
    );

    for target in ["CONNECT localhost:443", "GET localhost:80"] {
        let answer = raw(host.addr, &format!("{target} HTTP/1.1\r\n{closing}")).await;
        assert!(answer.starts_with("http/1.1 400"), "{target}: {answer}");
        assert!(!answer.contains("wasmhost-project"), "{target}: {answer}");
    }
    let stats = host.admin_project("echo").await["stats"].clone();
    assert_eq!(
        stats["requests"], 1,
        "only the absolute-form request ran: {stats}"
    );
}
