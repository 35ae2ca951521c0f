//! `component = "oci://REGISTRY/REPOSITORY:TAG"` (or `@sha256:DIGEST`) in a
//! project's `wasmhost.toml`: where a component is pulled from, parsed
//! strictly. The registry is always named: a bare `repo:tag` would silently
//! mean Docker Hub.

use std::fmt;

/// A component in an OCI registry, by tag (polled for new digests) or by
/// digest (pinned, never polled).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OciReference {
    /// `host` or `host:port`.
    pub registry: String,
    /// `path/of/repository`, lowercase.
    pub repository: String,
    /// The tag, when not pinned by digest.
    pub tag: Option<String>,
    /// `sha256:` and 64 hex digits, when pinned.
    pub digest: Option<String>,
}

/// The scheme prefix that marks a component as pulled from a registry.
pub const SCHEME: &str = "oci://";

impl OciReference {
    /// Parses `oci://REGISTRY/REPOSITORY:TAG` or `oci://REGISTRY/REPOSITORY@sha256:HEX`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{text}` is not a component reference: {why}");
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it must start with oci://"))?;
        let (name, digest) = match rest.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (rest, None),
        };
        let (registry, path) = name.split_once('/').ok_or_else(|| {
            bad("name the registry, then the repository (oci://REGISTRY/REPOSITORY:TAG)")
        })?;
        if !is_registry(registry) {
            return Err(bad(
                "the registry must be a host name with a dot or a port, or localhost (e.g. ghcr.io, 127.0.0.1:5000)",
            ));
        }
        // The tag follows the last `:` after the last `/`.
        let last_slash = path.rfind('/').map_or(0, |at| at + 1);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(at) => (&path[..last_slash + at], Some(&path[last_slash + at + 1..])),
            None => (path, None),
        };
        if !is_repository(repository) {
            return Err(bad(
                "the repository must be lowercase letters, digits and `._-`, in `/`-separated parts",
            ));
        }
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(bad(
                "a tag is 1–128 letters, digits and `._-`, not starting with `.` or `-`",
            ));
        }
        if let Some(digest) = digest
            && !is_digest(digest)
        {
            return Err(bad("a digest is `sha256:` and 64 lowercase hex digits"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad("give a tag (`:TAG`) or a digest (`@sha256:…`)"));
        }
        Ok(Self {
            // Host names are case-insensitive; one spelling, for comparisons.
            registry: registry.to_ascii_lowercase(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// Whether it names a digest: then it never changes, and is never polled.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The registry's host name, without the port.
    pub fn host(&self) -> &str {
        match self.registry.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => &self.registry,
        }
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn is_registry(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(registry, |(host, _)| host);
    let named = host.contains('.') || host == "localhost" || host != registry;
    named
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn is_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && part.as_bytes()[0].is_ascii_alphanumeric()
        })
}

fn is_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_digests_and_ports_parse_and_print_back() {
        let tagged = OciReference::parse("oci://127.0.0.1:5000/team/hello:v2").expect("parses");
        assert_eq!(tagged.registry, "127.0.0.1:5000");
        assert_eq!(tagged.host(), "127.0.0.1");
        assert_eq!(tagged.repository, "team/hello");
        assert_eq!(tagged.tag.as_deref(), Some("v2"));
        assert!(!tagged.is_pinned());
        assert_eq!(tagged.to_string(), "oci://127.0.0.1:5000/team/hello:v2");

        let digest = format!("sha256:{}", "ab".repeat(32));
        let text = format!("oci://ghcr.io/acme/app@{digest}");
        let pinned = OciReference::parse(&text).expect("parses");
        assert!(pinned.is_pinned());
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.host(), "ghcr.io");
        assert_eq!(pinned.to_string(), text);
        assert!(OciReference::parse("oci://localhost/app:latest").is_ok());
    }

    #[test]
    fn anything_ambiguous_is_refused_with_the_reason() {
        for (text, why) in [
            ("ghcr.io/app:v1", "oci://"),
            ("oci://app:v1", "name the registry"),
            ("oci://library/app:v1", "registry must be"),
            ("oci://ghcr.io/App:v1", "lowercase"),
            ("oci://ghcr.io/app", "give a tag"),
            ("oci://ghcr.io/app:", "a tag is"),
            ("oci://ghcr.io/app:-x", "a tag is"),
            ("oci://ghcr.io/app@sha256:abc", "a digest is"),
            ("oci://ghcr.io//app:v1", "repository must"),
        ] {
            let err = OciReference::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(text), "{err}");
        }
    }
}
