//! Components from OCI registries, in the CNCF TAG-Runtime Wasm layout (an
//! image manifest, a config of type `application/vnd.wasm.config.v0+json`,
//! exactly one `application/wasm` layer), through the ecosystem's crates
//! (`oci-client`, and `oci-wasm` for the layout).
//!
//! - [`Puller`] resolves a reference to a manifest digest, pulls and checks
//!   the layer, and keeps it by digest (`store.rs`), so a restart with the
//!   registry down serves what it served before.
//! - `watch/registry.rs` resolves every tagged project's tag every
//!   `--registry-poll`; a new digest goes through the pipeline like any change.
//! - `push.rs` publishes a component in the same layout (`wasmhost push`).
//! - `auth.rs`: anonymous by default, Basic credentials from
//!   `~/.docker/config.json` or `WASMHOST_REGISTRY_USERNAME`/`_PASSWORD`
//!   (for the registries `WASMHOST_REGISTRY` names),
//!   and plain HTTP only for loopback registries and `--insecure-registry`.
//!
//! Registries are untrusted: every failure is a [`PullError`] naming the
//! reference and the reason; every request has a timeout; the layer is
//! refused before download when its manifest says it is too big and cut off
//! when it grows past the limit anyway; its bytes must hash to the digest
//! its manifest names; and a layer pointing at foreign URLs is refused, so a
//! registry cannot make the host fetch from anywhere else. What the client
//! reads whole (manifests, configs, tokens, error messages) stops at 4 MiB:
//! the patched `oci-client` (`vendor/oci-client/WASMHOST.md`).

pub(crate) mod auth;
pub(crate) mod push;
pub(crate) mod store;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use oci_wasm::WasmClient;
use sha2::{Digest as _, Sha256};

use crate::model::oci_ref::OciReference;
use auth::Credentials;
use store::Store;

/// Why a reference could not be turned into component bytes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    /// The registry could not be reached, or answered with an error.
    #[error("{reference}: registry unreachable or refused: {reason}")]
    Registry {
        /// What was asked for.
        reference: String,
        /// The client's error chain.
        reason: String,
    },
    /// The manifest is not the Wasm artifact layout.
    #[error("{reference}: not a Wasm component artifact: {reason}")]
    Layout {
        /// What was asked for.
        reference: String,
        /// What was wrong.
        reason: String,
    },
    /// The layer is bigger than the host accepts.
    #[error("{reference}: the component layer is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// What was asked for.
        reference: String,
        /// The size the manifest (or the download) showed.
        size: u64,
        /// `--max-deploy-size`.
        limit: u64,
    },
    /// The bytes do not hash to the digest the manifest names.
    #[error("{reference}: the layer's bytes hash to {actual}, not {expected}")]
    DigestMismatch {
        /// What was asked for.
        reference: String,
        /// What the manifest said.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

impl PullError {
    /// Whether the registry, not the artifact, is at fault: worth trying again
    /// at the next poll, and a reason to fall back to the stored copy.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, Self::Registry { .. })
    }
}

/// A component pulled (or found in the store), with the digests it came by.
#[derive(Debug, Clone)]
pub(crate) struct Pulled {
    /// The component's bytes.
    pub(crate) bytes: Vec<u8>,
    /// The image manifest's digest: what a tag resolves to.
    pub(crate) manifest_digest: String,
}

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a registry may leave a response waiting for its next bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long resolving a tag may take in all. [`READ_TIMEOUT`] starts again
/// with every byte, so a registry sending a byte every 29 s would otherwise
/// hold a resolve for as long as it liked: at start-up `/readyz` would wait
/// for it, and so would the registry poll of every other project.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(60);

/// How long a whole pull (the tag, the manifest, the config and the layer)
/// may take: a 64 MiB layer at about 220 KB/s. A pull holds its project's
/// lifecycle lock, so delete, rollback and reload of it wait for it.
const PULL_DEADLINE: Duration = Duration::from_secs(5 * 60);

/// Pulls components by reference, keeping each by digest.
pub(crate) struct Puller {
    https: WasmClient,
    http: WasmClient,
    /// Hosts (without port) that may be reached over plain HTTP besides loopback.
    insecure: Vec<String>,
    credentials: Credentials,
    store: Store,
    /// Largest layer accepted, in bytes.
    max_size: u64,
    /// [`RESOLVE_DEADLINE`] and [`PULL_DEADLINE`] (shorter in tests).
    resolve_deadline: Duration,
    pull_deadline: Duration,
}

impl Puller {
    /// A puller storing into `store`, accepting layers up to `max_size` bytes.
    pub(crate) fn new(store: Store, insecure: Vec<String>, max_size: u64) -> Self {
        let client = |protocol| {
            WasmClient::new(Client::new(ClientConfig {
                protocol,
                connect_timeout: Some(CONNECT_TIMEOUT),
                read_timeout: Some(READ_TIMEOUT),
                ..ClientConfig::default()
            }))
        };
        Self {
            https: client(ClientProtocol::Https),
            http: client(ClientProtocol::Http),
            insecure,
            credentials: {
                let credentials = Credentials::from_environment();
                credentials.warn_if_unscoped();
                credentials
            },
            store,
            max_size,
            resolve_deadline: RESOLVE_DEADLINE,
            pull_deadline: PULL_DEADLINE,
        }
    }

    /// Whether `reference`'s registry may be reached over plain HTTP.
    pub(crate) fn allows_http(&self, reference: &OciReference) -> bool {
        auth::allows_http(reference, &self.insecure)
    }

    fn client(&self, reference: &OciReference) -> &WasmClient {
        if self.allows_http(reference) {
            &self.http
        } else {
            &self.https
        }
    }

    /// The manifest digest `reference` names now: its own digest when
    /// pinned, else what the registry says its tag points at. Fails past
    /// [`RESOLVE_DEADLINE`] however the registry trickles its answer.
    pub(crate) async fn resolve(&self, reference: &OciReference) -> Result<String, PullError> {
        within(
            self.resolve_deadline,
            reference,
            self.resolve_unbounded(reference),
        )
        .await
    }

    async fn resolve_unbounded(&self, reference: &OciReference) -> Result<String, PullError> {
        if let Some(digest) = &reference.digest {
            return Ok(digest.clone());
        }
        let auth = self.credentials.for_registry(&reference.registry);
        self.client(reference)
            .fetch_manifest_digest(&to_client(reference, None), &auth)
            .await
            .map_err(|err| PullError::Registry {
                reference: reference.to_string(),
                reason: err.to_string(),
            })
    }

    /// The component `reference` names now, pulled or from the store. Fails
    /// past [`PULL_DEADLINE`] however the registry trickles its answers.
    pub(crate) async fn fetch(&self, reference: &OciReference) -> Result<Pulled, PullError> {
        within(
            self.pull_deadline,
            reference,
            self.fetch_unbounded(reference),
        )
        .await
    }

    async fn fetch_unbounded(&self, reference: &OciReference) -> Result<Pulled, PullError> {
        let manifest_digest = self.resolve(reference).await?;
        if let Some(bytes) = self.store.component(&manifest_digest) {
            return Ok(Pulled {
                bytes,
                manifest_digest,
            });
        }
        let name = reference.to_string();
        let pinned = to_client(reference, Some(&manifest_digest));
        let auth = self.credentials.for_registry(&reference.registry);
        let client = self.client(reference);
        let (manifest, _config, _) = client
            .pull_manifest_and_config(&pinned, &auth)
            .await
            .map_err(|err| classify(&name, &err))?;
        let layer = &manifest.layers[0];
        if layer.urls.as_ref().is_some_and(|urls| !urls.is_empty()) {
            return Err(PullError::Layout {
                reference: name,
                reason: "its layer points at foreign URLs, which are never fetched".to_string(),
            });
        }
        if layer.media_type != oci_wasm::WASM_LAYER_MEDIA_TYPE {
            return Err(PullError::Layout {
                reference: name,
                reason: format!(
                    "its layer is {}, not {}",
                    layer.media_type,
                    oci_wasm::WASM_LAYER_MEDIA_TYPE
                ),
            });
        }
        let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if size > self.max_size {
            return Err(PullError::TooLarge {
                reference: name,
                size,
                limit: self.max_size,
            });
        }
        let mut out = Capped {
            bytes: Vec::new(),
            limit: self.max_size,
            overflowed: false,
        };
        let pulled = client.pull_blob(&pinned, layer, &mut out).await;
        if let Err(err) = pulled {
            if out.overflowed {
                return Err(PullError::TooLarge {
                    reference: name,
                    size: size.max(self.max_size.saturating_add(1)),
                    limit: self.max_size,
                });
            }
            if let oci_client::errors::OciDistributionError::DigestError(err) = &err {
                return Err(PullError::DigestMismatch {
                    reference: name,
                    expected: layer.digest.clone(),
                    actual: err.to_string(),
                });
            }
            return Err(classify(&name, &anyhow::Error::from(err)));
        }
        let actual = format!("sha256:{:x}", Sha256::digest(&out.bytes));
        if actual != layer.digest {
            return Err(PullError::DigestMismatch {
                reference: name,
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok(Pulled {
            bytes: out.bytes,
            manifest_digest,
        })
    }

    /// Notes that `reference`'s component of manifest `manifest_digest` went
    /// live: what a restart with the registry down serves. (A pulled
    /// component that was refused is never noted.)
    /// The component is kept (and only then: a refused artifact never
    /// takes disk), and components no reference serves any more are deleted.
    pub(crate) fn serving(&self, reference: &OciReference, manifest_digest: &str, bytes: &[u8]) {
        if self.store.component(manifest_digest).is_none() {
            self.store.put(manifest_digest, bytes);
        }
        self.store.remember(reference, manifest_digest);
        self.store.evict_unserved();
    }

    /// The component `reference` last served, if kept: at start-up, what to
    /// fall back on when the tag's current digest is refused.
    pub(crate) fn last_served(&self, reference: &OciReference) -> Option<Pulled> {
        self.store
            .last(reference)
            .map(|(manifest_digest, bytes)| Pulled {
                bytes,
                manifest_digest,
            })
    }

    /// Like [`Puller::fetch`], but when the registry cannot be reached, the
    /// component this reference last served, if the store has it: how a
    /// restart with the registry down serves what it served before.
    pub(crate) async fn fetch_or_last(
        &self,
        reference: &OciReference,
    ) -> Result<Pulled, PullError> {
        match self.fetch(reference).await {
            Err(err) if err.is_unreachable() => {
                let Some((manifest_digest, bytes)) = self.store.last(reference) else {
                    return Err(err);
                };
                tracing::warn!(
                    "{err}; serving {reference} as last served ({manifest_digest}) from the local store"
                );
                Ok(Pulled {
                    bytes,
                    manifest_digest,
                })
            }
            other => other,
        }
    }
}

/// `work` on `reference`, or a registry error once `deadline` has passed.
async fn within<T>(
    deadline: Duration,
    reference: &OciReference,
    work: impl std::future::Future<Output = Result<T, PullError>>,
) -> Result<T, PullError> {
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or_else(|_| {
            Err(PullError::Registry {
                reference: reference.to_string(),
                reason: format!("no complete answer within {deadline:?}"),
            })
        })
}

/// `reference` as the client's type, pinned to `digest` when given.
fn to_client(reference: &OciReference, digest: Option<&str>) -> Reference {
    match (digest.or(reference.digest.as_deref()), &reference.tag) {
        (Some(digest), _) => Reference::with_digest(
            reference.registry.clone(),
            reference.repository.clone(),
            digest.to_string(),
        ),
        (None, Some(tag)) => Reference::with_tag(
            reference.registry.clone(),
            reference.repository.clone(),
            tag.clone(),
        ),
        (None, None) => Reference::with_tag(
            reference.registry.clone(),
            reference.repository.clone(),
            "latest".to_string(),
        ),
    }
}

/// Sorts a failed pull: the registry's doing (it could not be reached, or
/// refused us), worth another try; or the artifact's (not the layout, bad
/// JSON, a digest that does not match), refused until the tag moves.
fn classify(reference: &str, err: &anyhow::Error) -> PullError {
    use oci_client::errors::OciDistributionError as Oci;
    let reason = format!("{err:#}");
    // Anything the registry answered with an HTTP error (5xx, 429, 401, a
    // 404 for a blob it lost) is its doing and may pass: try again later.
    let registry = err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<Oci>(),
            Some(
                Oci::RequestError(_)
                    | Oci::AuthenticationFailure(_)
                    | Oci::IoError(_)
                    | Oci::ServerError { .. }
                    | Oci::RegistryError { .. }
                    | Oci::UnauthorizedError { .. }
            )
        ) || cause.downcast_ref::<std::io::Error>().is_some()
    });
    if registry {
        PullError::Registry {
            reference: reference.to_string(),
            reason,
        }
    } else {
        PullError::Layout {
            reference: reference.to_string(),
            reason,
        }
    }
}

/// A download target that refuses to grow past `limit`: a registry whose
/// manifest understates a layer's size cannot make the host buffer more.
struct Capped {
    bytes: Vec<u8>,
    limit: u64,
    /// Set when a write was refused for going past `limit`.
    overflowed: bool,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if (self.bytes.len() + buf.len()) as u64 > self.limit {
            self.overflowed = true;
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the layer is larger than the {} bytes allowed",
                self.limit
            ))));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A hostile registry on 127.0.0.1:0 (a stand-in: a real registry does
    /// not trickle): it answers every request with a head announcing 4 KiB,
    /// then sends one byte every 200 ms, never going quiet long enough for
    /// the read timeout.
    async fn trickling_registry() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    // One request per connection: no client reuses it.
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\nconnection: close\r\n\r\n";
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for _ in 0..4096 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if stream.write_all(b" ").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_registry_that_trickles_its_answers_is_cut_off_at_the_deadline() {
        let addr = trickling_registry().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut puller = Puller::new(Store::new(dir.path().to_path_buf()), Vec::new(), 1 << 20);
        puller.resolve_deadline = Duration::from_secs(1);
        puller.pull_deadline = Duration::from_secs(2);
        let reference =
            OciReference::parse(&format!("oci://{addr}/team/app:v1")).expect("a reference");
        // Bounded here too, so that without the deadline the test fails
        // instead of waiting the 14 minutes the trickle would last.
        let bound = Duration::from_secs(60);
        let resolved = tokio::time::timeout(bound, puller.resolve(&reference))
            .await
            .expect("resolving ends at its deadline");
        match resolved {
            Err(err @ PullError::Registry { .. }) => {
                assert!(err.is_unreachable());
                assert_eq!(
                    err.to_string(),
                    format!(
                        "oci://{addr}/team/app:v1: registry unreachable or refused: no complete answer within 1s"
                    )
                );
            }
            other => panic!("not cut off: {other:?}"),
        }
        // Pinned to a digest, a fetch resolves nothing: the manifest's
        // download itself trickles, and the whole pull's deadline cuts it.
        let fetched = fetch_pinned(&puller, addr, &"ab".repeat(32)).await;
        assert!(
            matches!(&fetched, Err(PullError::Registry { reason, .. }) if reason == "no complete answer within 2s"),
            "{fetched:?}"
        );
    }

    /// A hostile registry on 127.0.0.1:0 (a stand-in: a real registry sends
    /// what its manifests say): every blob it is asked for is an endless
    /// stream of spaces, and so is every manifest but `manifest`, served
    /// for any path under `/manifests/sha256:…` with that digest. Counts
    /// the bytes it got to send, and keeps the paths it was asked for.
    async fn flooding_registry(
        manifest: Vec<u8>,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
        std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let sent = std::sync::Arc::new(AtomicU64::new(0));
        let counted = sent.clone();
        let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let asked = paths.clone();
        let digest = format!("sha256:{:x}", Sha256::digest(&manifest));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (sent, manifest, digest) = (counted.clone(), manifest.clone(), digest.clone());
                let asked = asked.clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 8192];
                    let n = stream.read(&mut request).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&request[..n]).into_owned();
                    let path = request.split(' ').nth(1).unwrap_or_default().to_string();
                    asked.lock().expect("paths").push(path.clone());
                    if path.ends_with(&format!("/manifests/{digest}")) {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ndocker-content-digest: {digest}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            manifest.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(&manifest).await;
                        return;
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\nconnection: close\r\n\r\n";
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // 256 MiB, unless the client stops reading first.
                    let chunk = vec![b' '; 64 * 1024];
                    for _ in 0..4096 {
                        if stream.write_all(&chunk).await.is_err() {
                            return;
                        }
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        (addr, sent, paths)
    }

    /// A Wasm artifact's image manifest, its config 2 bytes by its
    /// descriptor, with `config_extra`'s fields added to that descriptor;
    /// and the manifest's digest (hex).
    fn wasm_manifest(config_extra: serde_json::Value) -> (Vec<u8>, String) {
        let mut config = serde_json::json!({
            "mediaType": "application/vnd.wasm.config.v0+json",
            "digest": format!("sha256:{}", "cd".repeat(32)),
            "size": 2
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), config_extra.as_object()) {
            config.extend(extra.clone());
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [{
                "mediaType": "application/wasm",
                "digest": format!("sha256:{}", "ef".repeat(32)),
                "size": 8
            }]
        })
        .to_string()
        .into_bytes();
        let digest = format!("{:x}", Sha256::digest(&manifest));
        (manifest, digest)
    }

    /// `puller`'s fetch of the manifest `sha256:{digest}` from the registry
    /// at `addr`, failing the test if it has not ended within 60 s.
    async fn fetch_pinned(
        puller: &Puller,
        addr: std::net::SocketAddr,
        digest: &str,
    ) -> Result<Pulled, PullError> {
        let pinned = OciReference::parse(&format!("oci://{addr}/team/app@sha256:{digest}"))
            .expect("a pinned reference");
        tokio::time::timeout(Duration::from_secs(60), puller.fetch(&pinned))
            .await
            .expect("the fetch ends")
    }

    #[tokio::test]
    async fn a_registry_that_floods_a_manifest_or_a_config_is_cut_off_at_the_cap() {
        use std::sync::atomic::Ordering;
        // Past the cap, plus what the two sockets' buffers hold.
        const BOUND: u64 = 32 << 20;
        let dir = tempfile::tempdir().expect("temp dir");
        let puller = Puller::new(Store::new(dir.path().to_path_buf()), Vec::new(), 1 << 20);

        // An endless manifest.
        let (addr, sent, _) = flooding_registry(Vec::new()).await;
        let fetched = fetch_pinned(&puller, addr, &"ab".repeat(32)).await;
        assert!(
            matches!(&fetched, Err(PullError::Layout { reason, .. }) if reason.contains("is over 4194304 bytes")),
            "{fetched:?}"
        );
        let flooded = sent.load(Ordering::Relaxed);
        assert!(flooded < BOUND, "the registry sent {flooded} bytes");

        // A manifest whose config is said to be 2 bytes, and is endless.
        let (manifest, digest) = wasm_manifest(serde_json::json!({}));
        let (addr, sent, _) = flooding_registry(manifest).await;
        let fetched = fetch_pinned(&puller, addr, &digest).await;
        assert!(
            matches!(&fetched, Err(PullError::Registry { reason, .. }) if reason.contains("a config of over 4194304 bytes")),
            "{fetched:?}"
        );
        let flooded = sent.load(Ordering::Relaxed);
        assert!(flooded < BOUND, "the registry sent {flooded} bytes");
    }

    #[tokio::test]
    async fn a_config_pointing_at_foreign_urls_is_refused_before_anything_is_fetched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let puller = Puller::new(Store::new(dir.path().to_path_buf()), Vec::new(), 1 << 20);
        let (manifest, digest) = wasm_manifest(serde_json::json!({
            "urls": ["http://169.254.169.254/latest/meta-data/"]
        }));
        let (addr, _, paths) = flooding_registry(manifest).await;
        let fetched = fetch_pinned(&puller, addr, &digest).await;
        assert!(
            matches!(&fetched, Err(PullError::Layout { reason, .. }) if reason.contains("foreign URLs")),
            "{fetched:?}"
        );
        // Not even the registry's own copy of the config was asked for.
        let paths = paths.lock().expect("paths").clone();
        assert!(
            paths.iter().all(|path| !path.contains("/blobs/")),
            "{paths:?}"
        );
    }
}
