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
