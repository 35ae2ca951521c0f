//! A project's `wasmhost.toml`, parsed strictly: unknown keys are errors, and
//! every error names the file, the line and the reason, so a typo never
//! silently changes how a project is served.
//!
//! ```toml
//! component = "app.wasm"          # which file in the folder is the component,
//!                                 # or "oci://REGISTRY/REPOSITORY:TAG" (or @sha256:…)
//!                                 # to pull it from an OCI registry
//! route = "/app"                  # path prefix; default "/NAME"
//! hosts = ["app.example.com"]     # extra Host names routed to this project
//! strip_prefix = false            # guest sees the path without the route prefix
//! health = "/healthz"             # GET this on a new version before it goes live
//! health_timeout = "5s"           # how long the health check may take
//! drain_timeout = "30s"           # how long requests may run on on a replaced version
//! allowed_outbound_hosts = ["https://api.example.com", "http://127.0.0.1:9000"]
//!                                 # where the guest may send HTTP requests; default: nowhere
//!
//! [env]                           # wasi:cli environment of the guest
//! GREETING = "hi"
//!
//! [limits]
//! request_timeout = "30s"
//! max_body = "10MiB"
//! memory = "128MiB"
//! max_concurrency = 100
//! log_rate = "1MiB"               # guest output logged per second; more is dropped
//!
//! [instances]
//! reuse = 1                       # requests one instance serves, one after another
//! idle_timeout = "1s"             # an instance idle this long is dropped
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Component as PathPart, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::engine::outbound::{AllowedHost, OutboundPolicy};
use crate::model::oci_ref::OciReference;
use crate::model::router;
use crate::units::{parse_duration, parse_size};

/// Most requests one instance may serve (`[instances] reuse`): past a
/// million, an instance is as good as immortal and its state as good as
/// shared between every request.
const MAX_REUSE: u32 = 1_000_000;

/// Longest `[instances] idle_timeout`: an idle instance holds a slot of the
/// instance pool and its memory, which other projects may need.
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The file name of a project's manifest inside its folder.
pub(crate) const MANIFEST_FILE: &str = "wasmhost.toml";

/// A project name: `[a-z0-9][a-z0-9_-]{0,62}`.
///
/// Names become URL path segments, `NAME.localhost` host labels and folder
/// names, so the pattern is the intersection of what is safe in all three.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProjectName(String);

impl ProjectName {
    /// Validates `name`, saying what is wrong with it when it is not a valid project name.
    pub fn parse(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let Some(first) = chars.next() else {
            return Err("a project name cannot be empty".into());
        };
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(format!(
                "project name `{name}` must start with a lowercase letter or a digit"
            ));
        }
        if name.len() > 63 {
            return Err(format!(
                "project name `{name}` is longer than 63 characters"
            ));
        }
        if let Some(bad) = chars
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "project name `{name}` contains `{bad}`: use only a-z, 0-9, `-` and `_`"
            ));
        }
        Ok(Self(name.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per-project limits. `None` means "use the host-wide default".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// How long one request may run before it is interrupted and answered 504.
    pub(crate) request_timeout: Option<Duration>,
    /// Largest request body accepted, in bytes.
    pub(crate) max_body: Option<u64>,
    /// Largest linear memory one instance may grow to, in bytes.
    pub(crate) memory: Option<u64>,
    /// Most requests this project may run at once.
    pub(crate) max_concurrency: Option<u32>,
    /// Most guest output logged per second, in bytes.
    pub(crate) log_rate: Option<u64>,
}

/// How a project's instances are used: `[instances]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instances {
    /// How many requests one instance serves with its state kept, one after
    /// another, never two at once. 1, the default, gives every request a
    /// fresh instance's state (an instance reset in place after each,
    /// `engine/instances.rs`): nothing a request leaves in the guest's
    /// memory is seen by the next.
    pub(crate) reuse: u32,
    /// How long an instance kept between requests may sit idle before it is
    /// dropped.
    pub(crate) idle_timeout: Duration,
}

impl Default for Instances {
    fn default() -> Self {
        Self {
            reuse: 1,
            idle_timeout: Duration::from_secs(1),
        }
    }
}

/// A parsed and validated `wasmhost.toml`. Every field is optional in the file;
/// defaults are applied by `model/discovery.rs`, which knows the project name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Relative path of the component inside the project folder.
    pub(crate) component: Option<PathBuf>,
    /// Where to pull the component from instead (`component = "oci://…"`).
    pub(crate) oci: Option<OciReference>,
    /// Normalized route prefix.
    pub(crate) route: Option<String>,
    /// Extra host names (lowercase, no port) routed to this project.
    pub(crate) hosts: Vec<String>,
    /// Whether the guest sees the path with the route prefix removed.
    pub(crate) strip_prefix: bool,
    /// Environment variables for the guest, sorted by name.
    pub(crate) env: Vec<(String, String)>,
    /// Path (and query) checked with a GET on every new version before it goes live.
    pub(crate) health: Option<String>,
    /// How long that health check may take; host default when `None`.
    pub(crate) health_timeout: Option<Duration>,
    /// How long requests may keep running on a replaced version; host default when `None`.
    pub(crate) drain_timeout: Option<Duration>,
    /// Resource limits for the project.
    pub(crate) limits: Limits,
    /// Where the guest may send HTTP requests; nowhere by default.
    pub(crate) outbound: OutboundPolicy,
    /// Instance reuse.
    pub(crate) instances: Instances,
}

/// Why a manifest was refused: the file, the line when the problem has one, and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

/// The file as written, before validation. Spans are kept on every value
/// whose validation happens after deserialization, so those errors carry a line too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    component: Option<Spanned<String>>,
    route: Option<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    #[serde(default)]
    strip_prefix: bool,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    health: Option<Spanned<String>>,
    health_timeout: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    instances: RawInstances,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInstances {
    reuse: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    request_timeout: Option<Spanned<String>>,
    max_body: Option<Spanned<RawSize>>,
    memory: Option<Spanned<RawSize>>,
    max_concurrency: Option<Spanned<i64>>,
    log_rate: Option<Spanned<RawSize>>,
}

/// Sizes may be written as a number of bytes or as a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|err| ManifestError {
            path: path.to_path_buf(),
            line: None,
            reason: format!("failed to read: {err}"),
        })?;
        Self::parse(path, &text)
    }

    /// Validates manifest `text`; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let error = |span: Option<Range<usize>>, reason: String| ManifestError {
            path: path.to_path_buf(),
            line: span.map(|span| line_of(text, span.start)),
            reason,
        };
        let raw: RawManifest = toml::from_str(text)
            .map_err(|err| error(err.span(), err.message().trim().to_string()))?;

        let (component, oci) = match raw.component {
            None => (None, None),
            Some(value) if value.get_ref().starts_with(crate::model::oci_ref::SCHEME) => (
                None,
                Some(
                    OciReference::parse(value.get_ref())
                        .map_err(|reason| error(Some(value.span()), reason))?,
                ),
            ),
            Some(value) => (
                Some(
                    component_path(value.get_ref())
                        .map_err(|reason| error(Some(value.span()), reason))?,
                ),
                None,
            ),
        };
        let route = match raw.route {
            None => None,
            Some(value) => Some(
                router::normalize_route(value.get_ref())
                    .map_err(|reason| error(Some(value.span()), reason))?,
            ),
        };
        let mut hosts = Vec::with_capacity(raw.hosts.len());
        for host in raw.hosts {
            let normalized = router::normalize_host(host.get_ref())
                .map_err(|reason| error(Some(host.span()), reason))?;
            if hosts.contains(&normalized) {
                return Err(error(
                    Some(host.span()),
                    format!("host `{normalized}` is listed twice"),
                ));
            }
            hosts.push(normalized);
        }
        let mut env = Vec::with_capacity(raw.env.len());
        for (key, value) in raw.env {
            let name = key.get_ref();
            if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0')
            {
                return Err(error(
                    Some(key.span()),
                    format!(
                        "env name `{name}` must be non-empty and contain no `=` or NUL; values no NUL"
                    ),
                ));
            }
            env.push((name.clone(), value));
        }

        let health = match raw.health {
            None => None,
            Some(value) => {
                let path = value.get_ref();
                if !path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(error(
                        Some(value.span()),
                        format!("health `{path}` must be a path starting with `/`, without spaces"),
                    ));
                }
                Some(path.clone())
            }
        };
        let duration = |value: Option<Spanned<String>>,
                        key: &str|
         -> Result<Option<Duration>, ManifestError> {
            let Some(value) = value else { return Ok(None) };
            let parsed = parse_duration(value.get_ref())
                .map_err(|reason| error(Some(value.span()), format!("{key}: {reason}")))?;
            if parsed.is_zero() {
                return Err(error(
                    Some(value.span()),
                    format!("{key} must be more than 0"),
                ));
            }
            Ok(Some(parsed))
        };
        let mut allowed = Vec::with_capacity(raw.allowed_outbound_hosts.len());
        for entry in raw.allowed_outbound_hosts {
            let parsed = AllowedHost::parse(entry.get_ref()).map_err(|reason| {
                error(
                    Some(entry.span()),
                    format!("allowed_outbound_hosts: {reason}"),
                )
            })?;
            allowed.push(parsed);
        }
        let health_timeout = duration(raw.health_timeout, "health_timeout")?;
        let drain_timeout = duration(raw.drain_timeout, "drain_timeout")?;
        let limits = raw.limits;
        let request_timeout = duration(limits.request_timeout, "request_timeout")?;
        let size =
            |value: Option<Spanned<RawSize>>, key: &str| -> Result<Option<u64>, ManifestError> {
                let Some(value) = value else { return Ok(None) };
                let span = value.span();
                let bytes = match value.into_inner() {
                    RawSize::Bytes(n) => {
                        u64::try_from(n).map_err(|_| format!("{key} cannot be negative"))
                    }
                    RawSize::Text(text) => {
                        parse_size(&text).map_err(|reason| format!("{key}: {reason}"))
                    }
                }
                .map_err(|reason| error(Some(span.clone()), reason))?;
                if bytes == 0 {
                    return Err(error(Some(span), format!("{key} must be more than 0")));
                }
                Ok(Some(bytes))
            };
        let max_body = size(limits.max_body, "max_body")?;
        let memory = size(limits.memory, "memory")?;
        let log_rate = size(limits.log_rate, "log_rate")?;
        let max_concurrency = match limits.max_concurrency {
            None => None,
            Some(value) => Some(
                u32::try_from(*value.get_ref())
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        error(
                            Some(value.span()),
                            "max_concurrency must be between 1 and 4294967295".into(),
                        )
                    })?,
            ),
        };

        let reuse = match raw.instances.reuse {
            None => Instances::default().reuse,
            Some(value) => u32::try_from(*value.get_ref())
                .ok()
                .filter(|n| (1..=MAX_REUSE).contains(n))
                .ok_or_else(|| {
                    error(
                        Some(value.span()),
                        format!("reuse must be between 1 and {MAX_REUSE}"),
                    )
                })?,
        };
        let idle_span = raw
            .instances
            .idle_timeout
            .as_ref()
            .map(|value| value.span());
        let idle_timeout = duration(raw.instances.idle_timeout, "idle_timeout")?
            .unwrap_or(Instances::default().idle_timeout);
        if idle_timeout > MAX_IDLE_TIMEOUT {
            return Err(error(
                idle_span,
                "idle_timeout must be at most 10m: an idle instance keeps its pool slot and memory"
                    .into(),
            ));
        }

        Ok(Manifest {
            component,
            oci,
            route,
            hosts,
            strip_prefix: raw.strip_prefix,
            env,
            health,
            health_timeout,
            drain_timeout,
            limits: Limits {
                request_timeout,
                max_body,
                memory,
                max_concurrency,
                log_rate,
            },
            outbound: OutboundPolicy::new(allowed),
            instances: Instances {
                reuse,
                idle_timeout,
            },
        })
    }
}

/// The component must be a file inside the project folder: a relative path
/// with no `..`, so a manifest can never point the host at arbitrary files.
fn component_path(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    let inside = !value.is_empty()
        && path
            .components()
            .all(|part| matches!(part, PathPart::Normal(_) | PathPart::CurDir));
    if inside {
        Ok(path)
    } else {
        Err(format!(
            "component `{value}` must be a relative path inside the project folder (no `..`, not absolute)"
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("p/wasmhost.toml"), text)
    }

    #[test]
    fn names() {
        for good in ["a", "hello", "0", "my-app_2", &"x".repeat(63)] {
            assert!(ProjectName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Hello",
            "-a",
            "_a",
            ".a",
            "a.b",
            "a/b",
            "..",
            "a b",
            &"x".repeat(64),
            "é",
        ] {
            assert!(ProjectName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn full_manifest() {
        let manifest = parse(
            r#"
component = "app.wasm"
route = "/app/"
hosts = ["App.Example.com"]
strip_prefix = true
health = "/ready?deep=1"
health_timeout = "2s"
drain_timeout = "1m"
[env]
B = "2"
A = "1"
[limits]
request_timeout = "5s"
max_body = "1MiB"
memory = 1048576
max_concurrency = 8
log_rate = "64KiB"
"#,
        )
        .expect("valid manifest");
        assert_eq!(manifest.component, Some(PathBuf::from("app.wasm")));
        assert_eq!(manifest.route.as_deref(), Some("/app"));
        assert_eq!(manifest.hosts, vec!["app.example.com"]);
        assert!(manifest.strip_prefix);
        assert_eq!(manifest.health.as_deref(), Some("/ready?deep=1"));
        assert_eq!(manifest.health_timeout, Some(Duration::from_secs(2)));
        assert_eq!(manifest.drain_timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            manifest.env,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(
            manifest.limits.request_timeout,
            Some(Duration::from_secs(5))
        );
        assert_eq!(manifest.limits.max_body, Some(1 << 20));
        assert_eq!(manifest.limits.memory, Some(1 << 20));
        assert_eq!(manifest.limits.max_concurrency, Some(8));
        assert_eq!(manifest.limits.log_rate, Some(64 << 10));
    }

    #[test]
    fn outbound_hosts_are_none_unless_listed() {
        let none = parse("").expect("valid");
        assert!(!none.outbound.allows("http", "127.0.0.1", 80));
        let some = parse(
            "allowed_outbound_hosts = [\"http://127.0.0.1:9000\", \"https://*.example.com\"]\n",
        )
        .expect("valid");
        assert_eq!(some.outbound.entries().len(), 2);
        assert!(some.outbound.allows("http", "127.0.0.1", 9000));
        assert!(some.outbound.allows("https", "api.example.com", 443));
        assert!(!some.outbound.allows("http", "127.0.0.1", 9001));
    }

    #[test]
    fn instance_reuse_is_off_unless_set_and_checked_when_set() {
        let default = parse("").expect("valid");
        assert_eq!(default.instances.reuse, 1);
        assert_eq!(default.instances.idle_timeout, Duration::from_secs(1));
        let set = parse("[instances]\nreuse = 50\nidle_timeout = \"250ms\"\n").expect("valid");
        assert_eq!(set.instances.reuse, 50);
        assert_eq!(set.instances.idle_timeout, Duration::from_millis(250));
        for (text, reason) in [
            (
                "[instances]\nreuse = 0\n",
                "reuse must be between 1 and 1000000",
            ),
            (
                "[instances]\nreuse = -3\n",
                "reuse must be between 1 and 1000000",
            ),
            (
                "[instances]\nreuse = 1000001\n",
                "reuse must be between 1 and 1000000",
            ),
            (
                "[instances]\nidle_timeout = \"0s\"\n",
                "idle_timeout must be more than 0",
            ),
            ("[instances]\nidle_timeout = \"soon\"\n", "idle_timeout:"),
            (
                "[instances]\nidle_timeout = \"11m\"\n",
                "idle_timeout must be at most 10m",
            ),
            ("[instances]\nmax = 3\n", "unknown field `max`"),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, Some(2), "{text}: {err}");
            assert!(err.reason.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn empty_manifest_is_all_defaults() {
        assert_eq!(parse("").expect("empty is valid"), Manifest::default());
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let cases = [
            ("route = \"/a\"\nrotue = \"/b\"\n", 2, "rotue"),
            (
                "\n\n[limits]\nrequest_timeout = \"30\"\n",
                4,
                "needs a unit",
            ),
            ("[limits]\nmemory = \"lots\"\n", 2, "memory"),
            ("[limits]\nmax_body = -5\n", 2, "negative"),
            ("[limits]\nmax_concurrency = 0\n", 2, "max_concurrency"),
            ("[limits]\ncpu = 1\n", 2, "cpu"),
            (
                "component = \"../other/x.wasm\"\n",
                1,
                "inside the project folder",
            ),
            (
                "component = \"/etc/passwd\"\n",
                1,
                "inside the project folder",
            ),
            ("route = \"no-slash\"\n", 1, "must start with `/`"),
            ("hosts = [\"a.com\", \"b c\"]\n", 1, "b c"),
            ("strip_prefix = \"yes\"\n", 1, "bool"),
            ("[env]\nA = 1\n", 2, "string"),
            ("route = \n", 1, ""),
            ("health = \"ready\"\n", 1, "must be a path"),
            ("drain_timeout = \"0s\"\n", 1, "more than 0"),
            (
                "allowed_outbound_hosts = [\n  \"https://ok.example.com\",\n  \"ftp://x\",\n]\n",
                3,
                "allowed_outbound_hosts: `ftp://x`",
            ),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, Some(line), "{text:?}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("p/wasmhost.toml:{line}: ")),
                "{err}"
            );
            assert!(err.reason.contains(needle), "{text:?}: {err}");
        }
    }
}

/// Property tests: the fuzz targets' checks, run on every `cargo test`.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Found by the `manifest` fuzz target: an unterminated string at the end
    /// of a file whose last line ends in a newline.
    #[test]
    fn an_error_at_the_end_is_on_the_line_after_the_last_newline() {
        let err =
            Manifest::parse(Path::new("wasmhost.toml"), "\'\'\'\n").expect_err("unterminated");
        assert_eq!(err.line, Some(2));
    }

    proptest! {
        /// Any text at all: an answer, never a panic, and an error names the
        /// file and a line inside the text.
        #[test]
        fn any_text_parses_or_names_file_and_line(text in "(?s).{0,400}") {
            let path = Path::new("/p/app/wasmhost.toml");
            if let Err(err) = Manifest::parse(path, &text) {
                let message = err.to_string();
                prop_assert!(message.starts_with("/p/app/wasmhost.toml"), "{message}");
                if let Some(line) = err.line {
                    // At the end of text ending in a newline, the error is on
                    // the (empty) line after it, as an editor shows it.
                    prop_assert!(line >= 1 && line <= text.matches('\n').count() + 1, "{message}");
                }
            }
        }

        /// Text shaped like a manifest (known keys, arbitrary values).
        #[test]
        fn manifest_shaped_text_never_panics(
            key in prop::sample::select(vec!["component", "route", "hosts", "strip_prefix", "health", "drain_timeout", "health_timeout", "unknown"]),
            value in "[\\[\\]\"a-z0-9/._ =-]{0,40}",
            limit in prop::sample::select(vec!["request_timeout", "max_body", "memory", "max_concurrency", "log_rate"]),
            limit_value in "[\"0-9a-zA-Z. -]{0,20}",
        ) {
            let text = format!("{key} = {value}\n[limits]\n{limit} = {limit_value}\n");
            let _ = Manifest::parse(Path::new("wasmhost.toml"), &text);
        }
    }
}
