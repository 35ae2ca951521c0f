//! Request workers: more workers than cores, on purpose, so that requests,
//! swaps and drains interleave across threads. Admission, drain, counts and
//! shutdown must stay exact.

use std::process::{Command, Stdio};

use hyper::StatusCode;
use wasmhost_tests::guests;
use wasmhost_tests::process::{Process, wait_until_loaded};

use crate::harness::{
    DEADLINE, SwapTraffic, TestHost, empty, request, send, tasks_named, threads_named, wasmhost,
};

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

/// Without `--workers`, one worker per CPU the process may use. Under
/// `taskset -c 0`, the affinity mask a CPU-limited container or a pinned
/// service gives, that is one; without it, as many as the test process
/// itself may use.
#[tokio::test]
async fn the_default_is_one_worker_per_cpu_the_process_may_use() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for (pinned, expected) in [(true, 1), (false, cpus)] {
        let builder = TestHost::new().project("hello", guests::HELLO);
        // The harness's own command, with its environment, minus the
        // `--workers` tests get by default.
        let serve = wasmhost();
        let mut command = if pinned {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", "0"]).arg(serve.get_program());
            taskset
        } else {
            Command::new(serve.get_program())
        };
        for (key, value) in serve.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .arg("serve")
            .arg(builder.dir())
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--no-cache")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut process = Process::spawn(command).expect("spawn wasmhost");
        let (addr, _) = wait_until_loaded(&mut process, DEADLINE)
            .unwrap_or_else(|err| panic!("wasmhost never became ready: {err}"));
        let log = process.log();
        assert!(
            log.contains(&format!(" {expected} request worker")),
            "pinned: {pinned}, expected {expected} workers:\n{log}"
        );
        let workers = (0..expected + 1)
            .filter(|index| !threads_named(process.pid(), &format!("wasmhost-w{index}")).is_empty())
            .count();
        assert_eq!(workers, expected, "worker threads, pinned: {pinned}");
        let reply = send(addr, request("GET", "localhost", "/hello", empty())).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
}

/// The CPUs each thread of `pid` named `name` may run on, as /proc lists
/// them (`0`, `0-1`, `0,2-3`).
fn cpus_allowed(pid: u32, name: &str) -> Vec<String> {
    tasks_named(pid, name)
        .into_iter()
        .filter_map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let line = status
                .lines()
                .find(|line| line.starts_with("Cpus_allowed_list:"))?;
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .collect()
}

/// One worker per CPU: each pinned to a CPU of its own, so work under
/// `SCHED_IDLE` never keeps a worker queued behind another (`affinity.rs`).
/// Not pinned with more workers than CPUs, nor with `--pin-workers=false`;
/// other threads stay on every CPU.
#[tokio::test]
async fn each_worker_is_pinned_to_a_cpu_of_its_own_when_there_is_one_cpu_per_worker() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for (workers, pin, pinned) in [
        (cpus, true, true),
        (cpus, false, false),
        (cpus + 1, true, false),
    ] {
        let host = TestHost::new()
            .project("hello", guests::HELLO)
            .arg(&format!("--workers={workers}"))
            .arg(&format!("--pin-workers={pin}"))
            .spawn();
        assert_eq!(host.get("/hello").await.status, StatusCode::OK);
        let pid = host.pid();
        let everywhere = cpus_allowed(pid, "wasmhost-epoch");
        assert_eq!(everywhere.len(), 1, "the epoch ticker");
        let mut seen: Vec<String> = (0..workers)
            .flat_map(|index| cpus_allowed(pid, &format!("wasmhost-w{index}")))
            .collect();
        assert_eq!(seen.len(), workers, "worker threads");
        let log = host.log();
        if pinned {
            assert!(log.contains("each pinned to a CPU of its own"), "{log}");
            assert!(
                seen.iter().all(|cpus| cpus.parse::<usize>().is_ok()),
                "each worker on one CPU: {seen:?}"
            );
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), workers, "a CPU each: {seen:?}");
        } else {
            assert!(!log.contains("pinned"), "{log}");
            assert!(
                seen.iter().all(|cpus| *cpus == everywhere[0]),
                "workers {seen:?}, other threads {everywhere:?}"
            );
        }
        // The slow lanes and the compile threads are never pinned.
        for cpus in cpus_allowed(pid, "wasmhost-slow") {
            assert_eq!(cpus, everywhere[0], "a slow lane");
        }
    }
}
