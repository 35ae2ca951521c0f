//! Request workers: more workers than cores, on purpose, so that requests,
//! swaps and drains interleave across threads. Admission, drain, counts and
//! shutdown must stay exact.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::StatusCode;
use wasmhost_tests::guests;

use crate::harness::{Connection, TestHost, empty, request, send, threads_named};

/// Workers in these tests: twice this machine's cores.
const WORKERS: usize = 4;

/// Connections kept busy at once.
const CONNECTIONS: usize = 16;

/// 1,000 deploys of one project while 16 connections keep requesting it on
/// 4 workers. No request fails; every answer is whole from the version it
/// names (odd versions are hello, even ones echo); no connection goes back
/// to an older version; and afterwards every old version is released and
/// nothing is counted as running.
#[tokio::test]
async fn a_thousand_swaps_on_four_workers_fail_nothing_and_release_every_version() {
    const SWAPS: u64 = 1000;
    let host = TestHost::new()
        .project("app", guests::HELLO)
        .arg(&format!("--workers={WORKERS}"))
        .spawn();
    let hello = std::fs::read(guests::HELLO).expect("read hello");
    let echo = std::fs::read(guests::ECHO).expect("read echo");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (addr, stop) = (host.addr, stop.clone());
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await;
                let mut seen: Vec<u64> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let reply = connection
                        .get("/app/x")
                        .await
                        .map_err(|err| format!("request failed: {err}"))?;
                    if reply.status != StatusCode::OK {
                        return Err(format!("status {}: {}", reply.status, reply.text()));
                    }
                    let version: u64 = reply
                        .header("wasmhost-version")
                        .and_then(|v| v.parse().ok())
                        .ok_or("no version header")?;
                    let whole = if version % 2 == 1 {
                        reply.text() == "Hello, world!\n"
                    } else {
                        reply.header("echo-path") == Some("/app/x") && reply.body.is_empty()
                    };
                    if !whole {
                        return Err(format!(
                            "v{version} answered like the other build: {reply:?}"
                        ));
                    }
                    if let Some(last) = seen.last().filter(|last| **last > version) {
                        return Err(format!("went back from v{last} to v{version}"));
                    }
                    seen.push(version);
                }
                Ok::<_, String>(seen)
            })
        })
        .collect();
    for swap in 1..=SWAPS {
        let bytes = if swap % 2 == 1 { &echo } else { &hello };
        let reply = host.deploy("app", bytes).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["live_version"], swap + 1);
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = 0;
    let mut versions = BTreeSet::new();
    for client in clients {
        let seen = client
            .await
            .expect("client task")
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(!seen.is_empty(), "a connection got no answer at all");
        answers += seen.len();
        versions.extend(seen);
    }
    println!(
        "{answers} answers over {CONNECTIONS} connections from {} versions",
        versions.len()
    );
    assert!(versions.len() >= 20, "traffic saw only {versions:?}");

    let project = host
        .wait_for_project("app", "every old version released", |p| {
            p["stats"]["released"] == SWAPS
        })
        .await;
    assert_eq!(project["stats"]["swaps"], SWAPS + 1);
    assert_eq!(project["stats"]["forced_drains"], 0);
    assert_eq!(project["stats"]["active"], 0, "{project:#}");
    assert_eq!(project["in_flight"], 0, "{project:#}");
    assert_eq!(project["state"], "active", "{project:#}");
    let alive: Vec<_> = project["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(alive, [SWAPS + 1], "versions still alive");

    // The connections were served by more than one worker.
    let busy = (0..WORKERS)
        .flat_map(|index| threads_named(host.pid(), &format!("wasmhost-w{index}")))
        .filter(|worker| worker.cpu_ticks > 0)
        .count();
    assert!(busy >= 2, "only {busy} of {WORKERS} workers did any work");
}

/// SIGTERM while 16 requests run on 4 workers: each worker stops accepting
/// and lets its requests finish; every one is answered in full, none is
/// reset, and the host exits 0. The requests sleep 5 s, so the signal,
/// sent once all 16 are seen running, arrives while they run.
#[tokio::test]
async fn sigterm_under_load_drains_every_worker_and_exits_zero() {
    let mut host = TestHost::new()
        .project("slow", guests::SLOW)
        .arg(&format!("--workers={WORKERS}"))
        .arg("--grace-period=60s")
        .spawn();
    let requests: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let addr = host.addr;
            tokio::spawn(async move {
                send(addr, request("GET", "localhost", "/slow?ms=5000", empty())).await
            })
        })
        .collect();
    host.wait_for_project("slow", "all requests running", |p| {
        p["in_flight"] == CONNECTIONS
    })
    .await;
    host.terminate();
    for running in requests {
        let reply = running.await.expect("request task");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), "slept 5000 ms\n");
    }
    let status = host.wait_exit().await;
    assert!(status.success(), "exit status {status}:\n{}", host.log());
    assert!(host.log().contains("SIGTERM received"), "{}", host.log());
}
