//! The admin API as an operator uses it.

use hyper::StatusCode;
use wasmhost_tests::guests;

use crate::harness::TestHost;

#[tokio::test]
async fn admin_lists_projects_as_json() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .file_project("echo", guests::ECHO)
        .project("broken", guests::HELLO)
        .manifest("broken", "route = 42\n")
        .spawn();
    assert_eq!(host.admin_get("/healthz").await.status, StatusCode::OK);

    let list = host.admin_get("/projects").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.header("content-type"), Some("application/json"));
    let list = list.json();
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["broken", "echo", "hello"]);

    let hello = host.admin_project("hello").await;
    assert_eq!(hello["route"], "/hello");
    assert_eq!(hello["state"], "active");
    assert_eq!(hello["version"], 1);
    assert_eq!(hello["in_flight"], 0);
    let component = hello["component"].as_str().expect("component path");
    assert!(component.ends_with("hello/hello.wasm"), "{component}");
    let bytes = std::fs::read(component).expect("component exists");
    assert_eq!(hello["size"], bytes.len() as u64);
    assert_eq!(hello["digest"], sha256_hex(&bytes));

    let broken = host.admin_project("broken").await;
    assert_eq!(broken["state"], "failed");
    assert_eq!(broken["version"], serde_json::Value::Null);
    let error = broken["last_error"].as_str().expect("error text");
    assert!(error.contains("broken/wasmhost.toml:1:"), "{error}");

    assert_eq!(
        host.admin_get("/projects/nobody").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        host.admin_get("/projects/..").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        host.admin_get("/nothing").await.status,
        StatusCode::NOT_FOUND
    );
}

/// sha256 via the system's `sha256sum`, an implementation independent of the host's.
fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}
