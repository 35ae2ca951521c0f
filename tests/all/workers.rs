//! Request workers: more workers than cores, on purpose, so that requests,
//! swaps and drains interleave across threads. Admission, drain, counts and
//! shutdown must stay exact.

use hyper::StatusCode;
use wasmhost_tests::guests;

use crate::harness::{SwapTraffic, TestHost, empty, request, send, threads_named};

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
    let traffic = SwapTraffic::start(host.addr, CONNECTIONS);
    traffic.swap(&host, SWAPS, std::time::Duration::ZERO).await;
    let (answers, versions) = traffic.finish().await;
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
