//! A fleet on one machine, made of the parts people run: a real registry
//! (`docker-registry`), three wasmhost processes polling one tag, and HAProxy
//! in front of them, under load the whole time. Pushing to the tag rolls the
//! fleet forward; a broken push changes nothing; no request fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tempfile::TempDir;
use wasmhost_tests::guests;
use wasmhost_tests::process::Process;

use crate::harness::{RunningHost, TestHost, eventually, request, send};
use crate::oci::{Registry, push};

/// How often each host asks the registry about its tag.
const POLL: Duration = Duration::from_secs(1);

/// HAProxy on a free loopback port, balancing over `hosts`, each health
/// checked on its admin listener's `/readyz`; killed on drop.
struct Balancer {
    _process: Process,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Balancer {
    async fn start(hosts: &[RunningHost]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = crate::harness::free_loopback_addr();
        let servers: String = hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                format!(
                    "    server host{index} {} check port {} inter 200ms fall 2 rise 1\n",
                    host.addr,
                    host.admin.port()
                )
            })
            .collect();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n    log stderr format raw local0 warning\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch\n\
                 frontend fleet\n    bind {addr}\n    default_backend hosts\n\
                 backend hosts\n    balance roundrobin\n    option httpchk GET /readyz\n{servers}"
            ),
        )
        .expect("write the HAProxy config");
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&config)
            .output()
            .expect("haproxy is missing: scripts/test installs it (apt-get install haproxy)");
        assert!(
            check.status.success(),
            "haproxy refused its config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut command = Command::new("haproxy");
        command
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null());
        let process = Process::spawn(command).expect("start haproxy");
        crate::harness::wait_until_answering("HAProxy serving", addr, "/app", |status| {
            status == StatusCode::OK
        })
        .await;
        Self {
            _process: process,
            addr,
            _dir: dir,
        }
    }
}

/// Which build answered, from what the answer looks like.
fn which(reply: &crate::harness::Reply) -> &'static str {
    if reply.header("echo-method").is_some() {
        "echo"
    } else if reply.text() == "Hello, world!\n" {
        "hello"
    } else if reply.text().contains("FLEET=yes") {
        "env"
    } else {
        "unknown"
    }
}

/// How many answers came from each build, and every failure.
type Tally = (BTreeMap<&'static str, u64>, Vec<String>);

/// Requests through the balancer, one after another on each of a few
/// clients, until stopped: what each answer was, and every failure.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut seen = BTreeMap::new();
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = request("GET", "localhost", "/app/x", crate::harness::empty());
                        match crate::harness::try_send(addr, sent).await {
                            Ok(reply) if reply.status == StatusCode::OK => {
                                *seen.entry(which(&reply)).or_insert(0) += 1;
                            }
                            Ok(reply) => {
                                failures.push(format!("{}: {}", reply.status, reply.text()))
                            }
                            Err(err) => failures.push(err.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    (seen, failures)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = BTreeMap::new();
        let mut failures = Vec::new();
        for task in self.tasks {
            let (s, f) = task.await.expect("load task");
            for (build, count) in s {
                *seen.entry(build).or_insert(0) += count;
            }
            failures.extend(f);
        }
        (seen, failures)
    }
}

/// Waits until every host serves `digest`; how long that took.
async fn converge(hosts: &[RunningHost], digest: &str) -> Duration {
    let started = Instant::now();
    eventually(&format!("every host serving {digest}"), || async {
        let mut serving = Vec::new();
        for host in hosts {
            serving.push(host.admin_project("app").await["oci"]["digest"].clone());
        }
        if serving.iter().all(|d| d == digest) {
            Ok(())
        } else {
            Err(format!("{serving:?}"))
        }
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_fleet_behind_haproxy_converges_on_each_push_and_ignores_a_broken_one() {
    let registry = Registry::start().await;
    let tag = registry.reference("fleet/app", "stable");
    push(guests::HELLO, &tag);
    let config = format!("component = \"{tag}\"\n\n[env]\nFLEET = \"yes\"\n");
    let poll = format!("--registry-poll={}ms", POLL.as_millis());
    let hosts: Vec<RunningHost> = (0..3)
        .map(|_| TestHost::new().manifest("app", &config).arg(&poll).spawn())
        .collect();
    let balancer = Balancer::start(&hosts).await;
    let load = Load::start(balancer.addr, 4);

    push(guests::ECHO, &tag);
    let pushed = registry.digest_of("fleet/app", "stable").await;
    let to_v2 = converge(&hosts, &pushed).await;

    // A broken artifact: every host refuses it and keeps serving v2.
    registry
        .publish_raw(
            "fleet/app",
            "stable",
            b"\0asm\x01\0\0\0 broken",
            "application/wasm",
        )
        .await;
    for host in &hosts {
        let refused = host
            .wait_for_project("app", "the broken push refused", |p| {
                p["last_failure"]["step"] == "prepare"
            })
            .await;
        assert_eq!(refused["oci"]["digest"], pushed.as_str(), "{refused}");
    }

    push(guests::ENV, &tag);
    let pushed = registry.digest_of("fleet/app", "stable").await;
    let to_v3 = converge(&hosts, &pushed).await;
    // Once converged, only the new build answers.
    for _ in 0..30 {
        let reply = send(
            balancer.addr,
            request("GET", "localhost", "/app/x", crate::harness::empty()),
        )
        .await;
        assert_eq!(which(&reply), "env", "{}", reply.text());
    }

    let (seen, failures) = load.finish().await;
    eprintln!(
        "fleet converged in {} ms and {} ms (poll {} ms); answers: {seen:?}",
        to_v2.as_millis(),
        to_v3.as_millis(),
        POLL.as_millis()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    for build in ["hello", "echo", "env"] {
        assert!(
            seen.get(build).is_some_and(|n| *n > 0),
            "{build} never answered: {seen:?}"
        );
    }
    assert!(!seen.contains_key("unknown"), "{seen:?}");
}
