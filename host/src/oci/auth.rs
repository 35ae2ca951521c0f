//! Registry credentials and transport: anonymous unless told otherwise;
//! Basic credentials from `WASMHOST_REGISTRY_USERNAME` and
//! `WASMHOST_REGISTRY_PASSWORD` (every registry), else from
//! `~/.docker/config.json`'s `auths` (per registry); plain HTTP only for
//! loopback registries and hosts named with `--insecure-registry`.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

/// Where credentials come from, read once at start. Its `Debug` shows which
/// registries have credentials, never the credentials.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    /// From the environment, for every registry.
    everywhere: Option<(String, String)>,
    /// From the Docker config, by registry (`host` or `host:port`).
    by_registry: HashMap<String, (String, String)>,
}

impl Credentials {
    /// Reads the environment and `$DOCKER_CONFIG/config.json` (else
    /// `~/.docker/config.json`). A config that cannot be read is logged and
    /// ignored: pulls are then anonymous.
    pub(crate) fn from_environment() -> Self {
        let everywhere = match (
            std::env::var("WASMHOST_REGISTRY_USERNAME"),
            std::env::var("WASMHOST_REGISTRY_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) if !user.is_empty() => Some((user, password)),
            _ => None,
        };
        let path = std::env::var_os("DOCKER_CONFIG")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".docker"))
            })
            .map(|folder| folder.join("config.json"));
        let by_registry = match path.as_deref().map(std::fs::read_to_string) {
            Some(Ok(text)) => parse_docker_config(&text).unwrap_or_else(|reason| {
                tracing::warn!(
                    "ignoring {}: {reason}; registry pulls are anonymous",
                    path.as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
                HashMap::new()
            }),
            _ => HashMap::new(),
        };
        Self {
            everywhere,
            by_registry,
        }
    }

    /// What to send to `registry`.
    pub(crate) fn for_registry(&self, registry: &str) -> RegistryAuth {
        let found = self.everywhere.as_ref().or_else(|| {
            self.by_registry
                .get(registry)
                .or_else(|| self.by_registry.get(&format!("https://{registry}")))
        });
        match found {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// The `auths` of a Docker `config.json`: `{"auths": {"REGISTRY": {"auth":
/// base64("USER:PASSWORD")}}}`. Credential helpers are not run.
fn parse_docker_config(text: &str) -> Result<HashMap<String, (String, String)>, String> {
    let config: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let mut found = HashMap::new();
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(found);
    };
    for (registry, entry) in auths {
        let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) else {
            continue;
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| format!("the auth of {registry} is not base64: {err}"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| format!("the auth of {registry} is not UTF-8"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("the auth of {registry} is not USER:PASSWORD"))?;
        found.insert(registry.clone(), (user.to_string(), password.to_string()));
    }
    Ok(found)
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("everywhere", &self.everywhere.is_some())
            .field("registries", &self.by_registry.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether `reference`'s registry may be reached over plain HTTP: it is
/// this machine, or `insecure` names it, as `host` or `host:port`, in any case.
pub(crate) fn allows_http(
    reference: &crate::model::oci_ref::OciReference,
    insecure: &[String],
) -> bool {
    is_loopback(reference.host())
        || insecure.iter().any(|entry| {
            entry.eq_ignore_ascii_case(reference.host())
                || entry.eq_ignore_ascii_case(&reference.registry)
        })
}

/// Whether `host` is this machine: plain HTTP to it never leaves it.
pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths_are_read_per_registry() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("me:s3cret");
        let text = format!(r#"{{"auths": {{"registry.example.com": {{"auth": "{encoded}"}}}}}}"#);
        let found = parse_docker_config(&text).expect("parses");
        let credentials = Credentials {
            everywhere: None,
            by_registry: found,
        };
        assert_eq!(
            credentials.for_registry("registry.example.com"),
            RegistryAuth::Basic("me".into(), "s3cret".into())
        );
        assert_eq!(credentials.for_registry("ghcr.io"), RegistryAuth::Anonymous);
        assert!(parse_docker_config(r#"{"auths": {"x": {"auth": "%%%"}}}"#).is_err());
    }

    #[test]
    fn only_this_machine_is_loopback() {
        for host in ["localhost", "127.0.0.1", "127.5.5.5", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1",
            "localhost.example.com",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
