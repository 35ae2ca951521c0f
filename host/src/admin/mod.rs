//! The admin API, on its own listener so it can be firewalled apart from
//! project traffic and stays reachable when projects are busy.
//!
//! Endpoints:
//! - `GET /`: the dashboard, one HTML page with its script and styles
//!   inside (`dashboard.html`): every project with its version, state,
//!   in-flight count, requests/s, p99 and last error, the event feed and a
//!   timeline of versions per project, updated without a reload. It reads
//!   the API below, with the token it asks for when one is set.
//! - `GET /healthz`: `200 ok` while the host runs.
//! - `GET /livez`: `200 live` while the host runs. Like `/readyz`, it needs no
//!   token and passes no access check, so probes can reach it.
//! - `GET /readyz`: `200 ready` once every project found at start-up is live
//!   or refused; 503 while they load and from the moment shutdown begins
//!   (when the project listener also stops accepting).
//! - `GET /projects`: JSON array with one object per known project, failed ones included.
//! - `GET /projects/NAME`: that project's object, or 404.
//! - `PUT /projects/NAME`: deploy the body (the component bytes, `Content-Type:
//!   application/wasm`), or a `multipart/form-data` body with a `component`
//!   part and an optional `config` part (a wasmhost.toml). Answers once the
//!   version is live (200), unchanged (200), rejected (422, the old version
//!   still serving), refused because another project serves its route or a
//!   host (409, step `route`; nothing changes), or not written (500, the old
//!   version still serving). 200 means the component (and config) are
//!   durably in the project's folder: written, renamed into place and synced
//!   before the swap.
//! - `POST /projects/NAME/reload`: re-read config and component from disk
//!   (the same answers).
//! - `POST /projects/NAME/rollback`: back to the previous good build (409 when there is none).
//! - `DELETE /projects/NAME`: unroute, drain, and delete from disk.
//! - `GET /metrics`: Prometheus text (format 0.0.4): per project
//!   `wasmhost_requests_total{project,code}`,
//!   `wasmhost_request_duration_seconds{project}` (histogram, until the
//!   response head), `wasmhost_requests_in_flight`, `wasmhost_swaps_total`,
//!   `wasmhost_rejected_total{project,step}`, `wasmhost_rollbacks_total`,
//!   `wasmhost_forced_drains_total`, `wasmhost_overloaded_total`,
//!   `wasmhost_project_version`, `wasmhost_project_up`; host-wide
//!   `wasmhost_compile_duration_seconds`, `wasmhost_compile_cache_hits_total`,
//!   `wasmhost_compile_cache_misses_total`, `wasmhost_swap_latency_seconds`,
//!   `wasmhost_instances_in_use`, `wasmhost_instances_capacity` and the
//!   standard `process_*` metrics. Needs the token when one is set.
//! - `GET /events`: Server-Sent Events, one per lifecycle step (`change_detected`,
//!   `compiled`, `live`, `rejected`, `draining`, `released`, `removed`), each a
//!   JSON object with `event`, `project`, `at` and, as they apply, `version`,
//!   `digest`, `previous`, `compile_ms`, `swap_ms`, `cache_hit`, `in_flight`,
//!   `drain_ms`, `step`, `reason` and, on `live`, `origin` (`load`,
//!   `watch`, `reload`, `deploy` or `rollback`).
//!
//! A project object has: `name`, `route`, `hosts`, `strip_prefix`,
//! `allowed_outbound_hosts` (each entry with its port), `entry`,
//! `component` (path), `digest` (sha256 hex of the component bytes), `version`,
//! `state` (`active`, `preparing`, `draining` or `failed`), `size` (bytes),
//! `compile_ms`, `in_flight`, `last_error`, `last_failure` (`step`, `reason`,
//! `digest`, `at` in Unix seconds), `versions` (current and draining, each with
//! `version`, `digest`, `state`, `in_flight`, `idle_instances`,
//! `typical_compute_ms`), `history` (version numbers of the
//! builds kept for rollback) and `stats` (`swaps`, `changes`, `rejected`, `rollbacks`,
//! `forced_drains`, `released`, `last_compile_ms`, `last_swap_ms`,
//! `max_drain_ms`, `cache_hits`, `cache_misses`, `active`, `overloaded`,
//! `pool_exhausted`, `outbound_denied`, `guest_log_dropped`, `reused`, `reset`,
//! `reset_unscanned`, `slowed`, `requests`, `latency_buckets`: cumulative counts by
//! upper bound in seconds, `null` for +Inf). Change endpoints answer the
//! same object with an `outcome` field (`live` or `unchanged`) and, when live,
//! `compile_ms_this`, `swap_ms` and `cache_hit`; a rejection answers
//! `{"outcome": "rejected", "step", "reason", "message"}`.

mod access;
mod dashboard;
pub(crate) mod events;
mod metrics;
pub mod multipart;
mod routes;
mod upload;
mod views;

pub use access::Access;
pub use routes::handle;
