//! The client commands against a running host, as a developer runs them.

use std::process::Output;
use std::time::Instant;

use hyper::StatusCode;
use wasmhost_tests::guests;

use crate::harness::{RunningHost, TestHost, wasmhost};

/// Runs `wasmhost ARGS --admin URL` against `host`.
fn run(host: &RunningHost, args: &[&str]) -> Output {
    wasmhost()
        .args(args)
        .args(["--admin", &format!("http://{}", host.admin)])
        .output()
        .expect("run wasmhost")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn deploy_into_a_running_host_and_the_other_project_is_unaffected() {
    let host = TestHost::new().project("a", guests::HELLO).spawn();
    let deployed = run(&host, &["deploy", "b", guests::ECHO]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let line = stdout(&deployed);
    assert!(
        line.starts_with("b: v1 live (compiled in ") && line.contains(" ms, swap "),
        "{line}"
    );
    assert_eq!(host.get("/b/x").await.header("echo-path"), Some("/b/x"));
    let a = host.admin_project("a").await;
    assert_eq!(
        (a["version"].as_u64(), a["stats"]["swaps"].as_u64()),
        (Some(1), Some(1))
    );

    let again = run(&host, &["deploy", "b", guests::ECHO]);
    assert_eq!(stdout(&again), "b: unchanged (v1 still live)\n");
}

#[tokio::test]
async fn a_rejected_deploy_exits_1_with_the_reason() {
    let host = TestHost::new().project("a", guests::HELLO).spawn();
    let rejected = run(&host, &["deploy", "a", guests::COMMAND]);
    assert_eq!(rejected.status.code(), Some(1));
    let err = stderr(&rejected);
    assert!(
        err.starts_with("error: a: v2 rejected: ") && err.contains("(step: prepare)"),
        "{err}"
    );
    assert_eq!(host.get("/a").await.text(), "Hello, world!\n");

    let missing = run(&host, &["deploy", "a", "/nonexistent/x.wasm"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("failed to read /nonexistent/x.wasm"),
        "{}",
        stderr(&missing)
    );
    let bad_name = run(&host, &["deploy", "../etc", guests::HELLO]);
    assert_eq!(bad_name.status.code(), Some(1));
    assert!(
        stderr(&bad_name).contains("project name"),
        "{}",
        stderr(&bad_name)
    );
}

#[tokio::test]
async fn deploy_with_a_config_uses_and_writes_it() {
    let host = TestHost::new().spawn();
    let config = host.dir().join("../custom-wasmhost.toml");
    std::fs::write(&config, "route = \"/custom\"\n[env]\nWHO = \"deploy\"\n")
        .expect("write config");
    let deployed = run(
        &host,
        &[
            "deploy",
            "envy",
            guests::ENV,
            "--config",
            config.to_str().expect("utf-8"),
        ],
    );
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert_eq!(host.get("/custom").await.text(), "WHO=deploy\n");
    let on_disk =
        std::fs::read_to_string(host.dir().join("envy/wasmhost.toml")).expect("config written");
    assert!(on_disk.contains("WHO = \"deploy\""), "{on_disk}");

    std::fs::write(&config, "rout = \"/typo\"\n").expect("write config");
    let rejected = run(
        &host,
        &[
            "deploy",
            "envy",
            guests::ENV,
            "--config",
            config.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(rejected.status.code(), Some(1));
    assert!(
        stderr(&rejected).contains("wasmhost.toml:1: unknown field `rout`"),
        "{}",
        stderr(&rejected)
    );
    assert_eq!(host.get("/custom").await.text(), "WHO=deploy\n");
}

#[tokio::test]
async fn status_reload_rollback_and_rm() {
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .project("b", guests::ECHO)
        .arg("--no-watch")
        .spawn();
    let status = run(&host, &["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let table = stdout(&status);
    assert!(
        table.lines().next().is_some_and(|l| l.starts_with("NAME")
            && l.contains("IN FLIGHT")
            && l.contains("LAST ERROR")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("a ")
            && l.contains("/a")
            && l.contains("v1")
            && l.contains("active")),
        "{table}"
    );

    std::fs::write(host.dir().join("a/wasmhost.toml"), "[env]\nX = \"1\"\n").expect("write");
    let reload = run(&host, &["reload", "a"]);
    assert_eq!(
        stdout(&reload),
        stdout(&reload)
            .lines()
            .next()
            .map(|l| format!("{l}\n"))
            .unwrap_or_default()
    );
    assert!(
        stdout(&reload).starts_with("a: v2 live (prepared from cache"),
        "{}",
        stdout(&reload)
    );

    // Rollback is over builds: a config-only change has no earlier build to go back to.
    assert_eq!(run(&host, &["rollback", "a"]).status.code(), Some(1));
    let deployed = run(&host, &["deploy", "a", guests::ECHO]);
    assert!(
        stdout(&deployed).starts_with("a: v3 live"),
        "{}",
        stdout(&deployed)
    );
    let rollback = run(&host, &["rollback", "a"]);
    assert!(rollback.status.success(), "{}", stderr(&rollback));
    assert!(
        stdout(&rollback).starts_with("a: v4 live"),
        "{}",
        stdout(&rollback)
    );
    assert_eq!(host.get("/a").await.text(), "Hello, world!\n");
    let no_more = run(&host, &["rollback", "a"]);
    assert_eq!(no_more.status.code(), Some(1));
    assert!(
        stderr(&no_more).contains("no earlier good version"),
        "{}",
        stderr(&no_more)
    );

    let removed = run(&host, &["rm", "b"]);
    assert_eq!(stdout(&removed), "b: removed\n");
    assert_eq!(host.get("/b").await.status, StatusCode::NOT_FOUND);
    assert!(!host.dir().join("b").exists());
}

#[tokio::test]
async fn three_projects_deployed_at_once_are_all_routable() {
    let host = TestHost::new().spawn();
    let started = Instant::now();
    let deploys: Vec<_> = [
        ("one", guests::HELLO),
        ("two", guests::ECHO),
        ("three", guests::SLOW),
    ]
    .into_iter()
    .map(|(name, guest)| {
        let admin = format!("http://{}", host.admin);
        std::thread::spawn(move || {
            wasmhost()
                .args(["deploy", name, guest, "--admin", &admin])
                .output()
                .expect("run wasmhost")
        })
    })
    .collect();
    for deploy in deploys {
        let output = deploy.join().expect("deploy thread");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!(
        "3 concurrent deploys (cold cache, compiles bounded to 1 at a time) live in {} ms",
        started.elapsed().as_millis()
    );
    for name in ["one", "two", "three"] {
        assert_eq!(
            host.get(&format!("/{name}?ms=1")).await.status,
            StatusCode::OK,
            "{name}"
        );
    }
}

#[tokio::test]
async fn no_host_running_is_a_clear_error() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = unused.local_addr().expect("addr");
    drop(unused);
    let output = wasmhost()
        .args(["status", "--admin", &format!("http://{addr}")])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is `wasmhost serve` running?"));
}
