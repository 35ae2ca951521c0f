//! Pure request → project matching. No I/O, no wasmtime: the router maps a
//! Host header and a path to a project index and the path the guest sees.
//!
//! Rules, in order:
//! 1. Host (port ignored, case-insensitive): `NAME.localhost` or a name in the
//!    project's `hosts` selects the project, and the guest sees the path untouched,
//!    so a component written for the root of `wasmtime serve` works unchanged.
//! 2. Otherwise the longest route prefix wins, on segment boundaries:
//!    `/hello` matches `/hello`, `/hello/` and `/hello/x?y`, never `/helloworld`.
//!    With `strip_prefix` the guest sees the rest (`/hello/x?y` → `/x?y`, `/hello` → `/`).
//!    `/` matches everything nothing longer matched.

use std::borrow::Cow;
use std::collections::HashMap;

/// Where a request goes: which project, and the path (with query) its guest sees.
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'a> {
    /// Index of the project, as given to [`RouterBuilder::add`].
    pub project: usize,
    /// The path and query handed to the guest: borrowed when it is the
    /// request's own (no prefix stripped), so most requests copy nothing.
    pub guest_path: Cow<'a, str>,
}

/// One path prefix claimed by a project.
#[derive(Debug, Clone)]
struct Prefix {
    route: String,
    project: usize,
    strip: bool,
}

/// An immutable routing table; build it with [`RouterBuilder`].
#[derive(Debug, Clone, Default)]
pub struct Router {
    hosts: HashMap<String, usize>,
    /// Sorted longest route first, so the first match is the longest.
    prefixes: Vec<Prefix>,
}

/// Collects projects' claims, refusing any that collide with an earlier claim.
#[derive(Debug, Default)]
pub struct RouterBuilder {
    router: Router,
}

impl RouterBuilder {
    /// Routes `name.localhost`, every host in `hosts`, and `route` to `project`.
    ///
    /// All or nothing: when any claim collides with an earlier project's, nothing
    /// is routed and the error names the claim and who holds it (by index).
    pub fn add(
        &mut self,
        project: usize,
        name: &str,
        route: &str,
        hosts: &[String],
        strip_prefix: bool,
    ) -> Result<(), Conflict> {
        let implicit = format!("{name}.localhost");
        let claimed_hosts: Vec<&str> = std::iter::once(implicit.as_str())
            .chain(hosts.iter().map(String::as_str))
            .collect();
        for host in &claimed_hosts {
            if let Some(&holder) = self.router.hosts.get(*host) {
                return Err(Conflict {
                    claim: format!("host `{host}`"),
                    holder,
                });
            }
        }
        if let Some(prefix) = self.router.prefixes.iter().find(|p| p.route == route) {
            return Err(Conflict {
                claim: format!("route `{route}`"),
                holder: prefix.project,
            });
        }
        for host in claimed_hosts {
            self.router.hosts.insert(host.to_string(), project);
        }
        self.router.prefixes.push(Prefix {
            route: route.to_string(),
            project,
            strip: strip_prefix,
        });
        Ok(())
    }

    /// Finishes the table.
    pub fn build(mut self) -> Router {
        self.router.prefixes.sort_by(|a, b| {
            b.route
                .len()
                .cmp(&a.route.len())
                .then(a.route.cmp(&b.route))
        });
        self.router
    }
}

/// A claim that another project already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// What was claimed twice, e.g. "route `/api`".
    pub(crate) claim: String,
    /// Index of the project that holds it.
    pub(crate) holder: usize,
}

impl Router {
    /// Finds the project for a request with this Host header value (if any)
    /// and this path-with-query.
    pub fn route<'a>(&self, host: Option<&str>, path_and_query: &'a str) -> Option<Match<'a>> {
        if let Some(project) = host.and_then(|h| self.hosts.get(&*host_key(h))) {
            return Some(Match {
                project: *project,
                guest_path: Cow::Borrowed(path_and_query),
            });
        }
        let (path, query) = match path_and_query.find('?') {
            Some(at) => path_and_query.split_at(at),
            None => (path_and_query, ""),
        };
        let prefix = self.prefixes.iter().find(|p| on_boundary(path, &p.route))?;
        let guest_path = if prefix.strip && prefix.route != "/" {
            let rest = &path[prefix.route.len()..];
            let rest = if rest.is_empty() { "/" } else { rest };
            Cow::Owned(format!("{rest}{query}"))
        } else {
            Cow::Borrowed(path_and_query)
        };
        Some(Match {
            project: prefix.project,
            guest_path,
        })
    }
}

/// True when `route` is `path` itself or a whole-segment prefix of it.
fn on_boundary(path: &str, route: &str) -> bool {
    route == "/"
        || path == route
        || (path.starts_with(route) && path.as_bytes().get(route.len()) == Some(&b'/'))
}

/// A Host header value as a table key: lowercase, without port or trailing dot.
fn host_key(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = without_port.trim_end_matches('.');
    // Borrowed when already lower case, as clients send it: no allocation
    // on every request.
    match name.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(name.to_ascii_lowercase()),
        false => Cow::Borrowed(name),
    }
}

/// Validates a configured route and puts it in canonical form (`/a/b`, no trailing `/`).
pub(crate) fn normalize_route(route: &str) -> Result<String, String> {
    if !route.starts_with('/') {
        return Err(format!("route `{route}` must start with `/`"));
    }
    if route.contains(['?', '#', '\\', ' ']) || route.chars().any(char::is_control) {
        return Err(format!(
            "route `{route}` must be a plain path: no `?`, `#`, `\\`, spaces or control characters"
        ));
    }
    let trimmed = route.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_string());
    }
    if trimmed[1..]
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(format!("route `{route}` has an empty, `.` or `..` segment"));
    }
    Ok(trimmed.to_string())
}

/// Validates a configured host name and lowercases it. Ports are not allowed:
/// routing ignores the port of the incoming Host header.
pub(crate) fn normalize_host(host: &str) -> Result<String, String> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(format!(
            "host `{host}` is not a valid host name (letters, digits, `-` and dots; no port)"
        ));
    }
    Ok(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(projects: &[(&str, &str, &[&str], bool)]) -> Router {
        let mut builder = RouterBuilder::default();
        for (index, (name, route, hosts, strip)) in projects.iter().enumerate() {
            let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
            builder
                .add(index, name, route, &hosts, *strip)
                .expect("no conflict");
        }
        builder.build()
    }

    fn target(router: &Router, host: Option<&str>, path: &str) -> Option<(usize, String)> {
        router
            .route(host, path)
            .map(|m| (m.project, m.guest_path.into_owned()))
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let r = router(&[
            ("hello", "/hello", &[], false),
            ("api", "/hello/api", &[], false),
        ]);
        assert_eq!(target(&r, None, "/hello"), Some((0, "/hello".into())));
        assert_eq!(target(&r, None, "/hello/"), Some((0, "/hello/".into())));
        assert_eq!(
            target(&r, None, "/hello/x?y"),
            Some((0, "/hello/x?y".into()))
        );
        assert_eq!(
            target(&r, None, "/hello?q=1"),
            Some((0, "/hello?q=1".into()))
        );
        assert_eq!(
            target(&r, None, "/hello/api/v1"),
            Some((1, "/hello/api/v1".into()))
        );
        assert_eq!(
            target(&r, None, "/hello/apix"),
            Some((0, "/hello/apix".into()))
        );
        assert_eq!(target(&r, None, "/helloworld"), None);
        assert_eq!(target(&r, None, "/"), None);
    }

    /// The handler hands the guest the request's own path, untouched, when
    /// the path comes back borrowed: so borrowed must mean the input itself.
    #[test]
    fn the_path_comes_back_borrowed_only_when_it_is_the_requests_own() {
        let r = router(&[
            ("kept", "/kept", &["kept.example.com"], false),
            ("cut", "/cut", &[], true),
        ]);
        for (host, path, own) in [
            (None, "/kept/x?y", true),
            (Some("kept.example.com"), "/cut/x", true),
            (None, "/cut/x?y", false),
            (None, "/cut", false),
        ] {
            let found = r.route(host, path).expect("routed");
            match found.guest_path {
                Cow::Borrowed(seen) => {
                    assert!(own, "{path}");
                    assert!(std::ptr::eq(seen, path), "{path}");
                }
                Cow::Owned(seen) => assert!(!own && seen != path, "{path} -> {seen}"),
            }
        }
    }

    #[test]
    fn strip_prefix() {
        let r = router(&[("hello", "/hello", &[], true)]);
        assert_eq!(target(&r, None, "/hello/x?y"), Some((0, "/x?y".into())));
        assert_eq!(target(&r, None, "/hello"), Some((0, "/".into())));
        assert_eq!(target(&r, None, "/hello?q"), Some((0, "/?q".into())));
        assert_eq!(target(&r, None, "/hello/"), Some((0, "/".into())));
    }

    #[test]
    fn root_route_catches_the_rest() {
        let r = router(&[("site", "/", &[], true), ("hello", "/hello", &[], false)]);
        assert_eq!(target(&r, None, "/hello/x"), Some((1, "/hello/x".into())));
        assert_eq!(target(&r, None, "/other?a"), Some((0, "/other?a".into())));
    }

    #[test]
    fn host_routing_keeps_the_path() {
        let r = router(&[
            ("hello", "/hello", &["hello.example.com"], true),
            ("echo", "/echo", &[], false),
        ]);
        assert_eq!(
            target(&r, Some("hello.localhost:8080"), "/x?y"),
            Some((0, "/x?y".into()))
        );
        assert_eq!(
            target(&r, Some("HELLO.localhost"), "/"),
            Some((0, "/".into()))
        );
        assert_eq!(
            target(&r, Some("hello.example.com."), "/a"),
            Some((0, "/a".into()))
        );
        assert_eq!(
            target(&r, Some("echo.localhost"), "/"),
            Some((1, "/".into()))
        );
        // An unknown host falls back to path routing.
        assert_eq!(
            target(&r, Some("nobody.localhost"), "/echo/1"),
            Some((1, "/echo/1".into()))
        );
        assert_eq!(target(&r, Some("[::1]:8080"), "/nothing"), None);
    }

    #[test]
    fn conflicts_are_refused_whole() {
        let mut builder = RouterBuilder::default();
        builder
            .add(0, "a", "/x", &["a.com".into()], false)
            .expect("first");
        let err = builder
            .add(1, "b", "/x", &[], false)
            .expect_err("same route");
        assert_eq!(
            err,
            Conflict {
                claim: "route `/x`".into(),
                holder: 0
            }
        );
        let err = builder
            .add(2, "c", "/c", &["a.com".into()], false)
            .expect_err("same host");
        assert_eq!(err.holder, 0);
        let err = builder
            .add(3, "d", "/d", &["a.localhost".into()], false)
            .expect_err("implicit host");
        assert_eq!(err.claim, "host `a.localhost`");
        builder.add(4, "e", "/e", &[], false).expect("unrelated");
        let r = builder.build();
        // Nothing of the refused projects was routed.
        assert_eq!(target(&r, None, "/c"), None);
        assert_eq!(target(&r, Some("c.localhost"), "/"), None);
        assert_eq!(target(&r, None, "/e"), Some((4, "/e".into())));
    }

    #[test]
    fn route_normalization() {
        assert_eq!(normalize_route("/"), Ok("/".into()));
        assert_eq!(normalize_route("//"), Ok("/".into()));
        assert_eq!(normalize_route("/a/b/"), Ok("/a/b".into()));
        for bad in ["", "a", "/a?b", "/a#b", "/a//b", "/a/../b", "/./a", "/a b"] {
            assert!(normalize_route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_normalization() {
        assert_eq!(
            normalize_host("App.Example.COM"),
            Ok("app.example.com".into())
        );
        for bad in ["", "a:80", "a b", "-a.com", "a..com", "a/b"] {
            assert!(normalize_host(bad).is_err(), "{bad}");
        }
    }
}

/// Property tests: the fuzz targets' checks, run on every `cargo test`.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary routes and requests: no panic; a match without
        /// `strip_prefix` hands the guest the request's own path, and one with
        /// it a path that starts with `/` and ends with the request's query.
        #[test]
        fn routing_keeps_or_strips_the_path(
            routes in prop::collection::vec(("/[a-z]{1,3}(/[a-z]{1,3}){0,2}", any::<bool>()), 1..6),
            path in "/[a-z/]{0,12}",
            query in prop::option::of("[a-z=&]{0,8}"),
            host in prop::option::of("[a-zA-Z0-9.:\\[\\]-]{0,20}"),
        ) {
            let mut builder = RouterBuilder::default();
            for (index, (route, strip)) in routes.iter().enumerate() {
                let _ = builder.add(index, &format!("p{index}"), route, &[], *strip);
            }
            let router = builder.build();
            let request = match &query {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            let _ = router.route(host.as_deref(), &request);
            if let Some(found) = router.route(None, &request) {
                let (route, strip) = &routes[found.project];
                prop_assert!(on_boundary(&path, &normalize_route(route).unwrap_or_default()));
                if *strip {
                    prop_assert!(found.guest_path.starts_with('/'), "{found:?}");
                    if let Some(query) = &query {
                        let expected_query = format!("?{query}");
                        prop_assert!(found.guest_path.ends_with(&expected_query), "{found:?}");
                    }
                } else {
                    prop_assert_eq!(&found.guest_path, &request);
                }
            }
        }
    }
}
