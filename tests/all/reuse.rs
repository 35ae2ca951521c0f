//! Instance reuse (`[instances] reuse = N`): up to N requests per instance,
//! one after another; never two at once, never across versions, never after
//! a trap; idle ones dropped after `idle_timeout` and at a swap.

use std::collections::BTreeMap;

use hyper::StatusCode;
use wasmhost_tests::guests;

use crate::harness::{Connection, Reply, RunningHost, TestHost, eventually, minor_faults};

/// The `count` guest's answer: which instance, and its how-manieth request.
fn instance_and_count(host_reply: &Reply) -> (String, u64) {
    let text = host_reply.text();
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("instance"), Some(id), Some("request"), Some(n)) => {
            (id.to_string(), n.parse().expect("a count"))
        }
        _ => panic!("not a count answer: {text:?}"),
    }
}

/// Asserts that a `?scatter` answer came from an instance's first request
/// and found none of the 96 bytes an earlier request wrote.
fn assert_scattered_on_clean_memory(reply: &Reply) {
    assert!(
        reply.text().contains("request 1 stale 0 wrote 96"),
        "{:?}",
        reply.text()
    );
}

fn counting(reuse: Option<&str>) -> RunningHost {
    let mut builder = TestHost::new().project("count", guests::COUNT);
    if let Some(instances) = reuse {
        builder = builder.manifest("count", &format!("[instances]\n{instances}\n"));
    }
    builder.spawn()
}

/// `requests` requests to `path`, one after another. With `reuse`, each
/// waits until the instance before it is back in the pool (that happens
/// just after the client has its answer), unless it served its last.
async fn counts(
    host: &RunningHost,
    path: &str,
    requests: usize,
    reuse: Option<u64>,
) -> Vec<(String, u64)> {
    let mut seen = Vec::new();
    for _ in 0..requests {
        let reply = host.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let (id, n) = instance_and_count(&reply);
        if reuse.is_some_and(|reuse| n < reuse) {
            idle_instances(host, 1).await;
        }
        seen.push((id, n));
    }
    seen
}

/// Waits until the count project has `idle` instances kept.
async fn idle_instances(host: &RunningHost, idle: u64) {
    host.wait_for_project("count", &format!("{idle} idle instances"), |p| {
        p["versions"][0]["idle_instances"] == idle
    })
    .await;
}

/// Sends `requests` requests one after the other, each once the last one's
/// instance is idle again, and asserts that each saw a fresh instance's
/// state: its first request, under an id no earlier request saw.
async fn each_on_fresh_state(host: &RunningHost, requests: u64) {
    let mut ids = std::collections::BTreeSet::new();
    for request in 0..requests {
        let reply = host.get("/count").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let (id, n) = instance_and_count(&reply);
        assert_eq!(n, 1, "request {request} saw an earlier request's count");
        assert!(ids.insert(id), "an id survived a reset: {ids:?}");
        idle_instances(host, 1).await;
    }
}

/// By default every request starts on a fresh instance's state: the count
/// guest, which keeps its id and count in memory, answers `request 1` with
/// a new id every time. After the first request that state does not come
/// from a new instance but from the one instance reset in place
/// (`engine/instances.rs`), as the `reset` count shows. The long idle
/// timeout only keeps a slow machine from dropping the instance between
/// two requests.
#[tokio::test]
async fn by_default_every_request_starts_on_a_fresh_instances_state() {
    let host = counting(Some("idle_timeout = \"10m\""));
    each_on_fresh_state(&host, 6).await;
    let project = host.admin_project("count").await;
    assert_eq!(project["stats"]["reused"], 0);
    assert_eq!(project["stats"]["reset"], 5);
}

/// Once a reset has scanned an instance's memory, the next resets put back
/// only the pages that scan found, as long as the request's worker took no
/// page fault (`engine/faults.rs`): the count guest writes the same pages
/// every request, so most of its resets skip the scan, and every request
/// still starts fresh. The same guest writing new pages (`?scatter`) is
/// covered by the next test, whose every write would otherwise survive.
#[tokio::test]
async fn resets_after_the_first_put_back_the_pages_found_without_a_scan() {
    let host = counting(Some("idle_timeout = \"10m\""));
    let requests = 30;
    each_on_fresh_state(&host, requests).await;
    let stats = &host.admin_project("count").await["stats"];
    assert_eq!(stats["reset"], requests - 1);
    // The instance's first reset scans, and so does one after a stray
    // fault on its worker (the host's own allocations); most do not.
    let unscanned = stats["reset_unscanned"].as_u64().expect("a count");
    assert!(unscanned * 2 > requests, "{stats}");
}

/// A guest that moved to the slow lane ran on two threads, and the worker's
/// fault count says nothing of the pages it wrote on the other: its reset
/// scans. Here it spins past its threshold, then writes 96 pages the last
/// scan never saw; the next request finds none of them.
#[tokio::test]
async fn a_guest_that_moved_to_the_slow_lane_is_reset_with_a_scan() {
    let host = counting(Some("idle_timeout = \"10m\""));
    for _ in 0..3 {
        let reply = host.get("/count").await;
        assert_eq!(instance_and_count(&reply).1, 1);
        idle_instances(&host, 1).await;
    }
    let before = host.admin_project("count").await["stats"]["reset_unscanned"].clone();
    let moved = host.get("/count?spin=50&scatter").await;
    assert_scattered_on_clean_memory(&moved);
    idle_instances(&host, 1).await;
    let stats = &host.admin_project("count").await["stats"];
    assert_eq!(stats["slowed"], 1, "{stats}");
    assert_eq!(stats["reset_unscanned"], before, "{stats}");
    let next = host.get("/count?scatter").await;
    assert_scattered_on_clean_memory(&next);
}

/// What a request leaves behind never reaches the next one, even though the
/// instance is the same: a response slot it kept (`?leave`: the client is
/// answered when the reset drops it, as when a fresh instance is freed),
/// or memory written all over (`?scatter`: the next request finds none of
/// it). An instance that trapped is not reset but dropped.
#[tokio::test]
async fn a_reset_instance_keeps_nothing_a_request_left_and_a_trapped_one_is_dropped() {
    let host = counting(Some("idle_timeout = \"10m\""));
    let left = host.get("/count?leave").await;
    assert_eq!(
        left.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        left.text()
    );
    idle_instances(&host, 1).await;
    for _ in 0..3 {
        let scattered = host.get("/count?scatter").await;
        assert_scattered_on_clean_memory(&scattered);
        idle_instances(&host, 1).await;
    }
    assert_eq!(host.admin_project("count").await["stats"]["reset"], 3);
    let trapped = host.get("/count?trap").await;
    assert_eq!(trapped.status, StatusCode::INTERNAL_SERVER_ERROR);
    idle_instances(&host, 0).await;
    let after = host.get("/count").await;
    assert_eq!(instance_and_count(&after).1, 1);
    // The trapped request ran on the reset instance (the fourth reset); the
    // one after it on a new instance.
    assert_eq!(host.admin_project("count").await["stats"]["reset"], 4);
}

/// A request sees initial memory even when the one before it (on the same
/// instance, reset in place, or on a new instance in the same pool slot)
/// dirtied many separate regions, in its memory image and past it: the
/// count guest's `?scatter` writes 96 pages, one in every
/// two, more than the 32 regions one `PAGEMAP_SCAN` round holds, so the
/// host's patched wasmtime (vendor/wasmtime/WASMHOST.md) resets them over
/// several rounds. It also shows that they are reset in place rather than
/// thrown away: thrown away, each would fault back in on the next request,
/// at least 64 minor faults per request (Linux 6.7+, which this host's
/// reset needs, as CI's machine has).
#[tokio::test]
async fn fresh_instances_see_initial_memory_after_many_scattered_writes() {
    let host = counting(None);
    let scatter = || async {
        let reply = host.get("/count?scatter").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_scattered_on_clean_memory(&reply);
    };
    for _ in 0..20 {
        scatter().await;
    }
    let faults_before = minor_faults(host.pid()).expect("read /proc/PID/stat");
    const MEASURED: u64 = 40;
    for _ in 0..MEASURED {
        scatter().await;
    }
    let faults = minor_faults(host.pid()).expect("read /proc/PID/stat") - faults_before;
    assert!(
        faults < 16 * MEASURED,
        "{faults} minor faults over {MEASURED} requests: dirty pages were decommitted, not reset in place"
    );
}

#[tokio::test]
async fn one_instance_serves_up_to_reuse_requests_then_a_fresh_one_starts() {
    let host = counting(Some("reuse = 3\nidle_timeout = \"10m\""));
    let seen = counts(&host, "/count", 7, Some(3)).await;
    let numbers: Vec<u64> = seen.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, [1, 2, 3, 1, 2, 3, 1], "{seen:?}");
    assert_eq!(seen[0].0, seen[2].0);
    assert_ne!(seen[2].0, seen[3].0, "a fourth request on one instance");
    assert_eq!(host.admin_project("count").await["stats"]["reused"], 4);
}

/// Overlapping requests never share an instance: each instance's counts
/// are 1, 2, 3, … with none twice, whatever order the answers came in.
#[tokio::test]
async fn overlapping_requests_never_share_an_instance() {
    let host = counting(Some("reuse = 1000\nidle_timeout = \"10m\""));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let addr = host.addr;
        clients.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await;
            let mut seen = Vec::new();
            for _ in 0..15 {
                let reply = connection.get("/count?ms=5").await.expect("request");
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                seen.push(instance_and_count(&reply));
            }
            seen
        }));
    }
    let mut by_instance: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for client in clients {
        for (id, n) in client.await.expect("client") {
            by_instance.entry(id).or_default().push(n);
        }
    }
    for (id, counts) in &mut by_instance {
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(
            *counts, expected,
            "instance {id} served two requests at once"
        );
    }
    assert!(
        by_instance.len() >= 2 && by_instance.len() <= 120,
        "{} instances",
        by_instance.len()
    );
    assert!(
        by_instance.values().any(|counts| counts.len() > 1),
        "no instance was reused: {by_instance:?}"
    );
}

#[tokio::test]
async fn an_instance_that_trapped_is_never_reused() {
    let host = counting(Some("reuse = 100\nidle_timeout = \"10m\""));
    let first = counts(&host, "/count", 2, Some(100)).await;
    assert_eq!(first[1].1, 2, "{first:?}");
    let trapped = host.get("/count?trap").await;
    assert_eq!(trapped.status, StatusCode::INTERNAL_SERVER_ERROR);
    let after = counts(&host, "/count", 1, None).await;
    assert_eq!(
        after[0].1, 1,
        "the trapped instance served again: {after:?}"
    );
    assert_ne!(after[0].0, first[0].0);
}

/// A guest that returns holding the request's response slot (a leaked
/// handle) must not be kept: kept, the slot would stay open and the client
/// would wait until the instance was dropped, ten minutes here.
#[tokio::test]
async fn an_instance_that_kept_its_response_slot_is_never_reused() {
    let host = counting(Some("reuse = 100\nidle_timeout = \"10m\""));
    let first = counts(&host, "/count", 2, Some(100)).await;
    let left = host.get("/count?leave").await;
    assert_eq!(
        left.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        left.text()
    );
    let after = counts(&host, "/count", 1, None).await;
    assert_eq!(
        after[0].1, 1,
        "the instance that left its slot served again: {after:?}"
    );
    assert_ne!(after[0].0, first[0].0);
}

#[tokio::test]
async fn an_instance_idle_past_its_timeout_is_dropped() {
    let host = counting(Some("reuse = 100\nidle_timeout = \"300ms\""));
    let first = counts(&host, "/count", 2, Some(100)).await;
    assert_eq!(first[1], (first[0].0.clone(), 2));
    // The sweeper drops it without any request coming.
    host.wait_for_project("count", "no idle instance", |p| {
        p["versions"][0]["idle_instances"] == 0
    })
    .await;
    let after = counts(&host, "/count", 1, None).await;
    assert_eq!(after[0].1, 1, "{after:?}");
}

/// At a swap the old version's idle instances go at once, while a request
/// still runs on it: the draining version keeps none (and takes back none
/// when that request ends), and no answer of the new version comes from an
/// old instance.
#[tokio::test]
async fn a_swap_drops_the_old_versions_idle_instances_at_once() {
    let host = counting(Some("reuse = 100\nidle_timeout = \"10m\""));
    let before = counts(&host, "/count", 3, Some(100)).await;
    let addr = host.addr;
    let slow = tokio::spawn(async move {
        crate::harness::send(
            addr,
            crate::harness::request(
                "GET",
                "localhost",
                "/count?ms=2000",
                crate::harness::empty(),
            ),
        )
        .await
    });
    host.wait_for_project("count", "one idle and one running", |p| {
        p["versions"][0]["idle_instances"] == 0 && p["versions"][0]["in_flight"] == 1
    })
    .await;
    // The slow request took the idle instance; make another one idle.
    counts(&host, "/count", 1, Some(100)).await;

    // Same component, another config: a new version.
    let reply = host
        .deploy_with_config(
            "count",
            &std::fs::read(guests::COUNT).expect("count"),
            "[instances]\nreuse = 100\nidle_timeout = \"9m\"\n",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["live_version"], 2);
    let project = host.admin_project("count").await;
    let old = &project["versions"][1];
    assert_eq!(
        (old["version"].as_u64(), old["state"].as_str()),
        (Some(1), Some("draining"))
    );
    assert_eq!(old["in_flight"], 1, "{project:#}");
    assert_eq!(old["idle_instances"], 0, "{project:#}");

    let slow = slow.await.expect("slow request");
    assert_eq!(slow.header("wasmhost-version"), Some("1"));
    assert_eq!(instance_and_count(&slow).1, 4, "{}", slow.text());
    eventually("v1 released", || async {
        let project = host.admin_project("count").await;
        if project["stats"]["released"] == 1 {
            Ok(())
        } else {
            Err(format!("{project:#}"))
        }
    })
    .await;
    let reply = host.get("/count").await;
    assert_eq!(reply.header("wasmhost-version"), Some("2"));
    let (id, n) = instance_and_count(&reply);
    assert_eq!(n, 1);
    assert_ne!(id, before[0].0);
}

#[tokio::test]
async fn a_bad_reuse_setting_is_refused_with_its_line() {
    let host = TestHost::new()
        .project("count", guests::COUNT)
        .manifest("count", "[instances]\nreuse = 0\n")
        .spawn();
    let log = host.wait_for_log("loaded 0 of 1 projects").await;
    assert!(
        log.contains("count/wasmhost.toml:2: reuse must be between 1 and 1000000"),
        "{log}"
    );
}

/// A guest that leaves resources behind on every request (a leak, or a
/// garbage collector that never runs between requests) must not have a
/// later request trap when they reach the instance's cap on resources (256
/// at a 16 MiB memory limit, so the sixth request leaving 50 would): an
/// instance holding more than half its cap (128) is not kept. So each
/// instance serves three requests: kept after 50 and 100, dropped at 150.
#[tokio::test]
async fn an_instance_leaking_host_resources_is_replaced_before_they_reach_its_cap() {
    let host = TestHost::new()
        .project("hostile", guests::HOSTILE)
        .manifest(
            "hostile",
            "[limits]\nmemory = \"16MiB\"\n\n[instances]\nreuse = 1000\nidle_timeout = \"10m\"\n",
        )
        .spawn();
    for n in 1..=12 {
        let reply = host.get("/hostile?leak").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {n}: {}",
            reply.text()
        );
        if n % 3 != 0 {
            // Kept: wait until it is back, so the next request reuses it.
            host.wait_for_project("hostile", "the instance back in the pool", |p| {
                p["versions"][0]["idle_instances"] == 1
            })
            .await;
        }
    }
    // Four instances, each reused twice.
    assert_eq!(host.admin_project("hostile").await["stats"]["reused"], 8);
}
