//! Registry credentials and transport: anonymous unless told otherwise;
//! Basic credentials from `WASMHOST_REGISTRY_USERNAME` and
//! `WASMHOST_REGISTRY_PASSWORD` for the registries `WASMHOST_REGISTRY`
//! names, else from `~/.docker/config.json`'s `auths` (per registry); plain
//! HTTP only for loopback registries and hosts named with
//! `--insecure-registry`.
//!
//! Registries are untrusted, and a project may name any registry, so
//! credentials go only to a registry they were given for: never to every
//! registry a project names. (`wasmhost push` sends the environment's
//! credentials to the registry its command line names, unless
//! `WASMHOST_REGISTRY` says otherwise.)

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

/// A user name and password.
type Basic = (String, String);

/// Where credentials come from, read once at start. Its `Debug` shows which
/// registries have credentials, never the credentials.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    /// From the environment, with the registries `WASMHOST_REGISTRY` names
    /// (`host` or `host:port`, lowercase), if it is set.
    from_env: Option<(Basic, Option<Vec<String>>)>,
    /// From the Docker config, by registry (`host` or `host:port`).
    by_registry: HashMap<String, Basic>,
}

impl Credentials {
    /// Reads the environment and `$DOCKER_CONFIG/config.json` (else
    /// `~/.docker/config.json`). A config that cannot be read is logged and
    /// ignored: pulls are then anonymous.
    pub(crate) fn from_environment() -> Self {
        let registries = std::env::var("WASMHOST_REGISTRY").ok().map(|list| {
            list.split(',')
                .map(|entry| entry.trim().to_ascii_lowercase())
                .filter(|entry| !entry.is_empty())
                .collect()
        });
        let from_env = match (
            std::env::var("WASMHOST_REGISTRY_USERNAME"),
            std::env::var("WASMHOST_REGISTRY_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) if !user.is_empty() => Some(((user, password), registries)),
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
            from_env,
            by_registry,
        }
    }

    /// Warns when the environment holds credentials that no registry will
    /// get because `WASMHOST_REGISTRY` names none: what a host that pulls
    /// says once at start-up.
    pub(crate) fn warn_if_unscoped(&self) {
        if let Some((_, None)) = &self.from_env {
            tracing::warn!(
                "WASMHOST_REGISTRY_USERNAME is set but WASMHOST_REGISTRY is not: those credentials are sent to no registry; set WASMHOST_REGISTRY to the registry (host or host:port, comma-separated for several) they are for"
            );
        }
    }

    /// What to send to `registry` (`host` or `host:port`) when pulling: the
    /// environment's credentials if `WASMHOST_REGISTRY` names it (as host
    /// or as host:port), else the Docker config's for it, else nothing.
    pub(crate) fn for_registry(&self, registry: &str) -> RegistryAuth {
        self.find(registry, false)
    }

    /// What to send to `registry` when pushing to it: as
    /// [`Credentials::for_registry`], but the environment's credentials go
    /// to the registry the command line names when `WASMHOST_REGISTRY` is
    /// not set.
    pub(crate) fn for_push(&self, registry: &str) -> RegistryAuth {
        self.find(registry, true)
    }

    fn find(&self, registry: &str, unscoped_allowed: bool) -> RegistryAuth {
        let registry = registry.to_ascii_lowercase();
        let host = registry
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map_or(registry.as_str(), |(host, _)| host);
        let from_env = self.from_env.as_ref().and_then(|(credentials, names)| {
            let named = match names {
                Some(names) => names.iter().any(|name| *name == registry || *name == host),
                None => unscoped_allowed,
            };
            named.then_some(credentials)
        });
        let found = from_env.or_else(|| {
            self.by_registry
                .get(&registry)
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
        // Matched against lowercase registry names.
        found.insert(
            registry.to_ascii_lowercase(),
            (user.to_string(), password.to_string()),
        );
    }
    Ok(found)
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("from_env", &self.from_env.as_ref().map(|(_, names)| names))
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
            from_env: None,
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
    fn environment_credentials_go_only_to_the_registries_named_for_them() {
        let pair = || ("ci".to_string(), "s3cret".to_string());
        let basic = RegistryAuth::Basic("ci".into(), "s3cret".into());
        let scoped = Credentials {
            from_env: Some((
                pair(),
                Some(vec!["127.0.0.1:5000".into(), "ghcr.io".into()]),
            )),
            by_registry: HashMap::new(),
        };
        for registry in ["127.0.0.1:5000", "GHCR.io", "ghcr.io:443"] {
            assert_eq!(scoped.for_registry(registry), basic, "{registry}");
            assert_eq!(scoped.for_push(registry), basic, "{registry}");
        }
        for registry in ["127.0.0.1:5001", "evil.example", "ghcr.io.evil.example"] {
            assert_eq!(
                scoped.for_registry(registry),
                RegistryAuth::Anonymous,
                "{registry}"
            );
            assert_eq!(
                scoped.for_push(registry),
                RegistryAuth::Anonymous,
                "{registry}"
            );
        }
        // Unscoped: a pull sends them nowhere; a push, to the registry its
        // command line names.
        let unscoped = Credentials {
            from_env: Some((pair(), None)),
            by_registry: HashMap::new(),
        };
        assert_eq!(
            unscoped.for_registry("127.0.0.1:5000"),
            RegistryAuth::Anonymous
        );
        assert_eq!(unscoped.for_push("127.0.0.1:5000"), basic);
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
