//! The test DSL: a fresh projects folder per test, the real wasmhost binary
//! spawned on 127.0.0.1:0 (through `wasmhost_tests::process`, which the
//! benchmarks use too; killed on drop), and a small HTTP client.
//!
//! ```ignore
//! let host = TestHost::new().project("hello", guests::HELLO).spawn();
//! assert_eq!(host.get("/hello").await.text(), "Hello, world!\n");
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use wasmhost_tests::process::{Process, wait_until_loaded, wasmhost_listening};

/// How long anything a test waits for may take before the test fails. Generous:
/// CI machines are small and busy; a pass never waits this long.
pub(crate) const DEADLINE: Duration = Duration::from_secs(90);

/// How long a wait that includes compiling a component may take: a deploy
/// answers, a host is loaded and a project's version goes live only once
/// its component has compiled, and compiles yield to requests (`SCHED_IDLE`
/// for the first 30 s of `--compile-patience`). Beside two busy loops an
/// 18 MB component's deploy took 45–48 s on this 2-core machine. In
/// clean-clone CI runs, with other tests beside them, one deploy took over
/// [`DEADLINE`], and so did a host loading the Python and JavaScript
/// examples: compiles run one at a time, and the 14 MB JavaScript one alone
/// took 65 s, so the Python one had not finished within 90 s.
pub(crate) const COMPILE_DEADLINE: Duration = Duration::from_secs(300);

/// Request workers a test host runs unless the test says otherwise: more
/// than one, so races between workers can show in every test.
pub(crate) const WORKERS: usize = 2;

/// A request body a test can build from bytes or a stream of chunks.
pub(crate) type TestBody = BoxBody<Bytes, std::io::Error>;

/// A projects folder being prepared, and the flags the host will get.
pub(crate) struct TestHost {
    dir: TempDir,
    /// A compile cache of this test's own, so tests never share or pollute
    /// the user's cache; a restart test hands it to the next host.
    cache: Arc<TempDir>,
    args: Vec<String>,
    /// Environment variables the host gets.
    envs: Vec<(String, String)>,
}

impl TestHost {
    /// An empty projects folder in a fresh temporary directory.
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("failed to create a temp dir"),
            cache: Arc::new(tempfile::tempdir().expect("failed to create a temp dir")),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// The projects folder.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A folder project `NAME/` holding a copy of `guest` as `NAME.wasm`.
    pub(crate) fn project(self, name: &str, guest: &str) -> Self {
        let path = self.dir().join(name).join(format!("{name}.wasm"));
        self.copy(&path, guest)
    }

    /// A one-file project `NAME.wasm`.
    pub(crate) fn file_project(self, name: &str, guest: &str) -> Self {
        let path = self.dir().join(format!("{name}.wasm"));
        self.copy(&path, guest)
    }

    /// Writes `NAME/wasmhost.toml`.
    pub(crate) fn manifest(self, name: &str, toml: &str) -> Self {
        self.write(&format!("{name}/wasmhost.toml"), toml.as_bytes())
    }

    /// Writes any file under the projects folder.
    pub(crate) fn write(self, relative: &str, contents: &[u8]) -> Self {
        let path = self.dir().join(relative);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write file");
        self
    }

    /// An extra command-line flag for `wasmhost serve`.
    pub(crate) fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    fn copy(self, path: &Path, guest: &str) -> Self {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::copy(guest, path).expect("copy guest");
        self
    }

    /// The `wasmhost serve` command for this folder on port 0, not started.
    ///
    /// With [`WORKERS`] request workers unless the test sets `--workers`, so
    /// every test runs its requests on more than one thread and a race
    /// between workers can show.
    pub(crate) fn command(&self) -> Command {
        let mut command = wasmhost();
        command
            .arg("serve")
            .arg(self.dir())
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--cache-dir")
            .arg(self.cache.path());
        if !self.args.iter().any(|arg| arg.starts_with("--workers")) {
            command.arg(format!("--workers={WORKERS}"));
        }
        command.args(&self.args).stdout(Stdio::null());
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Sets an environment variable for the host.
    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.to_string(), value.to_string()));
        self
    }

    /// Starts the host and waits until it has loaded every project
    /// (`/readyz` answers 200): until every component compiled.
    pub(crate) fn spawn(self) -> RunningHost {
        let mut process = Process::spawn(self.command()).expect("failed to spawn wasmhost");
        let (addr, admin) = wait_until_loaded(&mut process, COMPILE_DEADLINE)
            .unwrap_or_else(|err| panic!("wasmhost never became ready: {err}"));
        self.running(process, addr, admin)
    }

    /// Starts the host and returns as soon as it listens, with projects
    /// possibly still loading.
    pub(crate) fn spawn_listening(self) -> RunningHost {
        let mut process = Process::spawn(self.command()).expect("failed to spawn wasmhost");
        let (addr, admin) = process
            .wait_for(DEADLINE, wasmhost_listening)
            .unwrap_or_else(|err| panic!("wasmhost never listened: {err}"));
        self.running(process, addr, admin)
    }

    fn running(self, process: Process, addr: SocketAddr, admin: SocketAddr) -> RunningHost {
        RunningHost {
            cache: self.cache,
            process,
            addr,
            admin,
            dir: self.dir,
        }
    }
}

/// An editor's save: a temp file in the same folder, renamed over the target.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) {
    let dir = path.parent().expect("parent");
    std::fs::create_dir_all(dir).expect("mkdir");
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("name").to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A loopback address with a port the OS just picked as free, for a child
/// process (a registry, HAProxy, chromedriver) that binds by itself. The
/// port is released first, so another process could take it meanwhile: a
/// small race, as the child's own error would then say.
pub(crate) fn free_loopback_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// Waits until `GET path` on `addr` answers with a status `accept` takes:
/// a child server is up.
pub(crate) async fn wait_until_answering(
    what: &str,
    addr: SocketAddr,
    path: &str,
    accept: impl Fn(StatusCode) -> bool,
) {
    eventually(what, || async {
        match try_send(addr, request("GET", "localhost", path, empty())).await {
            Ok(reply) if accept(reply.status) => Ok(()),
            Ok(reply) => Err(format!("{}: {}", reply.status, reply.text())),
            Err(err) => Err(err.to_string()),
        }
    })
    .await;
}

/// Polls `check` until it returns `Ok`, and returns that value. `Err` carries
/// a description of what was seen last, printed if [`DEADLINE`] passes.
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    eventually_within(DEADLINE, what, check).await
}

/// [`eventually`], waiting up to `deadline` (such as [`COMPILE_DEADLINE`]).
pub(crate) async fn eventually_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if started.elapsed() > deadline => panic!("never {what}; last seen: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// What /proc says about one thread of a wasmhost process.
#[derive(Debug)]
pub(crate) struct ThreadStat {
    pub(crate) nice: i64,
    /// Scheduling policy: 0 is SCHED_OTHER, [`SCHED_IDLE`] the idle one.
    pub(crate) policy: u64,
    /// User plus system CPU time, in clock ticks (1/100 s on Linux).
    pub(crate) cpu_ticks: u64,
}

/// Linux's number for the `SCHED_IDLE` scheduling policy.
pub(crate) const SCHED_IDLE: u64 = 5;

/// Every thread of `pid` whose name is `name` (Linux truncates thread names
/// to 15 bytes).
pub(crate) fn threads_named(pid: u32, name: &str) -> Vec<ThreadStat> {
    tasks_named(pid, name)
        .into_iter()
        .filter_map(|task| thread_stat(pid, task.file_name().to_str()?.parse().ok()?))
        .collect()
}

/// The /proc task folder of every thread of `pid` named `name`.
pub(crate) fn tasks_named(pid: u32, name: &str) -> Vec<std::fs::DirEntry> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// Thread `tid` of process `pid`, from /proc.
pub(crate) fn thread_stat(pid: u32, tid: u32) -> Option<ThreadStat> {
    let fields = stat_fields(&format!("/proc/{pid}/task/{tid}/stat"))?;
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    Some(ThreadStat {
        nice: fields.get(19 - 3)?.parse().ok()?,
        policy: field(41)?,
        cpu_ticks: field(14)? + field(15)?,
    })
}

/// The minor page faults process `pid` has taken, all threads together
/// (`/proc/PID/stat` field 10).
pub(crate) fn minor_faults(pid: u32) -> Option<u64> {
    stat_fields(&format!("/proc/{pid}/stat"))?
        .get(10 - 3)?
        .parse()
        .ok()
}

/// The fields of a /proc `stat` line from field 3 (the state) on: what
/// follows `(comm)`, which may itself hold spaces (`man 5 proc`).
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// The wasmhost binary with a quiet, uncoloured, info-level log and no stdin.
pub(crate) fn wasmhost() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmhost-under-test"));
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("WASMHOST_LISTEN")
        .env_remove("WASMHOST_ADMIN_LISTEN")
        .env_remove("WASMHOST_ADMIN_TOKEN")
        .env_remove("WASMHOST_ADMIN_TOKEN_FILE")
        .env_remove("WASMHOST_WORKERS")
        // Registry credentials only where a test gives them.
        .env_remove("WASMHOST_REGISTRY_USERNAME")
        .env_remove("WASMHOST_REGISTRY_PASSWORD")
        .env_remove("WASMHOST_REGISTRY")
        .env("DOCKER_CONFIG", "/nonexistent/wasmhost-tests")
        .stdin(Stdio::null());
    command
}

/// A running wasmhost; killed when dropped.
pub(crate) struct RunningHost {
    process: Process,
    /// The project listener.
    pub(crate) addr: SocketAddr,
    /// The admin listener.
    pub(crate) admin: SocketAddr,
    /// Kept so the projects folder lives exactly as long as the host.
    dir: TempDir,
    cache: Arc<TempDir>,
}

impl RunningHost {
    /// Everything the host printed to stderr so far.
    pub(crate) fn log(&self) -> String {
        self.process.log()
    }

    /// The host's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The projects folder.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The compile cache folder (`--cache-dir`).
    pub(crate) fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// Stops this host and starts a new one on the same projects folder and
    /// compile cache, with the flags `extra`.
    pub(crate) fn restart(mut self, extra: &[&str]) -> RunningHost {
        self.process.kill();
        let mut args: Vec<String> = Vec::new();
        for arg in extra {
            args.push(arg.to_string());
        }
        let next = TestHost {
            dir: tempfile::tempdir().expect("placeholder temp dir"),
            cache: self.cache.clone(),
            args,
            envs: Vec::new(),
        };
        // Move the projects folder over: the new host serves the same files.
        let dir = std::mem::replace(&mut self.dir, next.dir);
        TestHost { dir, ..next }.spawn()
    }

    /// Waits until the log contains `needle`, and returns the log.
    pub(crate) async fn wait_for_log(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "log never showed {needle:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET `path` on the project listener.
    pub(crate) async fn get(&self, path: &str) -> Reply {
        send(self.addr, request("GET", "localhost", path, empty())).await
    }

    /// GET `path` with the given Host header.
    pub(crate) async fn get_with_host(&self, host: &str, path: &str) -> Reply {
        send(self.addr, request("GET", host, path, empty())).await
    }

    /// GET `path` on the admin listener.
    pub(crate) async fn admin_get(&self, path: &str) -> Reply {
        send(self.admin, request("GET", "localhost", path, empty())).await
    }

    /// An admin request with a body.
    pub(crate) async fn admin(&self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        send(self.admin, admin_request(method, path, body)).await
    }

    /// Deploys `component` as project `name` through the admin API.
    pub(crate) async fn deploy(&self, name: &str, component: &[u8]) -> Reply {
        let request = admin_request("PUT", &format!("/projects/{name}"), component.to_vec());
        send_within(COMPILE_DEADLINE, self.admin, request).await
    }

    /// Deploys `component` with `config` as its wasmhost.toml, as
    /// `wasmhost deploy --config` sends it (multipart/form-data).
    pub(crate) async fn deploy_with_config(
        &self,
        name: &str,
        component: &[u8],
        config: &str,
    ) -> Reply {
        let boundary = "wasmhost-test-boundary-1f2e";
        let body = wasmhost::admin::multipart::encode(
            boundary,
            &[
                ("component", "application/wasm", component),
                ("config", "application/toml", config.as_bytes()),
            ],
        );
        let mut request = admin_request("PUT", &format!("/projects/{name}"), body);
        request.headers_mut().insert(
            "content-type",
            format!("multipart/form-data; boundary={boundary}")
                .parse()
                .expect("valid header"),
        );
        send_within(COMPILE_DEADLINE, self.admin, request).await
    }

    /// Deploys the guest at `path` as project `name`, insisting it goes live.
    pub(crate) async fn deploy_guest(&self, name: &str, path: &str) -> serde_json::Value {
        let reply = self
            .deploy(name, &std::fs::read(path).expect("read guest"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    /// Polls the admin object of `name` until `check` holds, and returns it.
    /// Waits up to [`COMPILE_DEADLINE`], since many of these waits end when
    /// a compile does; a check that never holds takes that long to fail.
    pub(crate) async fn wait_for_project(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually_within(COMPILE_DEADLINE, &format!("{name}: {what}"), || async {
            let project = self.admin_project(name).await;
            if check(&project) {
                Ok(project)
            } else {
                Err(format!("{project:#}\n{}", self.log()))
            }
        })
        .await
    }

    /// The admin API's object for `name`.
    pub(crate) async fn admin_project(&self, name: &str) -> serde_json::Value {
        let reply = self.admin_get(&format!("/projects/{name}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    /// Sends SIGTERM, as a service manager would.
    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("failed to run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit by itself.
    pub(crate) async fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "wasmhost did not exit:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A response, fully read.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Status code.
    pub(crate) status: StatusCode,
    /// Response headers.
    pub(crate) headers: HeaderMap,
    /// The whole body.
    pub(crate) body: Bytes,
}

impl Reply {
    /// The body as UTF-8 text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text()))
    }
}

/// An empty request body.
pub(crate) fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A request with the given method, Host header, path and body.
pub(crate) fn request(method: &str, host: &str, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(body)
        .expect("valid request")
}

/// Sends `request` to `addr` on a new connection and reads the whole response.
pub(crate) async fn send(addr: SocketAddr, request: Request<TestBody>) -> Reply {
    send_within(DEADLINE, addr, request).await
}

/// Like [`send`], failing the test only after `deadline`.
pub(crate) async fn send_within(
    deadline: Duration,
    addr: SocketAddr,
    request: Request<TestBody>,
) -> Reply {
    tokio::time::timeout(deadline, try_send(addr, request))
        .await
        .unwrap_or_else(|_| panic!("no response from {addr} in time"))
        .unwrap_or_else(|err| panic!("request to {addr} failed: {err}"))
}

/// Like [`send`], but returns connection errors instead of panicking.
pub(crate) async fn try_send(
    addr: SocketAddr,
    request: Request<TestBody>,
) -> Result<Reply, BoxError> {
    Connection::try_open(addr).await?.send(request).await
}

/// A PUT/POST/DELETE to an admin API at `admin`, with a wasm body.
pub(crate) fn admin_request(method: &str, path: &str, body: Vec<u8>) -> Request<TestBody> {
    let mut request = request(method, "localhost", path, full(body));
    request
        .headers_mut()
        .insert("content-type", "application/wasm".parse().expect("valid"));
    request
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One keep-alive HTTP/1.1 connection, for tests that care which requests
/// share a connection.
pub(crate) struct Connection {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
}

impl Connection {
    /// Opens a connection to `addr`.
    pub(crate) async fn open(addr: SocketAddr) -> Self {
        Self::try_open(addr).await.expect("connect")
    }

    async fn try_open(addr: SocketAddr) -> Result<Self, BoxError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// GET `path` on this connection and read the whole response.
    pub(crate) async fn get(&mut self, path: &str) -> Result<Reply, BoxError> {
        self.send(request("GET", "localhost", path, empty())).await
    }

    /// Sends `request` on this connection and reads the whole response.
    async fn send(&mut self, request: Request<TestBody>) -> Result<Reply, BoxError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Connections that keep requesting `/app/x` of a project `app` while a test
/// swaps it between hello (odd versions) and echo (even versions), stopped
/// by [`SwapTraffic::finish`].
///
/// Each answer must be 200, whole from the build its `wasmhost-version`
/// names, and never from an older version than the one before it on the
/// same connection.
pub(crate) struct SwapTraffic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Result<Vec<u64>, String>>>,
}

impl SwapTraffic {
    /// Opens `connections` connections to `addr` and starts requesting.
    pub(crate) fn start(addr: SocketAddr, connections: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..connections)
            .map(|_| tokio::spawn(swap_client(addr, stop.clone())))
            .collect();
        Self { stop, clients }
    }

    /// Deploys project `app` `swaps` times on `host`, echo and hello in
    /// turns (so version `n + 1` is echo when `n` is odd), insisting each goes
    /// live, with `pause` between deploys to let traffic see each version.
    pub(crate) async fn swap(&self, host: &RunningHost, swaps: u64, pause: Duration) {
        let hello = std::fs::read(wasmhost_tests::guests::HELLO).expect("read hello");
        let echo = std::fs::read(wasmhost_tests::guests::ECHO).expect("read echo");
        for swap in 1..=swaps {
            let bytes = if swap % 2 == 1 { &echo } else { &hello };
            let reply = host.deploy("app", bytes).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.json()["live_version"], swap + 1);
            tokio::time::sleep(pause).await;
        }
    }

    /// Stops the connections; how many answers they got and which versions
    /// gave them. Panics on the first bad answer any connection saw.
    pub(crate) async fn finish(self) -> (usize, std::collections::BTreeSet<u64>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut answers = 0;
        let mut versions = std::collections::BTreeSet::new();
        for client in self.clients {
            let seen = client
                .await
                .expect("client task")
                .unwrap_or_else(|err| panic!("{err}"));
            assert!(!seen.is_empty(), "a connection got no answer at all");
            answers += seen.len();
            versions.extend(seen);
        }
        (answers, versions)
    }
}

/// One connection of [`SwapTraffic`]: the versions it saw, in order.
async fn swap_client(
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<u64>, String> {
    let answers = versioned_answers(addr, stop, Duration::ZERO).await?;
    for (version, reply) in &answers {
        let whole = if version % 2 == 1 {
            reply.text() == "Hello, world!\n"
        } else {
            reply.header("echo-path") == Some("/app/x") && reply.body.is_empty()
        };
        if !whole {
            return Err(format!(
                "v{version} answered like the other build: {reply:?}"
            ));
        }
    }
    Ok(answers.into_iter().map(|(version, _)| version).collect())
}

/// Requests `/app/x` on one connection until `stop`, `pause` apart, and
/// returns every answer with the version that gave it. Fails on the first
/// answer that is not 200, names no version, or comes from an older
/// version than the one before it.
pub(crate) async fn versioned_answers(
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    pause: Duration,
) -> Result<Vec<(u64, Reply)>, String> {
    let mut connection = Connection::open(addr).await;
    let mut seen: Vec<(u64, Reply)> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let reply = connection
            .get("/app/x")
            .await
            .map_err(|err| format!("request failed: {err}"))?;
        if reply.status != StatusCode::OK {
            return Err(format!("status {}: {}", reply.status, reply.text()));
        }
        let version: u64 = reply
            .header("wasmhost-version")
            .and_then(|v| v.parse().ok())
            .ok_or("no version header")?;
        if let Some((last, _)) = seen.last().filter(|(last, _)| *last > version) {
            return Err(format!("went back from v{last} to v{version}"));
        }
        seen.push((version, reply));
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(seen)
}
