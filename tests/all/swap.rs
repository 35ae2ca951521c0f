//! Hot swap: deploys, rejections, drains, rollback, the compile cache.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::Value;
use wasmhost_tests::guests;

use crate::harness::{
    COMPILE_DEADLINE, SCHED_IDLE, SwapTraffic, TestHost, admin_request, empty, eventually, request,
    send, send_within, thread_stat, threads_named,
};

/// `tests/fixtures/start-trap.wat`, assembled.
fn start_trap_component() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/start-trap.wat");
    wat::parse_file(path).unwrap_or_else(|err| panic!("failed to assemble {path}: {err}"))
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).expect("read guest")
}

#[tokio::test]
async fn a_slow_request_finishes_on_v1_while_new_ones_get_v2_then_v1_is_released() {
    let host = TestHost::new().project("app", guests::SLOW).spawn();
    let addr = host.addr;
    let slow = tokio::spawn(async move {
        send(addr, request("GET", "localhost", "/app?ms=1500", empty())).await
    });
    host.wait_for_project("app", "a request in flight", |p| p["in_flight"] == 1)
        .await;

    let deployed = host.deploy_guest("app", guests::HELLO).await;
    assert_eq!(deployed["outcome"], "live");
    assert_eq!(deployed["live_version"], 2);
    assert_eq!(deployed["previous_version"], 1);
    // New requests go to v2 at once, while v1 still runs its request.
    let fresh = host.get("/app").await;
    assert_eq!(
        (fresh.header("wasmhost-version"), fresh.text().as_str()),
        (Some("2"), "Hello, world!\n")
    );
    let project = host.admin_project("app").await;
    assert_eq!(project["state"], "draining");
    let draining: Vec<&Value> = project["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter(|v| v["state"] == "draining")
        .collect();
    assert_eq!(draining.len(), 1, "{project:#}");
    assert_eq!(
        (
            draining[0]["version"].clone(),
            draining[0]["in_flight"].clone()
        ),
        (Value::from(1), Value::from(1))
    );

    let old = slow.await.expect("task");
    assert_eq!(old.status, StatusCode::OK);
    assert_eq!(old.header("wasmhost-version"), Some("1"));
    assert_eq!(old.text(), "slept 1500 ms\n");
    // v1 is dropped once its last request ends: the drop counter proves it.
    let project = host
        .wait_for_project("app", "v1 released", |p| p["stats"]["released"] == 1)
        .await;
    assert_eq!(project["state"], "active");
    assert_eq!(project["versions"].as_array().expect("versions").len(), 1);
    assert_eq!(project["stats"]["forced_drains"], 0);
    host.wait_for_log("app: v1 released after").await;
    // What is live is what is on disk.
    assert_eq!(
        std::fs::read(host.dir().join("app/app.wasm")).expect("on disk"),
        read(guests::HELLO)
    );
}

#[tokio::test]
async fn fifty_swaps_under_sixteen_busy_connections_drop_and_mix_nothing() {
    const CONNECTIONS: usize = 16;
    const SWAPS: u64 = 50;
    let host = TestHost::new().project("app", guests::HELLO).spawn();
    let traffic = SwapTraffic::start(host.addr, CONNECTIONS);
    traffic.swap(&host, SWAPS, Duration::from_millis(5)).await;
    let (total, versions) = traffic.finish().await;
    println!(
        "{total} responses over {CONNECTIONS} connections, {} distinct versions seen",
        versions.len()
    );
    assert!(versions.len() >= 10, "traffic saw only {versions:?}");
    let project = host.admin_project("app").await;
    assert_eq!(project["stats"]["swaps"], SWAPS + 1);
    assert_eq!(project["stats"]["forced_drains"], 0);
}

#[tokio::test]
async fn broken_components_are_rejected_and_v1_keeps_serving() {
    let host = TestHost::new().project("app", guests::HELLO).spawn();
    let hello = read(guests::HELLO);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "empty file",
            Vec::new(),
            "prepare",
            "not a valid WebAssembly component",
        ),
        (
            "truncated component",
            hello[..hello.len() / 2].to_vec(),
            "prepare",
            "not a valid WebAssembly component",
        ),
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
                .collect(),
            "prepare",
            "not a valid WebAssembly component",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "prepare",
            "not a valid WebAssembly component",
        ),
        (
            "wasi:cli command",
            read(guests::COMMAND),
            "prepare",
            "cannot be served as wasi:http/proxy",
        ),
        (
            "missing import",
            read(guests::NEEDS_IMPORT),
            "prepare",
            "wasmhost:guest/unavailable",
        ),
        (
            "trap while instantiating",
            start_trap_component(),
            "validate",
            "instantiation failed",
        ),
    ];
    for (index, (kind, bytes, step, needle)) in cases.iter().enumerate() {
        let reply = host.deploy("app", bytes).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{kind}: {}",
            reply.text()
        );
        let answer = reply.json();
        assert_eq!(answer["outcome"], "rejected", "{kind}");
        assert_eq!(answer["step"], *step, "{kind}: {answer:#}");
        assert!(
            answer["reason"].as_str().expect("reason").contains(needle),
            "{kind}: {answer:#}"
        );

        let served = host.get("/app").await;
        assert_eq!(
            (served.status, served.header("wasmhost-version")),
            (StatusCode::OK, Some("1")),
            "{kind}"
        );
        let project = host.admin_project("app").await;
        assert_eq!(project["version"], 1, "{kind}");
        assert_eq!(project["state"], "active", "{kind}");
        assert_eq!(project["last_failure"]["step"], *step, "{kind}");
        assert!(project["last_failure"]["at"].as_f64().expect("time") > 0.0);
        assert_eq!(project["stats"]["rejected"], index as u64 + 1, "{kind}");
        // A rejected version is never written over the good one.
        assert_eq!(
            std::fs::read(host.dir().join("app/app.wasm")).expect("on disk"),
            hello,
            "{kind}"
        );
    }
    let log = host.wait_for_log("rejected").await;
    assert!(
        log.lines().any(|l| l.contains("app: v")
            && l.contains("rejected:")
            && l.contains("; v1 still serving")),
        "{log}"
    );
}

#[tokio::test]
async fn health_checks_gate_new_versions() {
    // The manifest is edited by hand below; without the watcher, only the
    // deploys under test change the project.
    let host = TestHost::new()
        .project("app", guests::HELLO)
        .arg("--no-watch")
        .spawn();
    let echo = read(guests::ECHO);
    let manifest = host.dir().join("app/wasmhost.toml");

    std::fs::write(&manifest, "health = \"/health?status=500\"\n").expect("write manifest");
    let reply = host.deploy("app", &echo).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["step"], "validate");
    assert!(
        reply.json()["reason"]
            .as_str()
            .expect("reason")
            .contains("answered 500")
    );
    assert_eq!(host.get("/app").await.text(), "Hello, world!\n");

    std::fs::write(
        &manifest,
        "health = \"/health?ms=60000\"\nhealth_timeout = \"300ms\"\n",
    )
    .expect("write manifest");
    let reply = host.deploy("app", &read(guests::SLOW)).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    assert!(
        reply.json()["reason"]
            .as_str()
            .expect("reason")
            .contains("did not answer within 300 ms"),
        "{}",
        reply.text()
    );
    assert_eq!(host.get("/app").await.header("wasmhost-version"), Some("1"));

    std::fs::write(&manifest, "health = \"/health?status=204\"\n").expect("write manifest");
    let live = host.deploy_guest("app", guests::ECHO).await;
    assert_eq!(live["outcome"], "live");
    assert_eq!(host.get("/app").await.header("echo-path"), Some("/app"));
}

#[tokio::test]
async fn requests_past_the_drain_timeout_are_interrupted_with_503() {
    let host = TestHost::new()
        .project("waits", guests::SLOW)
        .manifest("waits", "drain_timeout = \"300ms\"\n")
        .project("spins", guests::BUSY)
        .manifest(
            "spins",
            "drain_timeout = \"300ms\"\n[limits]\nrequest_timeout = \"60s\"\n",
        )
        .spawn();
    for (name, path) in [("waits", "/waits?ms=60000"), ("spins", "/spins")] {
        let addr = host.addr;
        let path = path.to_string();
        let stuck =
            tokio::spawn(
                async move { send(addr, request("GET", "localhost", &path, empty())).await },
            );
        host.wait_for_project(name, "a request in flight", |p| p["in_flight"] == 1)
            .await;
        let started = Instant::now();
        host.deploy_guest(name, guests::HELLO).await;
        let reply = stuck.await.expect("task");
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{name}: {}",
            reply.text()
        );
        assert_eq!(reply.header("wasmhost-version"), Some("1"));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name}: not interrupted in time"
        );
        let project = host
            .wait_for_project(name, "v1 released", |p| p["stats"]["released"] == 1)
            .await;
        assert_eq!(project["stats"]["forced_drains"], 1, "{name}");
        assert_eq!(
            host.get(&format!("/{name}")).await.text(),
            "Hello, world!\n"
        );
    }
    host.wait_for_log("drain timeout; interrupting them").await;
}

#[tokio::test]
async fn rollback_returns_to_the_previous_build_and_writes_it_back() {
    let host = TestHost::new().project("app", guests::HELLO).spawn();
    assert_eq!(
        host.admin("POST", "/projects/app/rollback", Vec::new())
            .await
            .status,
        StatusCode::CONFLICT
    );
    host.deploy_guest("app", guests::ECHO).await;
    assert_eq!(host.get("/app").await.header("wasmhost-version"), Some("2"));

    let reply = host
        .admin("POST", "/projects/app/rollback", Vec::new())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["outcome"], "live");
    assert_eq!(answer["live_version"], 3);
    assert_eq!(answer["cache_hit"], true, "a rollback compiles nothing");
    assert_eq!(answer["stats"]["rollbacks"], 1);
    let served = host.get("/app").await;
    assert_eq!(
        (served.header("wasmhost-version"), served.text().as_str()),
        (Some("3"), "Hello, world!\n")
    );
    assert_eq!(
        std::fs::read(host.dir().join("app/app.wasm")).expect("on disk"),
        read(guests::HELLO)
    );
    // The rolled-back-from build is gone from history: nothing earlier is left.
    assert_eq!(
        host.admin("POST", "/projects/app/rollback", Vec::new())
            .await
            .status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn identical_bytes_are_unchanged_and_reload_rereads_disk() {
    // Files are edited by hand below; without the watcher, only the reloads
    // under test pick them up.
    let host = TestHost::new()
        .project("app", guests::ENV)
        .arg("--no-watch")
        .spawn();
    let reply = host.deploy("app", &read(guests::ENV)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["outcome"], "unchanged");
    assert_eq!(reply.json()["version"], 1);
    let reload = host.admin("POST", "/projects/app/reload", Vec::new()).await;
    assert_eq!(reload.json()["outcome"], "unchanged");

    std::fs::write(
        host.dir().join("app/wasmhost.toml"),
        "[env]\nCOLOR = \"blue\"\n",
    )
    .expect("write");
    let reload = host.admin("POST", "/projects/app/reload", Vec::new()).await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.text());
    assert_eq!(reload.json()["outcome"], "live");
    assert_eq!(
        reload.json()["cache_hit"],
        true,
        "same bytes: nothing to compile"
    );
    assert_eq!(host.get("/app").await.text(), "COLOR=blue\n");

    std::fs::write(host.dir().join("app/wasmhost.toml"), "[env]\nCOLOR = 5\n").expect("write");
    let broken = host.admin("POST", "/projects/app/reload", Vec::new()).await;
    assert_eq!(broken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        broken.json()["reason"]
            .as_str()
            .expect("reason")
            .contains("wasmhost.toml:2:"),
        "{}",
        broken.text()
    );
    assert_eq!(host.get("/app").await.text(), "COLOR=blue\n");
    assert_eq!(
        host.admin("POST", "/projects/nobody/reload", Vec::new())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deploy_creates_a_project_and_delete_removes_it() {
    let host = TestHost::new().project("hello", guests::HELLO).spawn();
    let created = host.deploy_guest("fresh", guests::ECHO).await;
    assert_eq!(created["version"], 1);
    assert_eq!(
        host.get("/fresh/a").await.header("echo-path"),
        Some("/fresh/a")
    );
    assert_eq!(
        std::fs::read(host.dir().join("fresh/fresh.wasm")).expect("written"),
        read(guests::ECHO)
    );
    // A rejected deploy of a new project leaves nothing behind.
    assert_eq!(
        host.deploy("ghost", b"nope").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        host.admin_get("/projects/ghost").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(!host.dir().join("ghost").exists());

    let removed = host.admin("DELETE", "/projects/fresh", Vec::new()).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());
    assert_eq!(host.get("/fresh/a").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        host.admin_get("/projects/fresh").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(!host.dir().join("fresh").exists());
    assert_eq!(host.get("/hello").await.status, StatusCode::OK);
    assert_eq!(
        host.admin("DELETE", "/projects/fresh", Vec::new())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        host.admin("PUT", "/projects/..", Vec::new()).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_restart_with_a_warm_cache_compiles_nothing_and_distrusts_bad_entries() {
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .project("echo", guests::ECHO)
        .spawn();
    for name in ["hello", "echo"] {
        let project = host.admin_project(name).await;
        assert_eq!(
            (
                project["stats"]["cache_misses"].clone(),
                project["stats"]["cache_hits"].clone()
            ),
            (Value::from(1), Value::from(0))
        );
    }
    let deployed = host.deploy_guest("later", guests::SLOW).await;
    assert_eq!(deployed["cache_hit"], false);

    let host = host.restart(&[]);
    for name in ["hello", "echo", "later"] {
        let project = host.admin_project(name).await;
        assert_eq!(
            (
                project["stats"]["cache_misses"].clone(),
                project["stats"]["cache_hits"].clone()
            ),
            (Value::from(0), Value::from(1)),
            "{name}"
        );
    }
    host.wait_for_log("hello: v1 loaded from cache").await;
    assert!(!host.log().contains("compiled in"), "{}", host.log());
    assert_eq!(host.get("/later?ms=1").await.text(), "slept 1 ms\n");

    // Corrupt every entry: each is detected, deleted and recompiled.
    let cache_root = host
        .log()
        .lines()
        .find_map(|l| l.split("compile cache in ").nth(1).map(str::to_string))
        .expect("cache dir logged");
    let mut corrupted = 0;
    for entry in std::fs::read_dir(&cache_root).expect("cache dir") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read entry");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).expect("corrupt entry");
        corrupted += 1;
    }
    assert_eq!(corrupted, 3);
    let host = host.restart(&[]);
    host.wait_for_log("discarded a bad compile cache entry (checksum mismatch)")
        .await;
    for name in ["hello", "echo", "later"] {
        let project = host.admin_project(name).await;
        assert_eq!(project["stats"]["cache_misses"], 1, "{name}");
        assert_eq!(project["state"], "active", "{name}");
    }
}

#[tokio::test]
async fn requests_are_served_while_a_large_component_compiles() {
    let host = TestHost::new().project("hello", guests::HELLO).spawn();
    let big = wasmhost_tests::large_component(2000);
    let admin = host.admin;
    let started = Instant::now();
    let deploy = tokio::spawn(send_within(
        COMPILE_DEADLINE,
        admin,
        admin_request("PUT", "/projects/big", big),
    ));
    let mut served = 0;
    while !deploy.is_finished() {
        let reply = host.get("/hello").await;
        assert_eq!(reply.status, StatusCode::OK);
        served += 1;
    }
    let compile_time = started.elapsed();
    let reply = deploy.await.expect("deploy task");
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("cannot be served as wasi:http/proxy"),
        "{}",
        reply.text()
    );
    println!(
        "{served} requests served during a {} ms compile",
        compile_time.as_millis()
    );
    // On the executor thread, the compile would have blocked every request until it ended.
    assert!(
        served >= 20,
        "only {served} requests served during a {} ms compile",
        compile_time.as_millis()
    );
}

#[tokio::test]
async fn compiles_run_under_sched_idle() {
    let host = TestHost::new().project("hello", guests::HELLO).spawn();
    let admin = host.admin;
    let big = wasmhost_tests::large_component(2000);
    let deploy = tokio::spawn(send_within(
        COMPILE_DEADLINE,
        admin,
        admin_request("PUT", "/projects/big", big),
    ));
    // The compile takes seconds; its thread shows up in /proc meanwhile, and
    // puts itself under SCHED_IDLE as it starts.
    compile_threads_all_under(host.pid(), SCHED_IDLE).await;
    // The main thread, which serves requests, keeps the default priority.
    assert_eq!(
        thread_stat(host.pid(), host.pid()).map(|main| (main.policy, main.nice)),
        Some((0, 0))
    );
    let reply = deploy.await.expect("deploy task");
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_compile_that_runs_out_of_patience_is_raised_to_the_default_priority() {
    // No patience at all: the compile is raised as soon as it starts. The
    // tests run as root (CI does); a host without CAP_SYS_NICE compiles at
    // nice 19 and never under SCHED_IDLE, and this test would fail there.
    let host = TestHost::new()
        .project("hello", guests::HELLO)
        .arg("--compile-patience=0s")
        .spawn();
    let admin = host.admin;
    let big = wasmhost_tests::large_component(2000);
    let deploy = tokio::spawn(send_within(
        COMPILE_DEADLINE,
        admin,
        admin_request("PUT", "/projects/big", big),
    ));
    // SCHED_OTHER (Linux's 0): ordinary threads again.
    compile_threads_all_under(host.pid(), 0).await;
    let reply = deploy.await.expect("deploy task");
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    host.wait_for_log("raising compile threads to the default priority")
        .await;
    // Cranelift's workers outlive the compile; with no raised compile left,
    // they go back under SCHED_IDLE.
    compile_threads_all_under(host.pid(), SCHED_IDLE).await;
}

/// Waits until the host has compile threads (`wasmhost-compil` in /proc:
/// the compile's own and Cranelift's) and every one is under `policy`.
async fn compile_threads_all_under(pid: u32, policy: u64) {
    eventually(
        &format!("saw every compile thread under policy {policy}"),
        || {
            let policies: Vec<u64> = threads_named(pid, "wasmhost-compil")
                .iter()
                .map(|thread| thread.policy)
                .collect();
            async move {
                if !policies.is_empty() && policies.iter().all(|&seen| seen == policy) {
                    Ok(())
                } else {
                    Err(format!(
                        "compile threads' scheduling policies: {policies:?}"
                    ))
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn overlapping_deploys_of_one_project_are_serialized() {
    let host = TestHost::new().project("app", guests::SLOW).spawn();
    let (hello, echo) = (read(guests::HELLO), read(guests::ECHO));
    let admin = host.admin;
    let put = |bytes: Vec<u8>| send(admin, admin_request("PUT", "/projects/app", bytes));
    let (first, second) = tokio::join!(put(hello.clone()), put(echo.clone()));
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK),
        "{}\n{}",
        first.text(),
        second.text()
    );
    let (a, b) = (
        first.json()["live_version"].as_u64(),
        second.json()["live_version"].as_u64(),
    );
    let mut numbers = [a.expect("number"), b.expect("number")];
    numbers.sort();
    assert_eq!(numbers, [2, 3], "each caller gets its own version");
    // The last writer wins, and what serves is what is on disk.
    let last = if a == Some(3) { &hello } else { &echo };
    let project = host.admin_project("app").await;
    assert_eq!(project["version"], 3);
    assert_eq!(
        &std::fs::read(host.dir().join("app/app.wasm")).expect("on disk"),
        last
    );
    assert_eq!(host.get("/app").await.header("wasmhost-version"), Some("3"));
}

/// A host serving `app` (hello) from `app.wasm`, beside which `x.wasm` is a
/// folder: a deploy naming `component = "x.wasm"` cannot be renamed there.
fn x_wasm_is_a_folder() -> crate::harness::RunningHost {
    TestHost::new()
        .project("app", guests::HELLO)
        .manifest("app", "component = \"app.wasm\"\n")
        .write("app/x.wasm/keep", b"a folder, not a component")
        .spawn()
}

#[tokio::test]
async fn a_deploy_whose_files_cannot_be_written_is_not_made_live() {
    let host = x_wasm_is_a_folder();
    let before = std::fs::read_to_string(host.dir().join("app/wasmhost.toml")).expect("read");
    let reply = host
        .deploy_with_config("app", &read(guests::ECHO), "component = \"x.wasm\"\n")
        .await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("x.wasm"), "{}", reply.text());
    // The previous version serves, and the disk is as it was.
    let served = host.get("/app").await;
    assert_eq!(served.text(), "Hello, world!\n");
    assert_eq!(served.header("wasmhost-version"), Some("1"));
    assert_eq!(host.admin_project("app").await["version"], 1);
    let after = std::fs::read_to_string(host.dir().join("app/wasmhost.toml")).expect("read");
    assert_eq!(after, before);
    let hidden: Vec<String> = std::fs::read_dir(host.dir().join("app"))
        .expect("dir")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[tokio::test]
async fn temp_files_of_an_interrupted_deploy_are_removed_at_start_up() {
    let host = TestHost::new()
        .project("app", guests::HELLO)
        .write("app/.wasmhost-deploy-crashed.tmp", b"half a component")
        .write("app/.wasmhost-backup-crashed.tmp", b"an old name")
        .spawn();
    assert!(!host.dir().join("app/.wasmhost-deploy-crashed.tmp").exists());
    assert!(!host.dir().join("app/.wasmhost-backup-crashed.tmp").exists());
    host.wait_for_log("left by an interrupted deploy").await;
    assert_eq!(host.get("/app").await.text(), "Hello, world!\n");
}

#[tokio::test]
async fn a_deploy_whose_client_goes_away_still_completes_with_its_history() {
    use tokio::io::AsyncWriteExt as _;
    let host = TestHost::new().project("app", guests::HELLO).spawn();
    // The new version's health check takes 1.5 s: the client is long gone
    // before the version can go live.
    let boundary = "gone-client-boundary-3c";
    let body = wasmhost::admin::multipart::encode(
        boundary,
        &[
            ("component", "application/wasm", &read(guests::SLOW)),
            ("config", "application/toml", b"health = \"/?ms=1500\"\n"),
        ],
    );
    let head = format!(
        "PUT /projects/app HTTP/1.1\r\nhost: localhost\r\ncontent-type: multipart/form-data; boundary={boundary}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(host.admin)
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&body).await.expect("write body");
    // Once the upload is in and the change under way, the client goes away.
    host.wait_for_project("app", "the change under way", |app| {
        app["state"] == "preparing"
    })
    .await;
    drop(stream);

    let app = host
        .wait_for_project("app", "v2 live", |app| {
            app["version"] == 2 && app["state"] == "active"
        })
        .await;
    assert_eq!(app["history"], serde_json::json!([1, 2]), "{app:#}");
    assert_eq!(app["stats"]["swaps"], 2, "{app:#}");
    assert_eq!(host.get("/app?ms=1").await.text(), "slept 1 ms\n");
    host.wait_for_log("app: v2 live").await;
    let on_disk = std::fs::read_to_string(host.dir().join("app/wasmhost.toml")).expect("read");
    assert!(on_disk.contains("ms=1500"), "{on_disk}");
}

/// The digests of every `*.cwasm` entry under `dir`.
fn cached_digests(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(cached_digests(&path));
        } else if let Some(digest) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".cwasm"))
        {
            found.push(digest.to_string());
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn the_compile_cache_keeps_to_its_bound_but_never_evicts_a_current_version() {
    let host = TestHost::new()
        .project("app", guests::HELLO)
        .project("other", guests::SLOW)
        .arg("--cache-max-size")
        .arg("1")
        .spawn();
    host.deploy_guest("app", guests::ECHO).await;
    let app = host
        .wait_for_project("app", "v1 released", |app| {
            app["version"] == 2 && app["stats"]["released"] == 1
        })
        .await;
    let other = host.admin_project("other").await;
    let mut live = vec![
        app["digest"].as_str().expect("digest").to_string(),
        other["digest"].as_str().expect("digest").to_string(),
    ];
    live.sort();
    // Every entry is over a 1-byte bound; only the current versions' stay.
    eventually("the cache holds only current versions", || async {
        let cached = cached_digests(host.cache_dir());
        if cached == live {
            Ok(())
        } else {
            Err(format!("cached {cached:?}, running {live:?}"))
        }
    })
    .await;
}

/// A candidate refused after its health check answered (here: its
/// component cannot be written, as `x.wasm` is a folder) is stopped at once.
/// Its health check's guest answered in full and then went on waiting
/// (`hostile?linger`); left alone it would hold its instance until its
/// 10-minute request timeout.
#[tokio::test]
async fn a_candidate_refused_after_its_health_check_stops_what_it_still_runs() {
    let host = x_wasm_is_a_folder();
    let reply = host
        .deploy_with_config(
            "app",
            &read(guests::HOSTILE),
            "component = \"x.wasm\"\nhealth = \"/?linger\"\n[limits]\nrequest_timeout = \"10m\"\n",
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    crate::observe::until_no_instance_is_alive(&host, "the refused candidate's instance freed")
        .await;
    assert_eq!(host.get("/app").await.text(), "Hello, world!\n");
}
