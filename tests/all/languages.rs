//! Guests in Python and JavaScript next to Rust: one project swapped across
//! the three languages under load, by deploys and by file writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use wasmhost_tests::guests;

use crate::harness::{RunningHost, TestHost, versioned_answers, write_atomically};

/// Each language's build of the hello guest, with the answer it gives.
const BUILDS: [(&str, &str, &str); 3] = [
    ("Rust", guests::HELLO, "Hello, world!\n"),
    ("Python", guests::HELLO_PY, "Hello from Python!\n"),
    ("JavaScript", guests::HELLO_JS, "Hello from JavaScript!\n"),
];

/// Rust → Python → JavaScript → Rust, once through deploys and once through
/// file writes, under 8 busy connections: no request fails, every answer is
/// whole from the build its `wasmhost-version` names, and no connection
/// goes back to an older version.
#[tokio::test]
async fn one_project_swaps_across_rust_python_and_javascript_under_load() {
    const CONNECTIONS: usize = 8;
    let host = TestHost::new().project("app", guests::HELLO).spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CONNECTIONS)
        // Busy but not saturating, so the compiles are not what is tested
        // here: they use idle CPU only for their first 30 s
        // (`--compile-patience`), and `swap.rs` tests that raising. A Python request costs about
        // 3.5 ms of CPU here, so 8 connections each sending every 25 ms ask
        // for about one core of two.
        .map(|_| {
            tokio::spawn(versioned_answers(
                host.addr,
                stop.clone(),
                Duration::from_millis(25),
            ))
        })
        .collect();

    // Which language each version is, as the swaps made them live.
    let mut expected: BTreeMap<u64, &str> = BTreeMap::from([(1, BUILDS[0].2)]);
    let order = [1, 2, 0];
    for by_file in [false, true] {
        for &index in &order {
            let (language, path, answer) = BUILDS[index];
            let bytes = std::fs::read(path).expect("read guest");
            let version = if by_file {
                let before = live_version(&host).await;
                write_atomically(&host.dir().join("app/app.wasm"), &bytes);
                wait_for_version_after(&host, before).await
            } else {
                let reply = host.deploy("app", &bytes).await;
                assert_eq!(reply.status, StatusCode::OK, "{language}: {}", reply.text());
                reply.json()["live_version"].as_u64().expect("live_version")
            };
            println!(
                "v{version}: {language} (by {})",
                if by_file { "file write" } else { "deploy" }
            );
            expected.insert(version, answer);
            // Let traffic see this version before the next swap.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);

    let mut answers = 0;
    let mut seen = std::collections::BTreeSet::new();
    for client in clients {
        let replies = client
            .await
            .expect("client task")
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(!replies.is_empty(), "a connection got no answer");
        for (version, reply) in replies {
            let body = reply.text();
            let want = expected
                .get(&version)
                .unwrap_or_else(|| panic!("an answer from v{version}, which no swap made live"));
            assert_eq!(&body, want, "v{version} answered as another build");
            seen.insert(version);
            answers += 1;
        }
    }
    println!("{answers} answers over {CONNECTIONS} connections from versions {seen:?}");
    assert_eq!(expected.len(), 7, "{expected:?}");
    // Every language answered from both kinds of swap.
    assert!(seen.len() >= 5, "traffic saw only {seen:?} of {expected:?}");
    let project = host.admin_project("app").await;
    assert_eq!(project["stats"]["forced_drains"], 0);
    assert_eq!(project["in_flight"], 0);
}

async fn live_version(host: &RunningHost) -> u64 {
    host.admin_project("app").await["version"]
        .as_u64()
        .expect("a live version")
}

/// Waits until a version newer than `before` is live, and returns it.
async fn wait_for_version_after(host: &RunningHost, before: u64) -> u64 {
    let project = host
        .wait_for_project("app", &format!("a version after v{before}"), |p| {
            p["version"].as_u64().is_some_and(|v| v > before) && p["state"] != "preparing"
        })
        .await;
    project["version"].as_u64().expect("version")
}
