//! The project and admin handlers called in-process, with in-memory request
//! bodies and no socket: the real engine, compiler, pipeline and guests, but
//! no process to spawn. For what routing and deploys do on their own; what
//! needs a process (signals, the watcher, connections) stays in the other
//! modules.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use tempfile::TempDir;
use wasmhost::admin::{self, Access};
use wasmhost::engine::{new_engine, new_linker};
use wasmhost::front::handler;
use wasmhost::model::events::Events;
use wasmhost::model::registry::Registry;
use wasmhost::swap::cache::CompileCache;
use wasmhost::swap::compiler::Compiler;
use wasmhost::swap::pipeline::Pipeline;
use wasmhost::swap::settings::{DefaultLimits, Settings};
use wasmhost_tests::guests;

/// A host assembled in-process on a projects folder, loaded as
/// `wasmhost serve` loads it at start-up.
struct InProcess {
    pipeline: Pipeline,
    dir: TempDir,
}

impl InProcess {
    /// Loads the projects `(name, guest, wasmhost.toml)` from a fresh folder.
    async fn load(projects: &[(&str, &str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, guest, manifest) in projects {
            let folder = dir.path().join(name);
            std::fs::create_dir_all(&folder).expect("mkdir");
            std::fs::copy(guest, folder.join(format!("{name}.wasm"))).expect("copy guest");
            std::fs::write(folder.join("wasmhost.toml"), manifest).expect("manifest");
        }
        let engine = new_engine(8).expect("engine");
        let linker = new_linker(&engine).expect("linker");
        let compiler = Compiler::new(engine, linker, CompileCache::disabled(), 1);
        let pipeline = Pipeline::new(
            compiler,
            Arc::new(Registry::default()),
            settings(dir.path()),
            Events::default(),
        );
        let skipped = pipeline.load_all().await.expect("load");
        assert!(skipped.is_empty(), "{skipped:?}");
        Self { pipeline, dir }
    }

    /// Sends `request` to the project handler.
    async fn request(&self, method: &str, host: &str, path: &str) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("request");
        Answer::read(
            handler::handle(
                self.pipeline.registry(),
                handler::Recording::default(),
                request,
            )
            .await,
        )
        .await
    }

    /// Sends `body` to the admin handler.
    async fn admin(&self, method: &str, path: &str, body: Vec<u8>) -> Answer {
        let access = Arc::new(Access {
            token: None,
            max_deploy_size: 64 << 20,
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/wasm")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let readiness = Arc::new(wasmhost::readiness::Readiness::default());
        Answer::read(admin::handle(self.pipeline.clone(), access, readiness, request).await).await
    }
}

fn settings(dir: &Path) -> Settings {
    Settings {
        projects_dir: dir.to_path_buf(),
        request_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(30),
        health_timeout: Duration::from_secs(30),
        keep_versions: 3,
        limits: DefaultLimits {
            memory: 128 << 20,
            max_body: 1 << 20,
            max_concurrency: 100,
            log_rate: 1 << 20,
        },
        cache_max_size: 1 << 30,
        forbidden_outbound: Arc::from([]),
    }
}

/// A response read whole.
struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: String,
}

impl Answer {
    async fn read<B>(response: Response<B>) -> Self
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[tokio::test]
async fn requests_route_by_longest_prefix_and_by_host_without_a_socket() {
    let host = InProcess::load(&[
        ("outer", guests::HELLO, "route = \"/app\"\n"),
        (
            "inner",
            guests::ECHO,
            "route = \"/app/api\"\nstrip_prefix = true\n",
        ),
    ])
    .await;
    let cases = [
        ("/app", Some("outer")),
        ("/app/x?y", Some("outer")),
        ("/app/apix", Some("outer")),
        ("/app/api/v1?z=2", Some("inner")),
        ("/apple", None),
    ];
    for (path, project) in cases {
        let answer = host.request("GET", "localhost", path).await;
        assert_eq!(answer.header("wasmhost-project"), project, "{path}");
        if project.is_none() {
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        }
    }
    let stripped = host.request("GET", "localhost", "/app/api/v1?z=2").await;
    assert_eq!(stripped.header("echo-path"), Some("/v1?z=2"));
    let by_host = host.request("GET", "outer.localhost", "/anything").await;
    assert_eq!(by_host.body, "Hello, world!\n");
    assert_eq!(by_host.header("wasmhost-version"), Some("1"));
}

#[tokio::test]
async fn a_deploy_through_the_admin_handler_serves_the_next_request() {
    let host = InProcess::load(&[("app", guests::HELLO, "")]).await;
    assert_eq!(
        host.request("GET", "localhost", "/app").await.body,
        "Hello, world!\n"
    );

    let echo = std::fs::read(guests::ECHO).expect("guest");
    let deployed = host.admin("PUT", "/projects/app", echo).await;
    assert_eq!(deployed.status, StatusCode::OK, "{}", deployed.body);
    let answer: serde_json::Value = serde_json::from_str(&deployed.body).expect("JSON");
    assert_eq!(answer["outcome"], "live");
    assert_eq!(answer["live_version"], 2);

    let served = host.request("GET", "localhost", "/app/x").await;
    assert_eq!(served.header("wasmhost-version"), Some("2"));
    assert_eq!(served.header("echo-path"), Some("/app/x"));
    // Live means written into the project's folder, so a restart serves it too.
    let on_disk = std::fs::read(host.dir.path().join("app/app.wasm")).expect("written");
    assert_eq!(on_disk, std::fs::read(guests::ECHO).expect("guest"));

    let broken = host
        .admin("PUT", "/projects/app", b"\0asm broken".to_vec())
        .await;
    assert_eq!(
        broken.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        broken.body
    );
    let still = host.request("GET", "localhost", "/app/x").await;
    assert_eq!(still.header("wasmhost-version"), Some("2"));
}
