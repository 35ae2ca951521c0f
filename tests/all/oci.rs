//! Projects pulled from a real OCI registry (CNCF distribution, the
//! distribution's `docker-registry` package) on a loopback port: published
//! with `wasmhost push`, followed by tag, refused when broken, kept through a
//! registry outage and a restart without it.

use std::net::SocketAddr;
use std::process::Command;

use hyper::StatusCode;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use wasmhost_tests::guests;
use wasmhost_tests::process::Process;

use crate::harness::{RunningHost, TestHost, full, request, send, wasmhost};

/// A registry on a free loopback port, storing into a temporary folder;
/// killed on drop.
pub(crate) struct Registry {
    process: Option<Process>,
    pub(crate) addr: SocketAddr,
    _dir: TempDir,
}

impl Registry {
    pub(crate) async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A registry that wants Basic credentials `user`:`password` for
    /// everything (an htpasswd file made by Apache's `htpasswd`).
    pub(crate) async fn start_with_login(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password))).await
    }

    async fn start_with(login: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = match login {
            None => String::new(),
            Some((user, password)) => {
                let made = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd is missing: scripts/test installs it (apt-get install apache2-utils)");
                assert!(made.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, made.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: wasmhost-test\n    path: {}\n",
                    file.display()
                )
            }
        };
        let addr = crate::harness::free_loopback_addr();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth}http:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write the registry config");
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null());
        let process = Process::spawn(command).expect(
            "docker-registry is missing: scripts/test installs it (apt-get install docker-registry)",
        );
        // With a login, an anonymous /v2/ is 401: up all the same.
        let login_wanted = login.is_some();
        crate::harness::wait_until_answering(
            "the registry answering /v2/",
            addr,
            "/v2/",
            |status| {
                status == StatusCode::OK || (login_wanted && status == StatusCode::UNAUTHORIZED)
            },
        )
        .await;
        Self {
            process: Some(process),
            addr,
            _dir: dir,
        }
    }

    /// Stops the registry, as an outage would.
    pub(crate) fn stop(&mut self) {
        self.process.take();
    }

    /// The manifest digest `tag` of `repository` points at, as the registry says.
    pub(crate) async fn digest_of(&self, repository: &str, tag: &str) -> String {
        let mut head = request(
            "HEAD",
            "localhost",
            &format!("/v2/{repository}/manifests/{tag}"),
            crate::harness::empty(),
        );
        head.headers_mut().insert(
            "accept",
            "application/vnd.oci.image.manifest.v1+json"
                .parse()
                .expect("header"),
        );
        send(self.addr, head)
            .await
            .header("docker-content-digest")
            .expect("a digest")
            .to_string()
    }

    /// `oci://ADDR/REPOSITORY:TAG`.
    pub(crate) fn reference(&self, repository: &str, tag: &str) -> String {
        format!("oci://{}/{repository}:{tag}", self.addr)
    }

    /// Publishes an artifact by hand, through the distribution API, as a
    /// careless or hostile publisher could: `layer` as its one layer of type
    /// `layer_type`, whatever the bytes are.
    pub(crate) async fn publish_raw(
        &self,
        repository: &str,
        tag: &str,
        layer: &[u8],
        layer_type: &str,
    ) {
        let config = br#"{"created":"2026-11-24T00:00:00Z","architecture":"wasm","os":"wasip2","layerDigests":[]}"#;
        let config_digest = self.upload_blob(repository, config).await;
        let layer_digest = self.upload_blob(repository, layer).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.wasm.config.v0+json", "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": layer_type, "digest": layer_digest, "size": layer.len() }],
        });
        let mut put = request(
            "PUT",
            "localhost",
            &format!("/v2/{repository}/manifests/{tag}"),
            full(manifest.to_string()),
        );
        put.headers_mut().insert(
            "content-type",
            "application/vnd.oci.image.manifest.v1+json"
                .parse()
                .expect("header"),
        );
        let reply = send(self.addr, put).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }

    async fn upload_blob(&self, repository: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        let start = send(
            self.addr,
            request(
                "POST",
                "localhost",
                &format!("/v2/{repository}/blobs/uploads/"),
                crate::harness::empty(),
            ),
        )
        .await;
        assert_eq!(start.status, StatusCode::ACCEPTED, "{}", start.text());
        let location = start
            .header("location")
            .expect("an upload location")
            .to_string();
        let path = location
            .strip_prefix(&format!("http://{}", self.addr))
            .unwrap_or(&location)
            .to_string();
        let separator = if path.contains('?') { '&' } else { '?' };
        let put = request(
            "PUT",
            "localhost",
            &format!("{path}{separator}digest={digest}"),
            full(bytes.to_vec()),
        );
        let reply = send(self.addr, put).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        digest
    }
}

/// `wasmhost push FILE REFERENCE`, insisting it succeeds.
pub(crate) fn push(file: &str, reference: &str) {
    push_with_env(file, reference, &[]);
}

/// [`push`] with extra environment variables (registry credentials).
fn push_with_env(file: &str, reference: &str, env: &[(&str, &str)]) {
    let output = wasmhost()
        .args(["push", file, reference])
        .envs(env.iter().copied())
        .output()
        .expect("run wasmhost push");
    assert!(
        output.status.success(),
        "wasmhost push {file} {reference}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("pushed"), "{said}");
}

/// A project folder whose component is `reference`.
fn pulled_project(host: TestHost, name: &str, reference: &str) -> TestHost {
    host.manifest(name, &format!("component = \"{reference}\"\n"))
}

async fn version_of(host: &RunningHost, path: &str) -> Option<String> {
    host.get(path)
        .await
        .header("wasmhost-version")
        .map(str::to_string)
}

#[tokio::test]
async fn a_project_follows_its_tag_refuses_broken_artifacts_and_outlives_its_registry() {
    let mut registry = Registry::start().await;
    let tag = registry.reference("team/app", "live");
    push(guests::HELLO, &tag);
    let host = pulled_project(TestHost::new(), "app", &tag)
        .arg("--registry-poll=100ms")
        .spawn();
    let reply = host.get("/app").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", host.log());
    assert_eq!(reply.text(), "Hello, world!\n");
    let first = host.admin_project("app").await;
    assert_eq!(first["oci"]["reference"], tag.as_str());
    let first_digest = first["oci"]["digest"]
        .as_str()
        .expect("a digest")
        .to_string();
    assert!(first_digest.starts_with("sha256:"), "{first}");

    // A new push to the tag goes live by itself.
    push(guests::ECHO, &tag);
    let live = host
        .wait_for_project("app", "v2 pulled", |p| {
            p["version"] == 2 && p["state"] == "active"
        })
        .await;
    assert_ne!(live["oci"]["digest"], first_digest.as_str());
    assert_eq!(host.get("/app/x").await.header("echo-method"), Some("GET"));

    // An artifact whose layer is not a component: refused, v2 keeps serving.
    registry
        .publish_raw(
            "team/app",
            "live",
            b"\0asm\x01\0\0\0 not really",
            "application/wasm",
        )
        .await;
    let refused = host
        .wait_for_project("app", "the broken artifact refused", |p| {
            p["last_failure"]["step"] == "prepare"
        })
        .await;
    assert_eq!(refused["version"], 2, "{refused}");
    // A manifest that is not the Wasm layout: refused at the pull.
    registry
        .publish_raw(
            "team/app",
            "live",
            b"some tarball",
            "application/vnd.oci.image.layer.v1.tar",
        )
        .await;
    let refused = host
        .wait_for_project("app", "the non-Wasm artifact refused", |p| {
            p["last_failure"]["step"] == "pull"
        })
        .await;
    assert!(
        refused["last_failure"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&tag)),
        "{refused}"
    );
    assert_eq!(version_of(&host, "/app/x").await.as_deref(), Some("2"));

    // A restart while the tag names that refused artifact: the project
    // starts on what it served before, not on nothing.
    let host = host.restart(&["--registry-poll=100ms"]);
    let reply = host.get("/app/x").await;
    assert_eq!(reply.header("echo-method"), Some("GET"), "{}", host.log());
    assert!(host.log().contains("as last served"), "{}", host.log());

    // The registry goes away: nothing is unrouted, the failure is said once.
    registry.stop();
    let down = host
        .wait_for_project("app", "the outage recorded", |p| {
            p["last_failure"]["step"] == "registry"
        })
        .await;
    assert_eq!(down["state"], "active", "{down}");
    assert_eq!(host.get("/app/x").await.header("echo-method"), Some("GET"));

    // A restart with the registry still down serves what was served.
    let host = host.restart(&["--registry-poll=100ms"]);
    let reply = host.get("/app/x").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", host.log());
    assert_eq!(reply.header("echo-method"), Some("GET"), "{}", host.log());
    assert!(
        host.log().contains("from the local store"),
        "{}",
        host.log()
    );
}

#[tokio::test]
async fn a_pinned_digest_is_served_and_bad_references_are_refused_by_name() {
    let registry = Registry::start().await;
    let tag = registry.reference("pinned", "v1");
    push(guests::HELLO, &tag);
    let digest = registry.digest_of("pinned", "v1").await;
    let pinned = format!("oci://{}/pinned@{digest}", registry.addr);
    let host = pulled_project(TestHost::new(), "app", &pinned)
        .manifest("bad", "component = \"oci://library/app:v1\"\n")
        .spawn();
    assert_eq!(host.get("/app").await.text(), "Hello, world!\n");
    assert_eq!(
        host.admin_project("app").await["oci"]["digest"],
        digest.as_str()
    );
    let bad = host.admin_project("bad").await;
    assert_eq!(bad["state"], "failed", "{bad}");
    let error = bad["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("wasmhost.toml") && error.contains("registry must be"),
        "{error}"
    );
    // Deploying bytes over a pulled project is refused: the registry says what serves.
    let reply = host
        .deploy("app", &std::fs::read(guests::ECHO).expect("echo"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("pulls its component from"),
        "{}",
        reply.text()
    );
}

/// A registry that lies: its manifest names a layer digest its blob does
/// not hash to. No real registry stores such a thing (CNCF distribution
/// checks digests on upload), so this one is a few lines of hyper serving the
/// distribution API's read side; the only mock in these tests.
async fn lying_registry(layer_served: Vec<u8>, layer_named: &[u8]) -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let config = br#"{"created":"2026-11-24T00:00:00Z","architecture":"wasm","os":"wasip2","layerDigests":[]}"#;
    let digest = |bytes: &[u8]| format!("sha256:{:x}", Sha256::digest(bytes));
    let config_digest = digest(config);
    let layer_digest = digest(layer_named);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.wasm.config.v0+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/wasm", "digest": layer_digest, "size": layer_served.len() }],
    })
    .to_string();
    let manifest_digest = digest(manifest.as_bytes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let answer = move |path: String| -> (StatusCode, Vec<(&'static str, String)>, Vec<u8>) {
        if path == "/v2/" {
            (StatusCode::OK, vec![], b"{}".to_vec())
        } else if path.contains("/manifests/") {
            (
                StatusCode::OK,
                vec![
                    (
                        "content-type",
                        "application/vnd.oci.image.manifest.v1+json".into(),
                    ),
                    ("docker-content-digest", manifest_digest.clone()),
                ],
                manifest.clone().into_bytes(),
            )
        } else if path.ends_with(&config_digest) {
            (StatusCode::OK, vec![], config.to_vec())
        } else if path.ends_with(&layer_digest) {
            (StatusCode::OK, vec![], layer_served.clone())
        } else {
            (StatusCode::NOT_FOUND, vec![], Vec::new())
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (status, headers, body) = answer(request.uri().path().to_string());
                    let head = request.method() == hyper::Method::HEAD;
                    async move {
                        let mut response =
                            hyper::Response::new(Full::new(bytes::Bytes::from(if head {
                                Vec::new()
                            } else {
                                body.clone()
                            })));
                        *response.status_mut() = status;
                        for (name, value) in headers {
                            response
                                .headers_mut()
                                .insert(name, value.parse().expect("header"));
                        }
                        response
                            .headers_mut()
                            .insert("content-length", body.len().into());
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

// Two worker threads: the lying registry answers on one while the other
// waits (blocking) for the host to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_that_does_not_match_its_digest_and_plain_http_to_other_hosts_are_refused() {
    let hello = std::fs::read(guests::HELLO).expect("hello");
    let mut tampered = hello.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let liar = lying_registry(tampered, &hello).await;
    let host = pulled_project(TestHost::new(), "app", &format!("oci://{liar}/app:v1"))
        // A registry that is not this machine: HTTPS unless named insecure.
        .manifest(
            "tls",
            "component = \"oci://registry.invalid:5000/app:v1\"\n",
        )
        .manifest(
            "plain",
            "component = \"oci://insecure.invalid:5000/app:v1\"\n",
        )
        .arg("--insecure-registry=insecure.invalid")
        .spawn();
    let app = host.admin_project("app").await;
    assert_eq!(app["state"], "failed", "{app}");
    assert_eq!(app["last_failure"]["step"], "pull", "{app}");
    let reason = app["last_failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("hash to") || reason.contains("Digest"),
        "{reason}"
    );
    assert_eq!(host.get("/app").await.status, StatusCode::NOT_FOUND);

    let tls = host.admin_project("tls").await;
    assert_eq!(tls["last_failure"]["step"], "registry", "{tls}");
    let reason = tls["last_failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("https://registry.invalid:5000/"),
        "{reason}"
    );
    let plain = host.admin_project("plain").await;
    let reason = plain["last_failure"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("http://insecure.invalid:5000/"), "{reason}");
}

#[tokio::test]
async fn registry_credentials_come_from_the_environment_or_the_docker_config() {
    let registry = Registry::start_with_login("ci", "s3cret").await;
    let tag = registry.reference("private/app", "v1");

    // Anonymous, as by default: the registry's refusal, by name.
    let output = wasmhost()
        .args(["push", guests::HELLO, &tag])
        .output()
        .expect("run wasmhost push");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("401") && said.contains(&tag), "{said}");
    // With credentials in the environment.
    push_with_env(
        guests::HELLO,
        &tag,
        &[
            ("WASMHOST_REGISTRY_USERNAME", "ci"),
            ("WASMHOST_REGISTRY_PASSWORD", "s3cret"),
        ],
    );

    // A host with the credentials in a Docker config pulls and serves it.
    let docker = tempfile::tempdir().expect("temp dir");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ci:s3cret");
    std::fs::write(
        docker.path().join("config.json"),
        json!({ "auths": { registry.addr.to_string(): { "auth": auth } } }).to_string(),
    )
    .expect("write the Docker config");
    let host = pulled_project(TestHost::new(), "app", &tag)
        .env("DOCKER_CONFIG", &docker.path().display().to_string())
        .spawn();
    assert_eq!(
        host.get("/app").await.text(),
        "Hello, world!\n",
        "{}",
        host.log()
    );

    // One with none is refused by the registry, and says so.
    let anonymous = pulled_project(TestHost::new(), "app", &tag).spawn();
    let app = anonymous.admin_project("app").await;
    assert_eq!(app["last_failure"]["step"], "registry", "{app}");
    let reason = app["last_failure"]["reason"].as_str().unwrap_or_default();
    assert!(reason.to_lowercase().contains("not authorized"), "{reason}");
    assert!(!reason.contains("s3cret"), "{reason}");

    // Credentials in the environment go only to the registries
    // WASMHOST_REGISTRY names: given for another, this one never gets them.
    let with_env = |registries: &str| {
        pulled_project(TestHost::new(), "app", &tag)
            .env("WASMHOST_REGISTRY_USERNAME", "ci")
            .env("WASMHOST_REGISTRY_PASSWORD", "s3cret")
            .env("WASMHOST_REGISTRY", registries)
            .spawn()
    };
    let elsewhere = with_env("registry.example.com");
    let app = elsewhere.admin_project("app").await;
    assert_eq!(app["last_failure"]["step"], "registry", "{app}");
    let reason = app["last_failure"]["reason"].as_str().unwrap_or_default();
    assert!(reason.to_lowercase().contains("not authorized"), "{reason}");
    let named = with_env(&format!("registry.example.com, {}", registry.addr));
    assert_eq!(
        named.get("/app").await.text(),
        "Hello, world!\n",
        "{}",
        named.log()
    );
}
