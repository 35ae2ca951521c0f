//! The admin API's dispatch: method and path to an action, and the one place
//! change errors become statuses.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Body;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::json;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::admin::access::{Access, changes_something};
use crate::admin::upload::read_deploy;
use crate::admin::views::ProjectView;
use crate::front::responses::{full_response, json_response, text_response};
use crate::model::manifest::ProjectName;
use crate::readiness::{Phase, Readiness};
use crate::swap::pipeline::{ChangeError, Outcome, Pipeline};

/// Answers one admin request. Generic over the body, so tests can call it
/// with an in-memory one.
pub async fn handle<B>(
    pipeline: Pipeline,
    access: Arc<Access>,
    readiness: Arc<Readiness>,
    request: Request<B>,
) -> Response<HyperOutgoingBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The probes come before access: a kubelet or a load balancer sends no
    // token and names the host by its address, and all they learn is one bit.
    let mutating = changes_something(request.method());
    if !mutating {
        match request.uri().path() {
            // The page holds no data (it asks for the token and then reads
            // the API like any client), so it is served without one.
            "/" => return crate::admin::dashboard::page(),
            "/livez" => return text_response(StatusCode::OK, "live"),
            "/readyz" => return readyz(readiness.phase()),
            _ => {}
        }
    }
    if let Some(refused) = access.refuse(&request) {
        return refused;
    }
    if mutating && readiness.phase() == Phase::Stopping {
        return text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the host is shutting down; no changes are taken",
        );
    }
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    let name = match segments.as_slice() {
        ["projects", name, ..] => match ProjectName::parse(name) {
            Ok(name) => Some(name),
            Err(reason) => return text_response(StatusCode::BAD_REQUEST, &reason),
        },
        _ => None,
    };
    match (&method, segments.as_slice(), name) {
        (&Method::GET, ["healthz"], _) => text_response(StatusCode::OK, "ok"),
        (&Method::GET, ["events"], _) => crate::admin::events::stream(pipeline.events()),
        (&Method::GET, ["metrics"], _) => match crate::admin::metrics::scrape(&pipeline) {
            Ok(text) => full_response(StatusCode::OK, crate::admin::metrics::CONTENT_TYPE, text),
            Err(err) => text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("failed to encode the metrics: {err}"),
            ),
        },
        (&Method::GET, ["projects"], _) => {
            let views: Vec<ProjectView> = pipeline
                .registry()
                .all()
                .iter()
                .map(|p| ProjectView::new(p))
                .collect();
            json_response(StatusCode::OK, &views)
        }
        (&Method::GET, ["projects", _], Some(name)) => {
            project_response(&pipeline, &name, StatusCode::OK)
        }
        (&Method::PUT, ["projects", _], Some(name)) => {
            let (bytes, config) = match read_deploy(request, access.max_deploy_size).await {
                Ok(upload) => upload,
                Err(response) => return *response,
            };
            let (this, project) = (pipeline.clone(), name.clone());
            let result =
                detached(async move { this.deploy(&project, bytes.into(), config).await }).await;
            change_response(&pipeline, &name, result)
        }
        (&Method::POST, ["projects", _, "reload"], Some(name)) => {
            let (this, project) = (pipeline.clone(), name.clone());
            let result = detached(async move { this.reload(&project).await }).await;
            change_response(&pipeline, &name, result)
        }
        (&Method::POST, ["projects", _, "rollback"], Some(name)) => {
            let (this, project) = (pipeline.clone(), name.clone());
            let result = detached(async move { this.rollback(&project).await }).await;
            change_response(&pipeline, &name, result)
        }
        (&Method::DELETE, ["projects", _], Some(name)) => {
            let (this, project) = (pipeline.clone(), name.clone());
            match detached(async move { this.remove(&project).await }).await {
                Ok(()) => json_response(
                    StatusCode::OK,
                    &json!({ "outcome": "removed", "name": name.as_str() }),
                ),
                Err(err) => error_response(err),
            }
        }
        (_, ["healthz"] | ["livez"] | ["readyz"] | ["projects"] | ["events"] | ["metrics"], _) => {
            method_not_allowed("GET")
        }
        (_, ["projects", _], _) => method_not_allowed("GET, PUT, DELETE"),
        (_, ["projects", _, "reload" | "rollback"], _) => method_not_allowed("POST"),
        _ => text_response(
            StatusCode::NOT_FOUND,
            "no such admin endpoint; see GET /projects",
        ),
    }
}

/// Runs an accepted change in a task of its own and waits for it. If the
/// client goes away, hyper drops this handler, but not the task: the change
/// runs to completion, its outcome shows in `/projects/NAME` and `/events`,
/// and a compile it started is never abandoned mid-way (which would free its
/// `--max-compiles` permit while the compile thread still runs).
async fn detached<T: Send + 'static>(
    change: impl Future<Output = Result<T, ChangeError>> + Send + 'static,
) -> Result<T, ChangeError> {
    tokio::spawn(change).await.unwrap_or_else(|err| {
        Err(ChangeError::Failed(anyhow::anyhow!(
            "the change task failed: {err}"
        )))
    })
}

fn project_response(
    pipeline: &Pipeline,
    name: &ProjectName,
    status: StatusCode,
) -> Response<HyperOutgoingBody> {
    match pipeline.registry().get(name.as_str()) {
        Some(project) => json_response(status, &ProjectView::new(&project)),
        None => text_response(StatusCode::NOT_FOUND, &format!("no project `{name}`")),
    }
}

fn change_response(
    pipeline: &Pipeline,
    name: &ProjectName,
    result: Result<Outcome, ChangeError>,
) -> Response<HyperOutgoingBody> {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => return error_response(err),
    };
    let Some(project) = pipeline.registry().get(name.as_str()) else {
        return text_response(StatusCode::NOT_FOUND, &format!("no project `{name}`"));
    };
    let mut body = serde_json::to_value(ProjectView::new(&project)).unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        match outcome {
            Outcome::Unchanged { .. } => {
                object.insert("outcome".into(), json!("unchanged"));
            }
            Outcome::Live {
                version,
                previous,
                compile,
                swap,
                cache_hit,
            } => {
                object.insert("outcome".into(), json!("live"));
                object.insert("live_version".into(), json!(version));
                object.insert("previous_version".into(), json!(previous));
                object.insert(
                    "compile_ms_this".into(),
                    json!(compile.as_secs_f64() * 1000.0),
                );
                object.insert("swap_ms".into(), json!(swap.as_secs_f64() * 1000.0));
                object.insert("cache_hit".into(), json!(cache_hit));
            }
        }
    }
    json_response(StatusCode::OK, &body)
}

/// The one place change errors become statuses.
fn error_response(err: ChangeError) -> Response<HyperOutgoingBody> {
    let message = err.to_string();
    match err {
        ChangeError::Rejected { step, reason, .. } => json_response(
            // Another project holds the route: a conflict between two
            // resources, not a fault of the upload.
            if step == "route" {
                StatusCode::CONFLICT
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            },
            &json!({ "outcome": "rejected", "step": step, "reason": reason, "message": message }),
        ),
        ChangeError::NotFound(_) => text_response(StatusCode::NOT_FOUND, &message),
        ChangeError::NoRollback(_) => text_response(StatusCode::CONFLICT, &message),
        ChangeError::Failed(_) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

/// `/readyz`: 200 once every project found at start-up is live or refused,
/// 503 while they load and once shutdown has begun.
fn readyz(phase: Phase) -> Response<HyperOutgoingBody> {
    match phase {
        Phase::Ready => text_response(StatusCode::OK, "ready"),
        Phase::Loading => text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "loading: projects found at start-up are still being prepared",
        ),
        Phase::Stopping => text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping: shutdown has begun",
        ),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<HyperOutgoingBody> {
    let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

/// The admin handler called directly, with in-memory bodies and the real
/// pipeline and compiler, no socket. What needs a running process (deploys
/// that go live, events, shutdown) is in `tests/all`.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use http_body_util::{BodyExt as _, Full};

    use super::*;
    use crate::model::events::Events;
    use crate::model::registry::Registry;
    use crate::swap::cache::CompileCache;
    use crate::swap::compiler::Compiler;
    use crate::swap::settings::{DefaultLimits, Settings};

    /// A pipeline over `dir` with no compile cache; nothing here instantiates,
    /// so the engine needs no instance pool.
    fn pipeline(dir: &Path) -> Pipeline {
        let engine = wasmtime::Engine::default();
        let linker = crate::engine::new_linker(&engine).expect("linker");
        let compiler = Compiler::new(engine, linker, CompileCache::disabled(), 1);
        let settings = Settings {
            projects_dir: dir.to_path_buf(),
            request_timeout: std::time::Duration::from_secs(5),
            drain_timeout: std::time::Duration::from_secs(5),
            health_timeout: std::time::Duration::from_secs(5),
            keep_versions: 3,
            limits: DefaultLimits {
                memory: 1 << 20,
                max_body: 1 << 20,
                max_concurrency: 10,
                log_rate: 1 << 20,
            },
            cache_max_size: 1 << 30,
            forbidden_outbound: Arc::from([]),
        };
        Pipeline::new(
            compiler,
            Arc::new(Registry::default()),
            settings,
            Events::default(),
        )
    }

    async fn call(
        pipeline: &Pipeline,
        method: &str,
        path: &str,
        content_type: &str,
        body: &'static [u8],
    ) -> (StatusCode, hyper::HeaderMap, String) {
        let access = Arc::new(Access {
            token: None,
            max_deploy_size: 64,
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from_static(body)))
            .expect("request");
        let readiness = Arc::new(Readiness::default());
        let response = handle(pipeline.clone(), access, readiness, request).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn reads_answer_and_bad_requests_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pipeline = pipeline(dir.path());
        let wasm = "application/wasm";
        let (status, _, body) = call(&pipeline, "GET", "/projects", wasm, b"").await;
        assert_eq!((status, body.trim()), (StatusCode::OK, "[]"));
        let (status, _, body) = call(&pipeline, "GET", "/healthz", wasm, b"").await;
        assert_eq!((status, body.trim()), (StatusCode::OK, "ok"));
        let (status, _, body) = call(&pipeline, "PUT", "/projects/Bad", wasm, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("`Bad`"), "{body}");
        let (status, _, _) = call(&pipeline, "PUT", "/projects/app", "text/plain", b"x").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (status, _, body) = call(&pipeline, "PUT", "/projects/app", wasm, &[0; 65]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        let (status, headers, _) = call(&pipeline, "POST", "/healthz", wasm, b"").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET");
        let (status, _, _) = call(&pipeline, "DELETE", "/projects/ghost", wasm, b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = call(&pipeline, "GET", "/nothing", wasm, b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_deploy_that_is_not_a_component_is_rejected_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pipeline = pipeline(dir.path());
        let (status, _, body) = call(
            &pipeline,
            "PUT",
            "/projects/app",
            "application/wasm",
            b"not wasm",
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(answer["outcome"], "rejected");
        assert_eq!(answer["step"], "prepare");
        let (status, _, _) = call(&pipeline, "GET", "/projects/app", "", b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
