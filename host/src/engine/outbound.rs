//! What a guest may reach over HTTP: the allow-list a project's
//! `allowed_outbound_hosts` names, and the `send_request` hook that enforces
//! it. Deny by default: a project that lists nothing reaches nothing.
//!
//! Entries are spelled as Spin spells them: `scheme://host[:port]`, where the
//! scheme is `http` or `https`, `*` may stand for the first label of the host
//! (`https://*.example.com`: any subdomain, not the domain itself) or for the
//! whole host, and `*` may stand for the port. A missing port means the
//! scheme's default (80, 443).
//!
//! Whatever the list says, no guest may connect to the admin listener. That
//! check is on the addresses the name resolves to at connect time, so a name
//! that resolves to the admin address is refused too; plain HTTP then
//! connects to the very address that was checked, so a second lookup cannot
//! swap it (DNS rebinding). An HTTPS connection to the plain-HTTP admin API
//! fails its TLS handshake before any request is read.
//!
//! An outgoing request runs inside the guest's call, so it counts against
//! the incoming request's timeout: when that fires, the store and with it
//! the outgoing request are dropped, and the client gets 504.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt as _;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// One entry of `allowed_outbound_hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    /// `http` or `https`.
    scheme: String,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.example.com`: any name ending in `.example.com`.
    Subdomains(String),
    /// A name or an IP address, lowercase, IPv6 without brackets.
    Exact(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortPattern {
    Any,
    Exact(u16),
}

/// The port a URL of `scheme` means when it names none.
fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl AllowedHost {
    /// Parses `scheme://host[:port]`, saying what is wrong when it is not one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "`{text}` is not an outbound host ({why}); write it as `https://api.example.com`, `http://127.0.0.1:9000` or `https://*.example.com:*`"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("only a host and a port, no path or user"));
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| bad("unreadable host and port"))?;
        let port = match port {
            None => PortPattern::Exact(default_port(&scheme)),
            Some("*") => PortPattern::Any,
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port > 0 => PortPattern::Exact(port),
                _ => return Err(bad("the port must be 1 to 65535, or *")),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if !valid_name(domain) {
                return Err(bad("`*` may only stand for the first label"));
            }
            HostPattern::Subdomains(domain.to_string())
        } else if host.parse::<IpAddr>().is_ok() || valid_name(&host) {
            HostPattern::Exact(host)
        } else {
            return Err(bad("the host is not a name or an IP address"));
        };
        Ok(Self { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_matches = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
        };
        let port_matches = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(exact) => exact == port,
        };
        self.scheme == scheme && host_matches && port_matches
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Subdomains(domain) => write!(f, "*.{domain}")?,
            HostPattern::Exact(host) if host.contains(':') => write!(f, "[{host}]")?,
            HostPattern::Exact(host) => f.write_str(host)?,
        }
        match self.port {
            PortPattern::Any => f.write_str(":*"),
            PortPattern::Exact(port) => write!(f, ":{port}"),
        }
    }
}

/// `host[:port]` or `[v6][:port]` → host (without brackets) and port text.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        None => Some((authority, None)),
        Some((_, port)) if port.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
    }
}

/// A DNS name: dot-separated labels of letters, digits and `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A project's allow-list. Empty (the default) allows nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allowed: Vec<AllowedHost>,
}

impl OutboundPolicy {
    /// A policy allowing exactly `allowed`.
    pub fn new(allowed: Vec<AllowedHost>) -> Self {
        Self { allowed }
    }

    /// The entries, as the manifest listed them.
    pub fn entries(&self) -> &[AllowedHost] {
        &self.allowed
    }

    /// Whether a request to `scheme://host:port` is allowed. `host` is
    /// compared lowercase, with IPv6 brackets and a trailing dot removed.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let scheme = scheme.to_ascii_lowercase();
        self.allowed
            .iter()
            .any(|entry| entry.matches(&scheme, &host, port))
    }
}

/// Refused outgoing requests of one project: counted, and logged at most
/// once a second so a guest cannot flood the log.
#[derive(Debug, Default)]
pub struct Denials {
    /// Outgoing requests refused so far.
    count: AtomicU64,
    /// When a refusal was last logged, in milliseconds since the Unix epoch.
    last_logged_ms: AtomicU64,
}

impl Denials {
    /// How many outgoing requests were refused.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts one refusal; true when it should be logged (none was in the
    /// last second).
    fn record(&self) -> bool {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1000
            && self
                .last_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Most outgoing requests one instance may have under way at once, from
/// sending until their connection ends (once the response body is read to
/// its end, or dropped); more fail at once with `connection-limit-reached`.
/// Each takes a DNS lookup on the blocking pool and a socket, which the rest
/// of the host needs too. When a request ends, one still under way ends with
/// the request's state: an instance reset in place gets new state, and one
/// kept as is (`reuse`) is not kept while one is under way
/// (`RequestState::request_left_over`). So this is a limit per incoming
/// request.
const MAX_OUTGOING: usize = 16;

/// How long resolving an outgoing request's host may take.
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The `wasi:http` hooks of one request: its project's allow-list, the
/// addresses no guest may reach, and where refusals are counted.
pub struct OutboundHooks {
    /// The project, for the log line of a refusal.
    project: Arc<str>,
    /// The version, for the log line of a refusal.
    version: u64,
    /// What the project may reach.
    policy: Arc<OutboundPolicy>,
    /// Listeners no guest may connect to (the admin API), whatever the list says.
    forbidden: Arc<[SocketAddr]>,
    /// Where refusals are counted and rate-limited.
    denials: Arc<Denials>,
    /// Outgoing requests under way for this incoming request; made by the
    /// first one, so requests that send none (most) allocate nothing here.
    under_way: Option<Arc<tokio::sync::Semaphore>>,
}

impl OutboundHooks {
    /// The hooks of one request of `project` version `version`.
    pub fn new(
        project: Arc<str>,
        version: u64,
        policy: Arc<OutboundPolicy>,
        forbidden: Arc<[SocketAddr]>,
        denials: Arc<Denials>,
    ) -> Self {
        Self {
            project,
            version,
            policy,
            forbidden,
            denials,
            under_way: None,
        }
    }

    /// The hooks of the next request of the same instance: none of the
    /// last one's outgoing requests counts against it (those still under
    /// way keep their own hold on the old count).
    pub(crate) fn renew(&mut self) {
        self.under_way = None;
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    hyper::http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl OutboundHooks {
    /// Whether an outgoing request of this instance is still under way: its
    /// connection holds a socket and one of [`MAX_OUTGOING`] slots. A
    /// connection whose response the guest dropped ends on its task's next
    /// turn, not at once.
    pub(crate) fn any_under_way(&self) -> bool {
        self.under_way
            .as_ref()
            .is_some_and(|slots| slots.available_permits() < MAX_OUTGOING)
    }

    /// What logging a refusal of a request to `authority` needs.
    fn refusal(&self, authority: String) -> Refusal {
        Refusal {
            project: self.project.clone(),
            version: self.version,
            denials: self.denials.clone(),
            authority,
        }
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        mut request: hyper::http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let Some(host) = uri.host() else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        let port = uri.port_u16().unwrap_or_else(|| default_port(&scheme));
        let authority = uri
            .authority()
            .map_or_else(String::new, |a| a.as_str().to_string());
        let refusal = self.refusal(authority);
        if !self.policy.allows(&scheme, host, port) {
            let denied = refusal.deny("not in the project's allowed_outbound_hosts");
            return Box::new(async move { Err(denied) });
        }
        let under_way = self
            .under_way
            .get_or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_OUTGOING)));
        let Ok(slot) = under_way.clone().try_acquire_owned() else {
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };
        let lookup = format!(
            "{}:{port}",
            host.trim_start_matches('[').trim_end_matches(']')
        );
        let forbidden = self.forbidden.clone();
        Box::new(async move {
            let resolved: Vec<SocketAddr> =
                tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host(&lookup))
                    .await
                    .map_err(|_| Error::DnsTimeout)?
                    .map_err(|err| Error::DnsError {
                        rcode: Some(err.to_string()),
                        info_code: None,
                    })?
                    .collect();
            let Some(first) = resolved.first().copied() else {
                return Err(Error::DestinationNotFound);
            };
            if let Some(hit) = resolved.iter().find(|addr| reaches_any(**addr, &forbidden)) {
                return Err(refusal.deny(&format!("{hit} is the admin API")));
            }
            if scheme == "http" {
                // Connect to the very address that was checked.
                let mut parts = request.uri().clone().into_parts();
                parts.authority = Some(
                    first
                        .to_string()
                        .parse()
                        .map_err(|_| Error::HttpRequestUriInvalid)?,
                );
                *request.uri_mut() = hyper::http::Uri::from_parts(parts)
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            // The slot goes with the connection, not with the response head:
            // the connection (and its socket) lives until the guest has read
            // or dropped the response. Released at the head, a guest that
            // kept its responses could open sockets without end and take the
            // whole host's file descriptors.
            let io = async move {
                let done = io.await;
                drop(slot);
                done
            };
            Ok((
                response.map(|body| body.boxed_unsync()),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// What a refusal found after the lookup needs to log it.
struct Refusal {
    project: Arc<str>,
    version: u64,
    denials: Arc<Denials>,
    authority: String,
}

impl Refusal {
    /// Counts the refusal, logs it unless one was logged in the last second,
    /// and returns the error the guest sees.
    fn deny(&self, why: &str) -> Error {
        if self.denials.record() {
            tracing::warn!(
                project = &*self.project,
                version = self.version,
                authority = %self.authority,
                "{}: v{} outgoing request to {} refused: {why} (further refusals this second are not logged)",
                self.project,
                self.version,
                self.authority
            );
        }
        Error::HttpRequestDenied
    }
}

/// Whether connecting to `target` can reach one of `listeners`. Deliberately
/// broad: a wildcard listener is reached through any local address, a
/// connection to `0.0.0.0` or `::` reaches local listeners, and any loopback
/// address counts as the same host.
fn reaches_any(target: SocketAddr, listeners: &[SocketAddr]) -> bool {
    let ip = canonical(target.ip());
    listeners.iter().any(|listener| {
        let listening = canonical(listener.ip());
        listener.port() == target.port()
            && (listening == ip
                || listening.is_unspecified()
                || ip.is_unspecified()
                || (listening.is_loopback() && ip.is_loopback()))
    })
}

/// An IPv4-mapped IPv6 address as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(
            entries
                .iter()
                .map(|entry| AllowedHost::parse(entry).expect("valid entry"))
                .collect(),
        )
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = OutboundPolicy::default();
        assert!(!none.allows("http", "127.0.0.1", 80));
        assert!(!none.allows("https", "example.com", 443));
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        let p = policy(&[
            "http://127.0.0.1:9000",
            "https://api.example.com",
            "https://*.example.org",
            "http://any.port.test:*",
            "http://[::1]:8000/",
        ]);
        assert!(p.allows("http", "127.0.0.1", 9000));
        assert!(!p.allows("http", "127.0.0.1", 9001));
        assert!(!p.allows("https", "127.0.0.1", 9000), "scheme must match");
        assert!(p.allows("https", "API.Example.com", 443));
        assert!(p.allows("https", "api.example.com.", 443));
        assert!(
            !p.allows("https", "api.example.com", 8443),
            "default port only"
        );
        assert!(!p.allows("http", "api.example.com", 80));
        assert!(p.allows("https", "a.example.org", 443));
        assert!(p.allows("https", "a.b.example.org", 443));
        assert!(
            !p.allows("https", "example.org", 443),
            "not the domain itself"
        );
        assert!(!p.allows("https", "badexample.org", 443));
        assert!(p.allows("http", "any.port.test", 1));
        assert!(p.allows("http", "any.port.test", 65535));
        assert!(p.allows("http", "[::1]", 8000));
        assert!(p.allows("http", "::1", 8000));
        let all = policy(&["https://*:*"]);
        assert!(all.allows("https", "anything.at.all", 1));
        assert!(!all.allows("http", "anything.at.all", 1));
    }

    #[test]
    fn malformed_entries_say_why() {
        for (entry, why) in [
            ("example.com", "no scheme"),
            ("ftp://example.com", "http or https"),
            ("https://example.com/path", "no path"),
            ("https://user@example.com", "no path or user"),
            ("https://api.*.example.com", "not a name"),
            ("https://*example.com", "not a name"),
            ("https://example.com:0", "1 to 65535"),
            ("https://example.com:99999", "1 to 65535"),
            ("https://::1", "unreadable"),
            ("https://", "no path or user"),
        ] {
            let err = AllowedHost::parse(entry).expect_err(entry);
            assert!(err.contains(why) && err.contains(entry), "{entry}: {err}");
        }
    }

    #[test]
    fn entries_display_as_written_with_their_port() {
        for (entry, shown) in [
            ("https://api.example.com", "https://api.example.com:443"),
            ("HTTP://Example.com:*", "http://example.com:*"),
            ("http://[::1]:80", "http://[::1]:80"),
            ("https://*.example.com", "https://*.example.com:443"),
        ] {
            assert_eq!(AllowedHost::parse(entry).expect(entry).to_string(), shown);
        }
    }

    #[test]
    fn the_admin_listener_is_reached_through_any_spelling() {
        let admin: SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let reaches = |target: &str| reaches_any(target.parse().expect("addr"), &[admin]);
        assert!(reaches("127.0.0.1:8081"));
        assert!(reaches("127.0.0.2:8081"));
        assert!(reaches("0.0.0.0:8081"));
        assert!(reaches("[::ffff:127.0.0.1]:8081"));
        assert!(reaches("[::1]:8081"));
        assert!(!reaches("127.0.0.1:8080"));
        assert!(!reaches("192.0.2.1:8081"));
        let wildcard: SocketAddr = "0.0.0.0:8081".parse().expect("addr");
        assert!(reaches_any(
            "192.0.2.1:8081".parse().expect("addr"),
            &[wildcard]
        ));
    }

    fn get(uri: &str) -> hyper::http::Request<WasiBody> {
        let body = http_body_util::Empty::new()
            .map_err(|never: std::convert::Infallible| match never {})
            .boxed_unsync();
        hyper::http::Request::get(uri).body(body).expect("request")
    }

    #[tokio::test]
    async fn one_request_has_at_most_a_bounded_number_of_outgoing_requests_under_way() {
        let mut hooks = OutboundHooks::new(
            "p".into(),
            1,
            Arc::new(policy(&["http://127.0.0.1:9"])),
            Arc::from([]),
            Arc::default(),
        );
        // Each takes its slot when made, before it is polled.
        let under_way: Vec<_> = (0..MAX_OUTGOING)
            .map(|_| {
                hooks.send_request(get("http://127.0.0.1:9/"), None, Box::new(async { Ok(()) }))
            })
            .collect();
        let one_more =
            hooks.send_request(get("http://127.0.0.1:9/"), None, Box::new(async { Ok(()) }));
        assert!(matches!(
            Box::into_pin(one_more).await,
            Err(Error::ConnectionLimitReached)
        ));
        drop(under_way);
        let refused = hooks.send_request(
            get("http://127.0.0.1:10/"),
            None,
            Box::new(async { Ok(()) }),
        );
        assert!(matches!(
            Box::into_pin(refused).await,
            Err(Error::HttpRequestDenied)
        ));
        let after =
            hooks.send_request(get("http://127.0.0.1:9/"), None, Box::new(async { Ok(()) }));
        // A slot again: the request goes out (and fails to connect to the
        // discard port), it is not refused for the limit.
        assert!(!matches!(
            Box::into_pin(after).await,
            Err(Error::ConnectionLimitReached | Error::HttpRequestDenied)
        ));
    }

    /// An HTTP server on 127.0.0.1:0 answering every request with a body too
    /// big for the client's buffers, so the connection lives until it is read.
    async fn upstream() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; 8 << 20])),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// A guest that keeps its responses unread keeps their connections open,
    /// so each keeps its slot: otherwise it could open sockets without end.
    /// (A short body is read whole with the head, and its connection ends at
    /// once, socket and slot with it.)
    #[tokio::test]
    async fn an_unread_response_keeps_its_slot_until_it_is_dropped() {
        let addr = upstream().await;
        let mut hooks = OutboundHooks::new(
            "p".into(),
            1,
            Arc::new(policy(&[&format!("http://{addr}")])),
            Arc::from([]),
            Arc::default(),
        );
        let url = format!("http://{addr}/");
        let mut kept = Vec::new();
        for _ in 0..MAX_OUTGOING {
            let (response, io) =
                Box::into_pin(hooks.send_request(get(&url), None, Box::new(async { Ok(()) })))
                    .await
                    .expect("an allowed request is answered");
            // As wasmtime-wasi-http does: the connection runs on its own task.
            let io = tokio::spawn(Box::into_pin(io));
            kept.push((response, io));
        }
        let one_more = hooks.send_request(get(&url), None, Box::new(async { Ok(()) }));
        assert!(matches!(
            Box::into_pin(one_more).await,
            Err(Error::ConnectionLimitReached)
        ));
        assert!(hooks.any_under_way());
        // Dropping one response ends its connection and gives its slot back.
        let (response, io) = kept.pop().expect("one kept");
        drop(response);
        // Cut short, the connection may end with an error: either way it ends.
        let _ended = tokio::time::timeout(std::time::Duration::from_secs(60), io)
            .await
            .expect("the connection ends once its response is dropped")
            .expect("the connection task");
        let again = hooks.send_request(get(&url), None, Box::new(async { Ok(()) }));
        let again = Box::into_pin(again).await.expect("a slot again");
        // Once every response is dropped and its connection has ended,
        // nothing is under way.
        drop(again);
        for (response, io) in kept {
            drop(response);
            let _ended = tokio::time::timeout(std::time::Duration::from_secs(60), io).await;
        }
        assert!(
            wait_until(|| !hooks.any_under_way()).await,
            "slots still held after every connection ended"
        );
    }

    /// Polls `done` every 10 ms for up to 60 s.
    async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..6000 {
            if done() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn refusals_are_logged_at_most_once_a_second() {
        let denials = Denials::default();
        let logged = (0..100).filter(|_| denials.record()).count();
        assert_eq!(logged, 1);
        assert_eq!(denials.count(), 100);
    }
}

/// Property tests of the matcher.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text parses or says why, never panics; what parses shows as
        /// an entry that parses back to itself.
        #[test]
        fn any_entry_parses_or_errors(text in "[a-zA-Z0-9:/.*\\[\\]@?#-]{0,40}") {
            if let Ok(entry) = AllowedHost::parse(&text) {
                let shown = entry.to_string();
                prop_assert_eq!(AllowedHost::parse(&shown), Ok(entry));
            }
        }

        /// An exact entry allows its own host and port and nothing one label
        /// or one port away; a wildcard entry allows every subdomain.
        #[test]
        fn exact_and_wildcard_entries(
            labels in prop::collection::vec("[a-z][a-z0-9]{0,8}", 1..4),
            port in 1u16..,
            other_port in 1u16..,
            sub in "[a-z]{1,8}",
        ) {
            let host = labels.join(".");
            let subdomain = format!("{sub}.{host}");
            let exact = OutboundPolicy::new(vec![
                AllowedHost::parse(&format!("http://{host}:{port}")).map_err(TestCaseError::fail)?,
            ]);
            prop_assert!(exact.allows("http", &host, port));
            prop_assert!(!exact.allows("https", &host, port));
            prop_assert!(!exact.allows("http", &subdomain, port));
            prop_assert_eq!(exact.allows("http", &host, other_port), other_port == port);
            let wildcard = OutboundPolicy::new(vec![
                AllowedHost::parse(&format!("http://*.{host}:*")).map_err(TestCaseError::fail)?,
            ]);
            prop_assert!(wildcard.allows("http", &subdomain, other_port));
            prop_assert!(!wildcard.allows("http", &host, other_port));
        }
    }
}
