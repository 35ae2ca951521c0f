//! What an operator watches: `GET /metrics` (linted by the real promtool),
//! JSON logs, the access log and request ids.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use hyper::StatusCode;
use serde_json::Value;
use wasmhost_tests::guests;

use crate::harness::{RunningHost, TestBody, TestHost, empty, full, request, send};

const TOKEN: &str = "metrics-test-token";

/// `request` with the test's admin token.
fn authorized(mut request: hyper::Request<TestBody>) -> hyper::Request<TestBody> {
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("valid header"),
    );
    request
}

async fn scrape(host: &RunningHost) -> String {
    let reply = send(
        host.admin,
        authorized(request("GET", "localhost", "/metrics", empty())),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    reply.text()
}

/// One sample: metric name, labels, value.
pub(crate) type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of a text exposition (comments skipped).
pub(crate) fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, labels)) => {
                    let labels = labels.trim_end_matches('}');
                    let labels = labels
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) = pair.split_once('=').expect("label=value");
                            (key.to_string(), value.trim_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            (name, labels, value)
        })
        .collect()
}

/// Waits until no guest instance is alive in the pool (none running a
/// request, none kept idle), by the admin API's `wasmhost_instances_in_use`;
/// `what` names the wait when it times out.
pub(crate) async fn until_no_instance_is_alive(host: &RunningHost, what: &str) {
    crate::harness::eventually(what, || async {
        let text = host.admin_get("/metrics").await.text();
        match value(&samples(&text), "wasmhost_instances_in_use", &[]) {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?} instances in use")),
        }
    })
    .await;
}

/// The value of the one sample named `name` with exactly `labels`.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == wanted)
        .map(|(_, _, v)| *v)
}

/// `promtool check metrics` on `text`: its complaints, empty when it passes.
fn promtool(text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: scripts/test installs it (apt-get install prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        said
    } else {
        format!("exit {}: {said}", output.status)
    }
}

#[tokio::test]
async fn metrics_count_what_happened_pass_promtool_and_follow_the_projects() {
    let host = TestHost::new()
        .project("app", guests::HELLO)
        .project("trap", guests::TRAP)
        .arg("--admin-token")
        .arg(TOKEN)
        .spawn();
    for _ in 0..5 {
        assert_eq!(host.get("/app").await.status, StatusCode::OK);
    }
    assert_eq!(
        host.get("/trap").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let deploy =
        |bytes: Vec<u8>| authorized(crate::harness::admin_request("PUT", "/projects/app", bytes));
    let echo = std::fs::read(guests::ECHO).expect("echo guest");
    let reply = send(host.admin, deploy(echo)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = send(host.admin, deploy(b"not a component".to_vec())).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Without the token: refused like every other admin read.
    let reply = send(host.admin, request("GET", "localhost", "/metrics", empty())).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    let text = scrape(&host).await;
    assert_eq!(promtool(&text), "", "promtool on:\n{text}");
    let all = samples(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&all, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    let app = [("project", "app")];
    assert_eq!(
        get(
            "wasmhost_requests_total",
            &[("code", "200"), ("project", "app")]
        ),
        5.0
    );
    assert_eq!(
        get(
            "wasmhost_requests_total",
            &[("code", "500"), ("project", "trap")]
        ),
        1.0
    );
    assert_eq!(get("wasmhost_request_duration_seconds_count", &app), 5.0);
    assert!(get("wasmhost_request_duration_seconds_sum", &app) > 0.0);
    assert_eq!(
        get(
            "wasmhost_request_duration_seconds_bucket",
            &[("le", "+Inf"), ("project", "app")]
        ),
        5.0
    );
    assert_eq!(get("wasmhost_requests_in_flight", &app), 0.0);
    assert_eq!(get("wasmhost_project_version", &app), 2.0);
    assert_eq!(get("wasmhost_project_up", &app), 1.0);
    assert_eq!(get("wasmhost_swaps_total", &app), 2.0);
    assert_eq!(
        get(
            "wasmhost_rejected_total",
            &[("project", "app"), ("step", "prepare")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "wasmhost_rejected_total",
            &[("project", "app"), ("step", "validate")]
        ),
        0.0
    );
    assert_eq!(get("wasmhost_rollbacks_total", &app), 0.0);
    assert_eq!(get("wasmhost_forced_drains_total", &app), 0.0);
    assert_eq!(get("wasmhost_overloaded_total", &app), 0.0);
    // Three compiles in a fresh cache: app v1, trap v1, app v2; the refused
    // bytes never compiled.
    assert_eq!(get("wasmhost_compile_cache_misses_total", &[]), 3.0);
    assert_eq!(get("wasmhost_compile_cache_hits_total", &[]), 0.0);
    assert_eq!(get("wasmhost_compile_duration_seconds_count", &[]), 3.0);
    assert_eq!(get("wasmhost_swap_latency_seconds_count", &[]), 3.0);
    assert_eq!(get("wasmhost_instances_capacity", &[]), 1000.0);
    // None alive: app's first version, whose instance was kept idle, was
    // retired by the deploy (which drops its idle instances), and trap's
    // instance trapped.
    assert_eq!(get("wasmhost_instances_in_use", &[]), 0.0);
    assert!(get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(get("process_open_fds", &[]) > 0.0);
    // Whole seconds in this library, so possibly 0 for a young process.
    assert!(
        value(&all, "process_cpu_seconds_total", &[]).is_some(),
        "{text}"
    );
    assert!(get("process_threads", &[]) > 1.0);
    // No label that grows without bound: never a version or a path.
    for (name, labels, _) in &all {
        for label in labels.keys() {
            assert!(
                ["project", "code", "step", "le"].contains(&label.as_str()),
                "{name} has label {label}"
            );
        }
    }

    // A removed project's series are gone from the next scrape.
    let remove = |name: &str| {
        let path = format!("/projects/{name}");
        let request = authorized(crate::harness::admin_request("DELETE", &path, Vec::new()));
        async {
            let reply = send(host.admin, request).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
    };
    remove("trap").await;
    let text = scrape(&host).await;
    assert!(!text.contains("project=\"trap\""), "{text}");
    assert!(text.contains("project=\"app\""), "{text}");
    assert_eq!(promtool(&text), "", "promtool on:\n{text}");

    // With no project left, the host-wide series are still scraped.
    remove("app").await;
    let text = scrape(&host).await;
    assert!(!text.contains("project="), "{text}");
    assert!(text.contains("wasmhost_compile_cache_hits_total"), "{text}");
    assert_eq!(promtool(&text), "", "promtool on:\n{text}");
}

/// Every line the host wrote to stderr, each parsed as JSON.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect()
}

#[tokio::test]
async fn json_logs_carry_project_version_and_request_id_on_access_and_guest_lines() {
    let host = TestHost::new()
        .project("echo", guests::ECHO)
        .project("env", guests::ENV)
        .arg("--log-format=json")
        .arg("--access-log")
        .spawn();

    // A sane id from the client is used: the guest sees it, the client gets it back.
    let mut with_id = request("GET", "localhost", "/echo/a?b=1", empty());
    with_id
        .headers_mut()
        .insert("x-request-id", "client-id-42".parse().expect("header"));
    let reply = send(host.addr, with_id).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-request-id"), Some("client-id-42"));
    assert_eq!(
        reply.header("echo-header-x-request-id"),
        Some("client-id-42")
    );

    // An unusable one is replaced, for the guest and the client alike.
    let mut bad_id = request("POST", "localhost", "/echo", full("x"));
    bad_id.headers_mut().insert(
        "x-request-id",
        "has spaces; and=\"quotes\"".parse().expect("header"),
    );
    let reply = send(host.addr, bad_id).await;
    let made = reply.header("x-request-id").expect("an id").to_string();
    assert_eq!(made.len(), 32, "{made}");
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    assert_eq!(
        reply.header("echo-header-x-request-id"),
        Some(made.as_str())
    );

    // No project here: still an id, and still an access line.
    let reply = send(host.addr, request("GET", "localhost", "/nowhere", empty())).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let unrouted = reply.header("x-request-id").expect("an id").to_string();

    // The env guest prints a line to stdout on every request. The second
    // request runs on the instance the first left, reset in place, whose
    // output streams must now be tagged with the second one's id.
    for id in ["env-req-7", "env-req-8"] {
        let mut env = request("GET", "localhost", "/env", empty());
        env.headers_mut()
            .insert("x-request-id", id.parse().expect("header"));
        assert_eq!(send(host.addr, env).await.status, StatusCode::OK);
    }
    assert_eq!(
        host.admin_project("env").await["stats"]["reset"],
        1,
        "the second env request ran on the first one's instance, reset"
    );

    // The guest's line and the access line are written as the request
    // ends; wait for both, for both requests.
    crate::harness::eventually("the env requests' guest and access lines", || async {
        let log = host.log();
        let lines = json_lines(&log);
        let seen = |target: &str, id: &str| {
            lines
                .iter()
                .any(|l| l["target"] == target && l["request_id"] == id)
        };
        if ["env-req-7", "env-req-8"]
            .iter()
            .all(|id| seen("wasmhost::access", id) && seen("guest", id))
        {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    let lines = json_lines(&host.log());
    let access = |id: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["target"] == "wasmhost::access" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id} in:\n{}", host.log()))
    };
    let first = access("client-id-42");
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/echo/a?b=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["project"], "echo");
    assert_eq!(first["version"], 1);
    assert!(
        first["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{first}"
    );
    assert_eq!(access(&made)["method"], "POST");
    let missing = access(&unrouted);
    assert_eq!(missing["status"], 404);
    assert!(missing.get("project").is_none(), "{missing}");

    let guest = lines
        .iter()
        .find(|l| l["target"] == "guest")
        .unwrap_or_else(|| panic!("no guest line in:\n{}", host.log()));
    assert_eq!(guest["project"], "env");
    assert_eq!(guest["version"], 1);
    assert_eq!(guest["request_id"], "env-req-7");
    assert_eq!(guest["stream"], "stdout");
    assert!(
        guest["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("env guest: serving")),
        "{guest}"
    );
    // Lines about a project's versions name both at the top level.
    let live = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("echo: v1 live"))
        })
        .unwrap_or_else(|| panic!("no live line in:\n{}", host.log()));
    assert_eq!(live["project"], "echo");
    assert_eq!(live["version"], 1);
}
