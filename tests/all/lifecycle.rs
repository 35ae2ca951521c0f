//! Starting, failing to start, bad projects at start-up, and shutting down.

use hyper::StatusCode;
use wasmhost_tests::guests;

use wasmhost_tests::process::Process;

use crate::harness::{
    COMPILE_DEADLINE, DEADLINE, TestHost, empty, eventually, eventually_within, request, send,
    wasmhost,
};

#[tokio::test]
async fn a_broken_project_is_reported_and_the_others_serve() {
    let host = TestHost::new()
        .project("good", guests::HELLO)
        .project("badconfig", guests::HELLO)
        .manifest(
            "badconfig",
            "route = \"/x\"\n\n[limits]\nrequest_timeout = \"forever\"\n",
        )
        .write("badwasm.wasm", b"this is not wasm")
        .project("typo", guests::HELLO)
        .manifest("typo", "rout = \"/t\"\n")
        .spawn();
    assert_eq!(host.get("/good").await.status, StatusCode::OK);
    assert_eq!(host.get("/x").await.status, StatusCode::NOT_FOUND);
    assert_eq!(host.get("/badwasm").await.status, StatusCode::NOT_FOUND);
    let log = host.wait_for_log("loaded 1 of 4 projects").await;
    assert!(
        log.contains("badconfig/wasmhost.toml:4: request_timeout:"),
        "{log}"
    );
    assert!(
        log.contains("typo/wasmhost.toml:1: unknown field `rout`"),
        "{log}"
    );
    assert!(
        log.contains("badwasm.wasm is not a valid WebAssembly component"),
        "{log}"
    );
}

#[tokio::test]
async fn invalid_names_are_skipped_with_a_warning() {
    let host = TestHost::new()
        .project("ok", guests::HELLO)
        .project("Upper", guests::HELLO)
        .file_project("has.dot", guests::HELLO)
        .project("-dash", guests::HELLO)
        .spawn();
    assert_eq!(host.get("/ok").await.status, StatusCode::OK);
    let log = host.wait_for_log("loaded 1 of 1 projects").await;
    for name in ["Upper", "has.dot", "-dash"] {
        assert!(
            log.lines()
                .any(|l| l.contains("skipped") && l.contains(&format!("`{name}`"))),
            "no warning for {name}:\n{log}"
        );
    }
    assert_eq!(host.get("/Upper").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let mut host = TestHost::new()
        .project("slow", guests::SLOW)
        .arg("--grace-period")
        .arg("30s")
        .spawn();
    let addr = host.addr;
    let in_flight = tokio::spawn(async move {
        send(addr, request("GET", "localhost", "/slow?ms=5000", empty())).await
    });
    // Wait until the request is really running on the guest.
    host.wait_for_project("slow", "a request in flight", |p| p["in_flight"] == 1)
        .await;
    assert_eq!(host.admin_get("/readyz").await.status, StatusCode::OK);
    host.terminate();
    // Load balancers see the host leave while its drain runs: /readyz is
    // 503 while the request still runs, and changes are refused.
    eventually("/readyz 503 after SIGTERM", || async {
        let reply = host.admin_get("/readyz").await;
        match reply.status {
            StatusCode::SERVICE_UNAVAILABLE => Ok(reply.text()),
            status => Err(format!("{status}: {}", reply.text())),
        }
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the request ended before /readyz turned 503"
    );
    assert_eq!(host.admin_get("/livez").await.status, StatusCode::OK);
    let deploy = host
        .deploy("other", &std::fs::read(guests::HELLO).expect("hello"))
        .await;
    assert_eq!(
        deploy.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        deploy.text()
    );
    let reply = in_flight.await.expect("task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "slept 5000 ms\n");
    let status = host.wait_exit().await;
    assert!(status.success(), "exit status {status}:\n{}", host.log());
    let log = host.log();
    assert!(log.contains("SIGTERM received"), "{log}");
    // New connections are refused once it is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Start-up serves at once: a small project is live in milliseconds while
/// an 18 MB Python one still compiles, even when the big one sorts first by
/// name and compiles are one at a time. Until its first version is live, the
/// big one answers 503 with Retry-After and /readyz is 503.
#[tokio::test]
async fn start_up_serves_each_project_as_soon_as_it_is_live_small_ones_first() {
    let host = TestHost::new()
        .project("a-big", guests::HELLO_PY)
        .project("z-small", guests::HELLO)
        .arg("--max-compiles=1")
        .spawn_listening();
    let small_first = eventually("z-small live", || async {
        let small = host.get("/z-small").await;
        if small.status != StatusCode::OK {
            return Err(format!("z-small: {} {}", small.status, small.text()));
        }
        Ok((host.get("/a-big").await, host.admin_get("/readyz").await))
    })
    .await;
    let (big, ready) = small_first;
    assert_eq!(
        big.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        big.text()
    );
    assert_eq!(big.header("retry-after"), Some("1"));
    assert_eq!(big.header("wasmhost-project"), Some("a-big"));
    assert!(big.text().contains("starting"), "{}", big.text());
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text()
    );
    assert_eq!(
        host.admin_project("a-big").await["state"],
        "preparing",
        "{}",
        host.log()
    );

    eventually_within(
        COMPILE_DEADLINE,
        "a-big live and the host ready",
        || async {
            let big = host.get("/a-big").await;
            let ready = host.admin_get("/readyz").await;
            if big.status == StatusCode::OK && ready.status == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("a-big {}, /readyz {}", big.status, ready.status))
            }
        },
    )
    .await;
    assert_eq!(host.get("/a-big").await.text(), "Hello from Python!\n");
    let log = host.wait_for_log("loaded 2 of 2 projects").await;
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
    };
    assert!(at("listening on") < at("z-small: v1 live"), "{log}");
    assert!(at("z-small: v1 live") < at("a-big: v1 compiled"), "{log}");
}

/// A project that fails at start-up stops being routed by what it would
/// have served: a later name that wanted the same route gets it. The broken
/// one is the bigger file, so it fails after the other is live.
#[tokio::test]
async fn a_contested_route_goes_to_the_next_name_when_the_first_fails_to_start() {
    let junk = vec![b'x'; 1 << 20];
    let host = TestHost::new()
        .write("a-broken.wasm", &junk)
        .project("b-works", guests::HELLO)
        .manifest("b-works", "route = \"/a-broken\"\n")
        .spawn();
    let reply = host.get("/a-broken").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("wasmhost-project"), Some("b-works"));
}

#[tokio::test]
async fn a_port_in_use_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let builder = TestHost::new().project("hello", guests::HELLO);
    let output = wasmhost()
        .arg("serve")
        .arg(builder.dir())
        .args(["--listen", &addr, "--admin-listen", "127.0.0.1:0"])
        .output()
        .expect("run wasmhost");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("failed to bind {addr}")),
        "{stderr}"
    );
    assert!(
        errors[0].to_lowercase().contains("address already in use"),
        "{stderr}"
    );
}

/// The request workers' sockets share their port (`SO_REUSEPORT`); a second
/// host started on it by mistake must fail, not quietly take half the traffic.
#[tokio::test]
async fn a_second_host_on_a_running_hosts_port_is_refused() {
    let running = TestHost::new()
        .project("hello", guests::HELLO)
        .arg("--workers=3")
        .spawn();
    let addr = running.addr.to_string();
    let builder = TestHost::new().project("hello", guests::HELLO);
    let mut command = wasmhost();
    command.arg("serve").arg(builder.dir()).args([
        "--listen",
        &addr,
        "--admin-listen",
        "127.0.0.1:0",
        "--workers=2",
        "--no-cache",
    ]);
    // Spawned, not run to completion: a host that wrongly starts must fail
    // the test, not hang it.
    let mut second = Process::spawn(command).expect("spawn wasmhost");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait for wasmhost") {
            break status;
        }
        let log = second.log();
        assert!(
            !log.contains("listening on"),
            "a second host serves on {addr}: {log}"
        );
        assert!(
            started.elapsed() < DEADLINE,
            "the second host neither served nor exited: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(!status.success());
    // The process has exited, but the thread reading its stderr may not have
    // taken the last line yet: wait for it.
    crate::harness::eventually("the bind error in the second host's log", || async {
        let stderr = second.log();
        if stderr.contains(&format!("failed to bind {addr}"))
            && stderr.to_lowercase().contains("address already in use")
        {
            Ok(())
        } else {
            Err(stderr)
        }
    })
    .await;
    assert_eq!(running.get("/hello").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_missing_projects_folder_is_a_clear_error() {
    let builder = TestHost::new();
    let output = wasmhost()
        .arg("serve")
        .arg(builder.dir().join("nope"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .expect("run wasmhost");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: failed to read projects directory") && stderr.contains("nope"),
        "{stderr}"
    );
}

#[test]
fn version_and_help() {
    let version = wasmhost().arg("--version").output().expect("run");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("wasmhost "));
    let help = wasmhost().args(["serve", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--admin-listen",
        "--grace-period",
        "--request-timeout",
        "--max-compiles",
        "WASMHOST_LISTEN",
        "WASMHOST_ADMIN_LISTEN",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
