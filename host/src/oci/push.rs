//! `wasmhost push FILE.wasm oci://REGISTRY/REPOSITORY:TAG`: publishes a
//! component in the Wasm OCI artifact layout (`oci-wasm` builds the config
//! and the manifest), so any host polling that tag picks it up.

use std::path::Path;

use anyhow::{Context as _, bail};
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_wasm::{WasmClient, WasmConfig};

use crate::model::oci_ref::OciReference;
use crate::oci::auth::{self, Credentials};

/// Pushes the component at `file` to `reference`; returns the manifest's URL.
pub(crate) async fn push(
    file: &Path,
    reference: &OciReference,
    insecure: &[String],
) -> anyhow::Result<String> {
    if reference.is_pinned() {
        bail!("{reference}: push to a tag, not a digest (the registry names the digest)");
    }
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("failed to read {}", file.display()))?;
    let (config, layer) = WasmConfig::from_raw_component(bytes, None).with_context(|| {
        format!(
            "failed to read {} as a WebAssembly component",
            file.display()
        )
    })?;
    let plain = auth::allows_http(reference, insecure);
    let client = WasmClient::new(Client::new(ClientConfig {
        protocol: if plain {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    }));
    let credentials = Credentials::from_environment().for_push(&reference.registry);
    let response = client
        .push(
            &super::to_client(reference, None),
            &credentials,
            layer,
            config,
            None,
        )
        .await
        .with_context(|| format!("failed to push {} to {reference}", file.display()))?;
    Ok(response.manifest_url)
}
