//! The watched projects folder: file changes become versions through the
//! same pipeline, debounced per project, and nothing else reloads.

use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::StatusCode;
use serde_json::Value;
use wasmhost_tests::guests;

use crate::harness::{RunningHost, TestHost, eventually, write_atomically};

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).expect("read guest")
}

/// Polls `path` until its answer satisfies `check`.
async fn wait_until_served(
    host: &RunningHost,
    path: &str,
    what: &str,
    check: impl Fn(&crate::harness::Reply) -> bool,
) {
    eventually(&format!("{path} {what}"), || async {
        let reply = host.get(path).await;
        if check(&reply) {
            Ok(())
        } else {
            Err(format!("{reply:?}\n{}", host.log()))
        }
    })
    .await
}

/// Adds a fresh one-file project and waits until it serves. Its events come
/// after every earlier event, so once it serves, every earlier change has
/// been acted on: what has not happened by now will not happen.
async fn settle(host: &RunningHost) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("sentinel{}", NEXT.fetch_add(1, Ordering::Relaxed));
    write_atomically(
        &host.dir().join(format!("{name}.wasm")),
        &read(guests::HELLO),
    );
    wait_until_served(host, &format!("/{name}"), "served", |r| {
        r.status == StatusCode::OK
    })
    .await;
}

fn stat(project: &Value, name: &str) -> u64 {
    project["stats"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no stat {name}: {project:#}"))
}

#[tokio::test]
async fn a_new_project_folder_becomes_routable_and_the_others_are_untouched() {
    let host = TestHost::new().project("a", guests::HELLO).spawn();
    write_atomically(&host.dir().join("b/b.wasm"), &read(guests::ECHO));
    wait_until_served(&host, "/b/x", "served by b", |r| {
        r.header("echo-path") == Some("/b/x")
    })
    .await;
    let a = host.admin_project("a").await;
    assert_eq!((stat(&a, "swaps"), stat(&a, "changes")), (1, 0), "{a:#}");
    assert_eq!(host.get("/a").await.header("wasmhost-version"), Some("1"));
}

#[tokio::test]
async fn editing_a_component_goes_live_and_a_broken_write_keeps_the_old_version() {
    let host = TestHost::new().project("a", guests::HELLO).spawn();
    let component = host.dir().join("a/a.wasm");

    std::fs::write(&component, b"\0asm but not really").expect("write garbage");
    let a = host
        .wait_for_project("a", "the garbage rejected", |a| stat(a, "rejected") == 1)
        .await;
    assert_eq!(a["version"], 1);
    assert_eq!(a["last_failure"]["step"], "prepare");
    assert_eq!(host.get("/a").await.text(), "Hello, world!\n");
    host.wait_for_log("a: change detected").await;
    host.wait_for_log("still serving").await;

    std::fs::write(&component, read(guests::ECHO)).expect("write echo");
    wait_until_served(&host, "/a/z", "served by the new version", |r| {
        r.header("echo-path") == Some("/a/z")
    })
    .await;
    let a = host.admin_project("a").await;
    assert_eq!(stat(&a, "swaps"), 2, "{a:#}");
    host.wait_for_log("a: v3 compiled in").await;
    host.wait_for_log("a: v3 live (swap").await;
}

#[tokio::test]
async fn an_atomic_save_and_a_500_write_burst_are_one_reload_each() {
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .project("b", guests::HELLO)
        .spawn();

    write_atomically(&host.dir().join("a/a.wasm"), &read(guests::ECHO));
    wait_until_served(&host, "/a", "swapped", |r| {
        r.header("wasmhost-version") == Some("2")
    })
    .await;

    // 500 writes, each a piece of the component, with no pause between them.
    let echo = read(guests::ECHO);
    let piece = echo.len().div_ceil(500);
    let mut file = std::fs::File::create(host.dir().join("b/b.wasm")).expect("open");
    let mut writes = 0;
    for chunk in echo.chunks(piece) {
        use std::io::Write;
        file.write_all(chunk).expect("write");
        file.flush().expect("flush");
        writes += 1;
    }
    drop(file);
    assert!(writes >= 490, "only {writes} writes");
    wait_until_served(&host, "/b", "swapped", |r| {
        r.header("echo-path") == Some("/b")
    })
    .await;

    settle(&host).await;
    for name in ["a", "b"] {
        let project = host.admin_project(name).await;
        assert_eq!(
            (stat(&project, "changes"), stat(&project, "swaps")),
            (1, 2),
            "{name}: {project:#}"
        );
    }
}

#[tokio::test]
async fn config_edits_reload_only_when_the_effective_config_changes() {
    let host = TestHost::new()
        .project("env", guests::ENV)
        .manifest("env", "[env]\nCOLOR = \"red\"\n")
        .spawn();
    let manifest = host.dir().join("env/wasmhost.toml");
    assert_eq!(host.get("/env").await.text(), "COLOR=red\n");

    std::fs::write(
        &manifest,
        "# the colour of the day\n[env]\nCOLOR   =   \"red\"  # still red\n",
    )
    .expect("write");
    settle(&host).await;
    let project = host.admin_project("env").await;
    assert_eq!(
        (stat(&project, "changes"), stat(&project, "swaps")),
        (0, 1),
        "{project:#}"
    );

    std::fs::write(&manifest, "[env]\nCOLOR = \"green\"\n").expect("write");
    wait_until_served(&host, "/env", "sees the new env", |r| {
        r.text() == "COLOR=green\n"
    })
    .await;
    let project = host.admin_project("env").await;
    assert_eq!(
        (
            stat(&project, "changes"),
            stat(&project, "swaps"),
            stat(&project, "cache_misses")
        ),
        (1, 2, 1),
        "{project:#}"
    );
}

#[tokio::test]
async fn deleted_and_renamed_projects_follow_the_disk() {
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .project("b", guests::ECHO)
        .spawn();
    std::fs::remove_dir_all(host.dir().join("b")).expect("delete b");
    wait_until_served(&host, "/b", "unrouted", |r| {
        r.status == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        host.admin_get("/projects/b").await.status,
        StatusCode::NOT_FOUND
    );

    std::fs::rename(host.dir().join("a"), host.dir().join("c")).expect("rename a to c");
    wait_until_served(&host, "/c", "served under the new name", |r| {
        r.status == StatusCode::OK
    })
    .await;
    wait_until_served(&host, "/a", "unrouted", |r| {
        r.status == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        host.admin_get("/projects/a").await.status,
        StatusCode::NOT_FOUND
    );
    host.wait_for_log("a: change detected: deleted from disk")
        .await;
}

#[tokio::test]
async fn a_deploy_through_the_admin_api_is_one_reload() {
    let host = TestHost::new().project("a", guests::HELLO).spawn();
    host.deploy_guest("a", guests::ECHO).await;
    // The deploy wrote a/a.wasm; the watcher sees that write and finds nothing new.
    settle(&host).await;
    let a = host.admin_project("a").await;
    assert_eq!((stat(&a, "swaps"), stat(&a, "changes")), (2, 0), "{a:#}");
    assert_eq!(a["version"], 2);
}

#[tokio::test]
async fn polling_mode_picks_up_changes() {
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .arg("--poll")
        .arg("--poll-interval")
        .arg("100ms")
        .spawn();
    host.wait_for_log("by polling every 100 ms").await;
    std::fs::write(host.dir().join("a/a.wasm"), read(guests::ECHO)).expect("write");
    wait_until_served(&host, "/a", "swapped", |r| {
        r.header("echo-path") == Some("/a")
    })
    .await;
    write_atomically(&host.dir().join("n.wasm"), &read(guests::HELLO));
    wait_until_served(&host, "/n", "served", |r| r.status == StatusCode::OK).await;
}

#[tokio::test]
async fn a_broken_new_project_shows_as_failed_until_fixed() {
    let host = TestHost::new().project("a", guests::HELLO).spawn();
    std::fs::create_dir_all(host.dir().join("late")).expect("mkdir");
    std::fs::write(host.dir().join("late/wasmhost.toml"), "route = 7\n").expect("write");
    write_atomically(&host.dir().join("late/late.wasm"), &read(guests::ECHO));
    let late = eventually("late shown as failed", || async {
        let reply = host.admin_get("/projects/late").await;
        match reply.status == StatusCode::OK && reply.json()["state"] == "failed" {
            true => Ok(reply.json()),
            false => Err(reply.text()),
        }
    })
    .await;
    let error = late["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("late/wasmhost.toml:1:"), "{error}");
    std::fs::write(host.dir().join("late/wasmhost.toml"), "route = \"/late\"\n").expect("write");
    wait_until_served(&host, "/late", "served once fixed", |r| {
        r.header("echo-path") == Some("/late")
    })
    .await;
    assert_eq!(host.admin_project("late").await["state"], "active");
}

/// Lays out `projects` (name → wasmhost.toml text and component) the way the
/// kubelet writes a ConfigMap volume: a `..STAMP/` folder holding the files,
/// `..data` pointing at it, and one `NAME → ..data/NAME` link per project.
fn configmap_generation(root: &std::path::Path, stamp: &str, projects: &[(&str, &str, &str)]) {
    let folder = root.join(stamp);
    for (name, toml, guest) in projects {
        std::fs::create_dir_all(folder.join(name)).expect("mkdir");
        std::fs::write(folder.join(name).join("wasmhost.toml"), toml).expect("write toml");
        std::fs::copy(guest, folder.join(name).join("app.wasm")).expect("copy guest");
    }
}

#[tokio::test]
async fn a_configmap_update_through_the_kubelets_atomic_writer_is_one_change_per_project() {
    use std::os::unix::fs::symlink;
    let host = TestHost::new();
    let root = host.dir().to_path_buf();
    let plain = "component = \"app.wasm\"\n";
    configmap_generation(
        &root,
        "..2026_11_24_06_00_00.000000001",
        &[
            ("hello", plain, guests::HELLO),
            ("other", plain, guests::HELLO),
        ],
    );
    symlink("..2026_11_24_06_00_00.000000001", root.join("..data")).expect("link ..data");
    for name in ["hello", "other"] {
        symlink(format!("..data/{name}"), root.join(name)).expect("link project");
    }
    let host = host.spawn();
    assert_eq!(host.get("/hello").await.text(), "Hello, world!\n");
    assert_eq!(host.get("/other").await.text(), "Hello, world!\n");

    // The update, as the kubelet makes it: a new generation, `..data_tmp`
    // pointing at it renamed over `..data`, then the old one removed. Only
    // `hello` differs (new component and config).
    configmap_generation(
        &root,
        "..2026_11_24_06_05_00.000000002",
        &[
            (
                "hello",
                "component = \"app.wasm\"\n\n[env]\nGEN = \"2\"\n",
                guests::ECHO,
            ),
            ("other", plain, guests::HELLO),
        ],
    );
    symlink("..2026_11_24_06_05_00.000000002", root.join("..data_tmp")).expect("link ..data_tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(root.join("..2026_11_24_06_00_00.000000001")).expect("remove old");

    let hello = host
        .wait_for_project("hello", "v2 live", |p| p["version"] == 2)
        .await;
    assert_eq!(
        hello["stats"]["changes"], 1,
        "one change for hello: {hello}"
    );
    assert_eq!(
        host.get("/hello/x").await.header("echo-method"),
        Some("GET")
    );
    settle(&host).await;
    let hello = host.admin_project("hello").await;
    assert_eq!(hello["version"], 2, "{hello}");
    assert_eq!(hello["stats"]["changes"], 1, "{hello}");
    let other = host.admin_project("other").await;
    assert_eq!(other["version"], 1, "other did not change: {other}");
    assert_eq!(other["stats"]["changes"], 0, "{other}");
    assert_eq!(host.get("/other").await.text(), "Hello, world!\n");
}

/// Rewrites a file every 20 ms on a thread of its own, so the writes keep
/// coming however slowly the test's requests are answered; stops when
/// dropped.
struct KeepWriting(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl KeepWriting {
    fn start(path: std::path::PathBuf) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut writes = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let _ = std::fs::write(&path, format!("{writes}\n"));
                writes += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Self(stop)
    }
}

impl Drop for KeepWriting {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn a_project_whose_files_never_go_quiet_is_still_reloaded() {
    // A debounce of 1 s, and a file in the project rewritten every 20 ms
    // until the new component serves: without a limit on how long events
    // may put a reload off, it would never be served meanwhile.
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .arg("--debounce")
        .arg("1s")
        .spawn();
    let dir = host.dir().join("a");
    std::fs::write(dir.join("a.wasm"), read(guests::ECHO)).expect("write echo");
    let writing = KeepWriting::start(dir.join("progress.log"));
    wait_until_served(
        &host,
        "/a/z",
        "served while the folder kept changing",
        |r| r.header("echo-path") == Some("/a/z"),
    )
    .await;
    drop(writing);
    host.wait_for_log("a: v2 live").await;
}

/// A folder copied to a new name while the original still holds their
/// shared `route` is refused; once the original is deleted (the two halves
/// of a rename, in the unlucky order), the copy is loaded again and serves.
#[tokio::test]
async fn a_project_refused_for_a_route_loads_once_the_route_is_freed() {
    let host = TestHost::new()
        .project("a", guests::HELLO)
        .manifest("a", "route = \"/shared\"\n")
        .spawn();
    write_atomically(
        &host.dir().join("b/wasmhost.toml"),
        b"route = \"/shared\"\n",
    );
    write_atomically(&host.dir().join("b/b.wasm"), &read(guests::ECHO));
    let b = eventually("b refused for its route", || async {
        let reply = host.admin_get("/projects/b").await;
        let b = (reply.status == StatusCode::OK).then(|| reply.json());
        match b {
            Some(b) if b["last_failure"]["step"] == "route" => Ok(b),
            _ => Err(format!("{} {}", reply.status, reply.text())),
        }
    })
    .await;
    assert!(b["version"].is_null(), "{b:#}");
    std::fs::remove_dir_all(host.dir().join("a")).expect("delete a");
    wait_until_served(&host, "/shared/z", "served by b", |r| {
        r.header("echo-path") == Some("/shared/z")
    })
    .await;
    assert_eq!(
        host.get("/shared").await.header("wasmhost-project"),
        Some("b")
    );
}
