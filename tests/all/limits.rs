//! Per-project limits and hostile guests: memory, concurrency, body size, and
//! guests that run out of memory, stop writing, or never answer. Each gets a
//! clear status and a log line naming project and version, and the host (and
//! every other project) keeps serving.

use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmhost_tests::guests;

use crate::harness::{
    Connection, SCHED_IDLE, TestHost, WORKERS, empty, eventually, full, request, send,
    threads_named, try_send,
};

#[tokio::test]
async fn a_guest_growing_past_its_memory_limit_traps_and_the_host_keeps_serving() {
    let host = TestHost::new()
        .project("hostile", guests::HOSTILE)
        .manifest("hostile", "[limits]\nmemory = \"16MiB\"\n")
        .project("hello", guests::HELLO)
        .spawn();
    let reply = host.get("/hostile?oom").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The compile lines name the project too: wait for the limit's own line.
    let log = host.wait_for_log("grew past its memory limit").await;
    let line = log
        .lines()
        .find(|line| line.contains("hostile") && line.contains("memory"))
        .unwrap_or_else(|| panic!("no memory line naming the project:\n{log}"));
    assert!(line.contains("version=1"), "{line}");
    // The same guest, within its limit, and its neighbour still answer.
    assert_eq!(host.get("/hostile").await.status, StatusCode::OK);
    assert_eq!(host.get("/hello").await.status, StatusCode::OK);
}

/// Header field lists, bodies and streams live in host memory, outside the
/// linear memory `limits.memory` caps; without a cap on how many a request
/// holds, the `?fields` loop would make all 100,000 (100 MB, and a bigger
/// value or more requests would take the whole host down).
#[tokio::test]
async fn a_guest_hoarding_host_resources_traps_at_a_cap_set_by_its_memory_limit() {
    let host = TestHost::new()
        .project("hostile", guests::HOSTILE)
        .manifest("hostile", "[limits]\nmemory = \"16MiB\"\n")
        .project("hello", guests::HELLO)
        .spawn();
    let reply = host.get("/hostile?fields").await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    let log = host.wait_for_log("resource table has no free keys").await;
    let line = log
        .lines()
        .find(|line| line.contains("no free keys"))
        .unwrap_or_else(|| panic!("no line for the refusal:\n{log}"));
    assert!(line.contains("hostile"), "{line}");
    assert_eq!(host.get("/hostile").await.status, StatusCode::OK);
    assert_eq!(host.get("/hello").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_guest_flooding_its_output_is_cut_to_its_log_rate_and_its_neighbours_still_log() {
    const LINES: u64 = 2000;
    /// What one of `hostile?log`'s lines costs: "flood NNNNNN " and 80 bytes
    /// of padding, and the 128 bytes every line counts for beyond its text.
    const LINE_COST: f64 = 93.0 + 128.0;
    /// One byte a second: past its first line, the guest owes minutes.
    const RATE: f64 = 1.0;
    let host = TestHost::new()
        .project("hostile", guests::HOSTILE)
        .manifest("hostile", "[limits]\nlog_rate = 1\n")
        .project("env", guests::ENV)
        .manifest("env", "[limits]\nlog_rate = 1\n")
        .spawn();
    let started = std::time::Instant::now();
    let reply = host.get(&format!("/hostile?log={LINES}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Every line ends up either logged or counted as dropped.
    let (logged, dropped) = eventually("saw every line logged or dropped", || async {
        let project = host.admin_project("hostile").await;
        let dropped = project["stats"]["guest_log_dropped"].as_u64().unwrap_or(0);
        let logged = host.log().lines().filter(|l| l.contains("flood ")).count() as u64;
        if logged + dropped == LINES {
            Ok((logged, dropped))
        } else {
            Err(format!("{logged} logged, {dropped} dropped"))
        }
    })
    .await;
    // A second's worth at once, then the rate, plus the one line that may
    // take the bucket below empty: however slowly this machine ran it.
    let allowed = (RATE + RATE * started.elapsed().as_secs_f64()) / LINE_COST + 1.0;
    assert!(
        logged >= 1 && (logged as f64) <= allowed,
        "{logged} lines logged, {dropped} dropped; at most {allowed:.0} allowed"
    );
    let log = host.wait_for_log("lines dropped").await;
    let notice = log
        .lines()
        .find(|line| line.contains("lines dropped"))
        .unwrap_or_else(|| panic!("no notice of the dropped lines:\n{log}"));
    assert!(
        notice.contains("hostile") && notice.contains("of 1 bytes/s"),
        "{notice}"
    );
    let metrics = host.admin_get("/metrics").await.text();
    let samples = crate::observe::samples(&metrics);
    let counted = crate::observe::value(
        &samples,
        "wasmhost_guest_log_dropped_total",
        &[("project", "hostile")],
    );
    assert_eq!(counted, Some(dropped as f64), "{metrics}");
    // The allowance is the project's own: its neighbour, at the same rate,
    // logs at once, where the flooding guest's would not let a line out for
    // minutes.
    assert_eq!(host.get("/env").await.status, StatusCode::OK);
    host.wait_for_log("env guest: serving").await;
}

#[tokio::test]
async fn the_memory_flag_is_the_default_for_projects_without_a_limit() {
    let host = TestHost::new()
        .project("hostile", guests::HOSTILE)
        .arg("--memory")
        .arg("8MiB")
        .spawn();
    let reply = host.get("/hostile?oom").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    host.wait_for_log("memory limit of 8.0 MiB").await;
    assert_eq!(host.get("/hostile").await.status, StatusCode::OK);
}

#[tokio::test]
async fn requests_beyond_max_concurrency_get_503_with_retry_after() {
    let host = TestHost::new()
        .project("slow", guests::SLOW)
        .manifest("slow", "[limits]\nmax_concurrency = 1\n")
        .spawn();
    let addr = host.addr;
    let first = tokio::spawn(async move {
        send(addr, request("GET", "localhost", "/slow?ms=3000", empty())).await
    });
    host.wait_for_project("slow", "saw the first request running", |slow| {
        slow["stats"]["active"] == 1
    })
    .await;
    let refused = host.get("/slow?ms=1").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("wasmhost-project"), Some("slow"));
    assert_eq!(first.await.expect("task").status, StatusCode::OK);
    // The slot is free again.
    assert_eq!(host.get("/slow?ms=1").await.status, StatusCode::OK);
    let project = host.admin_project("slow").await;
    assert_eq!(project["stats"]["overloaded"], 1);
    assert_eq!(project["stats"]["active"], 0);
}

#[tokio::test]
async fn a_project_at_its_concurrency_limit_still_deploys_a_health_checked_version() {
    let host = TestHost::new()
        .project("slow", guests::SLOW)
        .manifest(
            "slow",
            "health = \"/?ms=1\"\n[limits]\nmax_concurrency = 1\n",
        )
        // The reload below is the only way the change goes live.
        .arg("--no-watch")
        .spawn();
    let addr = host.addr;
    let busy = tokio::spawn(async move {
        send(addr, request("GET", "localhost", "/slow?ms=3000", empty())).await
    });
    host.wait_for_project("slow", "saw the only slot taken", |slow| {
        slow["stats"]["active"] == 1
    })
    .await;
    // A change of config is a new version, checked by its health check while
    // the project is full.
    std::fs::write(
        host.dir().join("slow/wasmhost.toml"),
        "health = \"/?ms=2\"\n[limits]\nmax_concurrency = 1\n",
    )
    .expect("write manifest");
    let reload = host
        .admin("POST", "/projects/slow/reload", Vec::new())
        .await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.text());
    assert_eq!(reload.json()["live_version"], 2, "{}", reload.text());
    assert_eq!(busy.await.expect("task").status, StatusCode::OK);
    let project = host.admin_project("slow").await;
    assert_eq!(project["stats"]["overloaded"], 0);
    assert_eq!(project["stats"]["active"], 0);
}

#[tokio::test]
async fn a_full_instance_pool_is_503_with_retry_after_and_counted() {
    let host = TestHost::new()
        .project("slow", guests::SLOW)
        .arg("--max-instances")
        .arg("2")
        .spawn();
    let addr = host.addr;
    let hold = || {
        tokio::spawn(async move {
            send(addr, request("GET", "localhost", "/slow?ms=3000", empty())).await
        })
    };
    let (first, second) = (hold(), hold());
    host.wait_for_project("slow", "saw both slots taken", |slow| {
        slow["stats"]["active"] == 2
    })
    .await;
    // Admitted but not yet instantiated, one of the two may still lose its
    // slot to the third; each holds its slot for 3 s, so whichever it is,
    // exactly one of the three gets 503.
    let third = host.get("/slow?ms=3000").await;
    let mut statuses = vec![
        first.await.expect("task").status,
        second.await.expect("task").status,
        third.status,
    ];
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
    if third.status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(third.header("retry-after"), Some("1"));
        assert!(third.text().contains("capacity"), "{}", third.text());
    }
    let project = host.admin_project("slow").await;
    assert_eq!(project["stats"]["pool_exhausted"], 1, "{project:#}");
    assert_eq!(project["stats"]["overloaded"], 0);
    // Slots come back: the next request is served.
    assert_eq!(host.get("/slow?ms=1").await.status, StatusCode::OK);
}

/// A host with room for one instance, serving `a` and `b` (hello), both
/// keeping an idle instance for ten minutes, with `a`'s instance idle.
async fn one_slot_held_by_an_idle_instance_of_a() -> crate::harness::RunningHost {
    let keep = "[instances]\nidle_timeout = \"10m\"\n";
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .manifest("a", keep)
        .project("b", guests::HELLO)
        .manifest("b", keep)
        .arg("--max-instances")
        .arg("1")
        .spawn();
    assert_eq!(host.get("/a").await.status, StatusCode::OK);
    host.wait_for_project("a", "its instance kept idle", |a| {
        a["versions"][0]["idle_instances"] == 1
    })
    .await;
    host
}

/// Instances kept idle between requests (reset in place, the default) give
/// their pool slots back when another project needs one: a request to `b`
/// is served, not 503, though `a` would keep its instance for ten minutes.
/// `b`'s instance, made on a second try in a store that may still hold
/// slots from the first, is not kept: the pool is empty again after it.
#[tokio::test]
async fn idle_instances_give_their_slots_back_to_a_full_pool() {
    let host = one_slot_held_by_an_idle_instance_of_a().await;
    let b = host.get("/b").await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.text());
    let a = host.admin_project("a").await;
    assert_eq!(a["versions"][0]["idle_instances"], 0, "{a:#}");
    assert_eq!(host.admin_project("b").await["stats"]["pool_exhausted"], 0);
    crate::observe::until_no_instance_is_alive(&host, "b's instance dropped").await;
}

/// A deploy's trial instantiation gets the slots idle instances hold too,
/// rather than refusing the deploy while the pool is full of them.
#[tokio::test]
async fn a_deploy_is_not_refused_because_idle_instances_fill_the_pool() {
    let host = one_slot_held_by_an_idle_instance_of_a().await;
    let hello = std::fs::read(guests::HELLO).expect("hello");
    let reply = send(
        host.admin,
        crate::harness::admin_request("PUT", "/projects/c", hello),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(host.get("/c").await.status, StatusCode::OK);
}

/// Sends a chunked POST of `chunks` × `size` bytes over a raw socket and
/// returns the status code of the answer.
async fn chunked_post(addr: std::net::SocketAddr, path: &str, chunks: usize, size: usize) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    for _ in 0..chunks {
        let chunk = format!("{size:x}\r\n{}\r\n", "x".repeat(size));
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // the host may answer and close before the body ends
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn request_bodies_over_max_body_get_413() {
    let host = TestHost::new()
        .project("echo", guests::ECHO)
        .manifest("echo", "[limits]\nmax_body = \"4KiB\"\n")
        .spawn();
    // Declared length over the limit: refused before the guest runs.
    let reply = send(
        host.addr,
        request("POST", "localhost", "/echo", full(vec![b'x'; 5000])),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // At the limit: echoed whole.
    let reply = send(
        host.addr,
        request("POST", "localhost", "/echo", full(vec![b'y'; 4096])),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 4096);
    assert_eq!(host.get("/echo").await.status, StatusCode::OK);
}

#[tokio::test]
async fn chunked_bodies_are_cut_off_at_max_body() {
    let host = TestHost::new()
        .project("hostile", guests::HOSTILE)
        .manifest("hostile", "[limits]\nmax_body = \"4KiB\"\n")
        .spawn();
    // No length up front: the guest's read fails once 4 KiB have passed, it
    // traps before answering, and the client hears why.
    assert_eq!(chunked_post(host.addr, "/hostile?read", 8, 1024).await, 413);
    assert_eq!(chunked_post(host.addr, "/hostile?read", 2, 1024).await, 200);
}

#[tokio::test]
async fn a_guest_that_stops_writing_its_body_is_cut_off_and_logged() {
    let host = TestHost::new()
        .project("hostile", guests::HOSTILE)
        .manifest("hostile", "[limits]\nrequest_timeout = \"1s\"\n")
        .project("hello", guests::HELLO)
        .spawn();
    for query in ["half", "cut"] {
        let outcome = try_send(
            host.addr,
            request("GET", "localhost", &format!("/hostile?{query}"), empty()),
        )
        .await;
        // The head was 200 with a 1 MiB length; the body never completes.
        assert!(outcome.is_err(), "{query}: a cut body read as whole");
    }
    host.wait_for_log("request timed out after 1s").await;
    let log = host.wait_for_log("response body cut off").await;
    assert!(
        log.lines()
            .any(|line| line.contains("response body cut off") && line.contains("hostile")),
        "{log}"
    );
    assert_eq!(host.get("/hello").await.status, StatusCode::OK);
    assert_eq!(host.get("/hostile").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_guest_that_never_sets_a_response_gets_500_and_a_log_line() {
    let host = TestHost::new().project("hostile", guests::HOSTILE).spawn();
    let mut connection = Connection::open(host.addr).await;
    let reply = connection.get("/hostile?none").await.expect("answered");
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let log = host
        .wait_for_log("guest returned without setting a response")
        .await;
    assert!(
        log.lines()
            .any(|line| line.contains("without setting a response")
                && line.contains("hostile")
                && line.contains("version=1")),
        "{log}"
    );
    // Same connection, next request: fine.
    let reply = connection.get("/hostile").await.expect("answered");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_guest_that_keeps_computing_finishes_on_the_idle_priority_slow_lane() {
    let host = TestHost::new()
        .project("busy", guests::BUSY)
        .manifest("busy", "[limits]\nrequest_timeout = \"1s\"\n")
        .project("hello", guests::HELLO)
        .spawn();
    let pid = host.pid();
    // Started with the host, one per request worker, under SCHED_IDLE; the
    // request workers are ordinary.
    let lanes = threads_named(pid, "wasmhost-slow");
    assert_eq!(lanes.len(), WORKERS, "slow lane threads: {lanes:?}");
    assert!(
        lanes.iter().all(|lane| lane.policy == SCHED_IDLE),
        "{lanes:?}"
    );
    let workers: Vec<_> = (0..WORKERS)
        .flat_map(|index| threads_named(pid, &format!("wasmhost-w{index}")))
        .collect();
    assert_eq!(workers.len(), WORKERS, "request workers: {workers:?}");
    assert!(
        workers.iter().all(|worker| worker.policy == 0),
        "{workers:?}"
    );
    let lane_ticks = || -> u64 {
        threads_named(pid, "wasmhost-slow")
            .iter()
            .map(|lane| lane.cpu_ticks)
            .sum()
    };
    let before = lane_ticks();

    // Loops, one after another, until the slow lane has visibly computed. At
    // idle priority on a busy machine, one 1 s loop may get little CPU there.
    let addr = host.addr;
    let spinning = tokio::spawn(async move {
        loop {
            let reply = send(addr, request("GET", "localhost", "/busy", empty())).await;
            assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        }
    });
    eventually("saw the slow lane compute", || async {
        let ticks = lane_ticks();
        if ticks >= before + 20 {
            Ok(())
        } else {
            Err(format!("{} ticks of CPU", ticks.saturating_sub(before)))
        }
    })
    .await;
    assert_eq!(host.get("/hello").await.status, StatusCode::OK);
    assert!(!spinning.is_finished(), "a loop was not answered 504");
    spinning.abort();
    let slowed = &host.admin_project("busy").await["stats"]["slowed"];
    assert!(
        slowed.as_u64().is_some_and(|n| n >= 1),
        "busy slowed: {slowed}"
    );
}

#[tokio::test]
async fn a_guest_heavy_on_every_request_stays_on_the_request_workers() {
    let host = TestHost::new().project("heavy", guests::COUNT).spawn();
    // 8 ms of compute each, past the 2 ms a light guest's request may take
    // before it moves. Once one request has succeeded, the threshold follows
    // the version's typical compute time (8×, at most 20 ms), so the rest
    // stay. With the 2 ms threshold for all, most of them move: a request
    // stays only if it finishes within its first poll, before an epoch tick.
    const REQUESTS: u64 = 30;
    for _ in 0..REQUESTS {
        let reply = host.get("/heavy?spin=8").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let slowed = host.admin_project("heavy").await["stats"]["slowed"]
        .as_u64()
        .expect("a slowed count");
    println!("{slowed} of {REQUESTS} requests moved to the slow lane");
    // The first may move (until one has succeeded, its version's requests
    // are timed by the wall clock, which counts preemption), so the bound
    // leaves room.
    assert!(
        slowed < REQUESTS / 3,
        "{slowed} of {REQUESTS} requests moved to the slow lane"
    );
}

#[tokio::test]
async fn a_versions_typical_compute_time_starts_at_its_trial_instantiation() {
    let host = TestHost::new().project("hello", guests::HELLO).spawn();
    let project = host.admin_project("hello").await;
    // No request has run: the time can only come from the instantiation that
    // checked the version before it went live. From zero, the first requests
    // of a version whose instantiation is heavy (Python, JavaScript) would
    // get the 2 ms threshold of a light one.
    assert_eq!(project["stats"]["requests"], 0, "{project:#}");
    let typical = &project["versions"][0]["typical_compute_ms"];
    assert!(
        typical.as_f64().is_some_and(|ms| ms > 0.0),
        "typical compute: {typical}"
    );
}
