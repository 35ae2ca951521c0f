//! The dashboard in a real headless Chromium, driven through chromedriver
//! over the W3C WebDriver protocol: it asks for the token, shows a deploy
//! going live and a broken one rejected, all without a reload.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use hyper::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use wasmhost_tests::guests;
use wasmhost_tests::process::Process;

use crate::harness::{TestHost, eventually, full, request, send};

const TOKEN: &str = "dashboard-test-token";

/// The key W3C WebDriver puts element references under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and the headless Chromium it starts, in a process group of
/// their own: dropping this ends the session and kills the whole group, so
/// no browser outlives the test.
struct Browser {
    driver: Process,
    addr: SocketAddr,
    session: String,
    /// Chromium's profile, a fresh one per test.
    profile: TempDir,
}

impl Browser {
    async fn start() -> Self {
        // A free port the OS picked; chromedriver binds it right after.
        let port = crate::harness::free_loopback_addr().port();
        let mut command = Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .process_group(0);
        let driver = Process::spawn(command).expect(
            "chromedriver is missing: scripts/test installs it (apt-get install chromium chromium-driver)",
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        eventually("chromedriver ready", || async {
            match crate::harness::try_send(
                addr,
                request("GET", "localhost", "/status", crate::harness::empty()),
            )
            .await
            {
                Ok(reply) if reply.json()["value"]["ready"] == true => Ok(()),
                Ok(reply) => Err(reply.text()),
                Err(err) => Err(err.to_string()),
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("temp dir");
        let mut browser = Self {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        let profile = browser.profile.path().display().to_string();
        let created = browser
            .call(
                "POST",
                "/session",
                json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": std::env::var("WASMHOST_CHROMIUM")
                            .unwrap_or_else(|_| "/usr/bin/chromium".to_string()),
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1400,900",
                            format!("--user-data-dir={profile}"),
                        ],
                    },
                }}}),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}\n{}", browser.driver.log()))
            .to_string();
        browser
    }

    /// One WebDriver command; its `value`.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if body.is_null() {
            crate::harness::empty()
        } else {
            full(body.to_string())
        };
        let mut call = request(method, "localhost", path, body);
        call.headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        let reply = send(self.addr, call).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{method} {path}: {}",
            reply.text()
        );
        reply.json()["value"].take()
    }

    async fn session(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    async fn open(&self, url: &str) {
        self.session("POST", "/url", json!({ "url": url })).await;
    }

    /// Runs `script` in the page and returns what it returns.
    async fn run(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The element `css` selects.
    async fn element(&self, css: &str) -> String {
        let found = self
            .session(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .expect("element reference")
            .to_string()
    }

    /// Types `text` into the element `css` selects, as a user would.
    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.session(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.session("POST", &format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// A PNG of the page.
    async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.session("GET", "/screenshot", Value::Null).await;
        base64_decode(encoded.as_str().expect("base64 text"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (Chromium quits), then make sure of it.
        if !self.session.is_empty() {
            use std::io::Write as _;
            if let Ok(mut stream) = std::net::TcpStream::connect(self.addr) {
                let _ = write!(
                    stream,
                    "DELETE /session/{} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let _ = std::io::Read::read(&mut stream, &mut [0u8; 512]);
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.pid())])
            .status();
    }
}

/// Standard base64 (WebDriver screenshots), padding allowed.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in text
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
    {
        let value = ALPHABET
            .iter()
            .position(|a| *a == byte)
            .unwrap_or_else(|| panic!("not base64: {byte}")) as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// What the page shows for project `app`, read from its DOM.
const READ_APP: &str = r#"
const row = document.querySelector('tr[data-project="app"]');
const texts = (css) => [...document.querySelectorAll(css)].map((e) => e.textContent);
return {
  version: row ? row.querySelector('.version').textContent : null,
  state: row ? row.querySelector('.state').textContent : null,
  error: row ? row.querySelector('.error').textContent : null,
  rate: row ? row.querySelector('.rate').textContent : null,
  p99: row ? row.querySelector('.p99').textContent : null,
  events: document.body.dataset.events || null,
  live: texts('#feed li.event-live[data-project="app"]'),
  rejected: texts('#feed li.event-rejected[data-project="app"]'),
  marks: texts('.timeline[data-project="app"] .mark title'),
  loaded: window.loadedOnce === true,
};
"#;

#[tokio::test]
async fn the_dashboard_shows_a_deploy_go_live_and_a_broken_one_rejected_without_a_reload() {
    let host = TestHost::new()
        .project("app", guests::HELLO)
        .arg("--admin-token")
        .arg(TOKEN)
        .spawn();
    let browser = Browser::start().await;
    browser
        .open(&format!("http://127.0.0.1:{}/", host.admin.port()))
        .await;

    // The token is asked for once, then kept for this tab.
    browser.type_into("#token", TOKEN).await;
    browser.click("#login-form button").await;
    let seen = eventually(
        "the dashboard showing app v1 with its event stream open",
        || async {
            let seen = browser.run(READ_APP).await;
            if seen["version"] == "v1" && seen["state"] == "active" && seen["events"] == "open" {
                Ok(seen)
            } else {
                Err(seen.to_string())
            }
        },
    )
    .await;
    assert_eq!(seen["live"], json!([]), "{seen}");
    let stored = browser
        .run("return sessionStorage.getItem('wasmhost-admin-token');")
        .await;
    assert_eq!(stored, TOKEN);
    // Marks this page load: still there later means the page never reloaded.
    browser.run("window.loadedOnce = true; return null;").await;

    let deploy = |bytes: Vec<u8>| {
        let mut put = crate::harness::admin_request("PUT", "/projects/app", bytes);
        put.headers_mut().insert(
            "authorization",
            format!("Bearer {TOKEN}").parse().expect("header"),
        );
        send(host.admin, put)
    };
    let reply = deploy(std::fs::read(guests::ECHO).expect("echo guest")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = eventually("the dashboard showing v2 live", || async {
        let seen = browser.run(READ_APP).await;
        let live_v2 = seen["live"].as_array().is_some_and(|live| {
            live.iter()
                .any(|e| e.as_str().is_some_and(|t| t.contains("app v2")))
        });
        if seen["version"] == "v2" && live_v2 {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    })
    .await;
    assert_eq!(seen["loaded"], true, "the page reloaded: {seen}");

    let reply = deploy(b"\0asm but not really".to_vec()).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let seen = eventually("the dashboard showing v3 rejected", || async {
        let seen = browser.run(READ_APP).await;
        let rejected = seen["rejected"].as_array().is_some_and(|r| !r.is_empty());
        let marked = seen["marks"].as_array().is_some_and(|m| {
            m.iter()
                .any(|t| t.as_str().is_some_and(|t| t.starts_with("rejected")))
        });
        if rejected && marked && !seen["error"].as_str().unwrap_or_default().is_empty() {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    })
    .await;
    // The old version stays, and the page says so.
    assert_eq!(seen["version"], "v2", "{seen}");
    assert_eq!(seen["state"], "active", "{seen}");
    assert_eq!(seen["loaded"], true, "the page reloaded: {seen}");
    let rejected = seen["rejected"][0].as_str().unwrap_or_default();
    assert!(rejected.contains("app v3 at prepare"), "{rejected}");
    assert_eq!(
        host.get("/app/x").await.header("wasmhost-version"),
        Some("2")
    );

    // A rollback goes live as a new version, marked apart from a deploy.
    let mut rollback = crate::harness::admin_request("POST", "/projects/app/rollback", Vec::new());
    rollback.headers_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    let reply = send(host.admin, rollback).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = eventually("the dashboard showing the rollback", || async {
        let seen = browser.run(READ_APP).await;
        let marked = seen["marks"]
            .as_array()
            .is_some_and(|m| m.iter().any(|t| t.as_str() == Some("rollback v4")));
        if seen["version"] == "v4" && marked {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    })
    .await;
    assert_eq!(seen["loaded"], true, "the page reloaded: {seen}");

    // Traffic shows as requests/s and p99, over the last second.
    let traffic = {
        let addr = host.addr;
        tokio::spawn(async move {
            for _ in 0..20_000 {
                let reply = send(
                    addr,
                    request("GET", "localhost", "/app/x", crate::harness::empty()),
                )
                .await;
                assert_eq!(reply.status, StatusCode::OK);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let seen = eventually("the dashboard showing requests/s and a p99", || async {
        let seen = browser.run(READ_APP).await;
        let rate: f64 = seen["rate"].as_str().unwrap_or("–").parse().unwrap_or(0.0);
        let p99 = seen["p99"].as_str().unwrap_or("–");
        if rate > 0.0 && (p99.ends_with("µs") || p99.ends_with("ms")) {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    })
    .await;
    traffic.abort();
    assert_eq!(seen["version"], "v4", "{seen}");

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    // `WASMHOST_SCREENSHOT=$PWD/docs/dashboard.png` keeps it (the README's
    // picture; a relative path is taken from `tests/`).
    if let Some(path) = std::env::var_os("WASMHOST_SCREENSHOT") {
        std::fs::write(&path, &png).expect("write the screenshot");
    }
}
