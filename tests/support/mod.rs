//! Test harness: real processes and sockets on loopback. The gateway runs
//! as the real binary with a config written to a temporary directory.
#![allow(dead_code)]

pub mod demo;
pub mod flaky;
pub mod idp;
pub mod own_postgres;
pub mod rogue;
pub mod yaml;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Polls `check` until it answers `Some`, at most `within`; panics saying
/// `what` did not happen. The one way tests wait for something: never a
/// sleep of a guessed length.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A loopback port held bound but not listening for as long as the value
/// lives: connections to it are refused (a dead upstream, an IdP that is
/// down), and nobody else can take it. [`Reserved::listen`] hands the
/// same socket over to a server when the test wants it up.
pub struct Reserved(socket2::Socket);

impl Reserved {
    pub fn new() -> Reserved {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        Reserved(s)
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().as_socket().unwrap().port()
    }

    /// Starts listening on the reserved port: a tokio listener for a server.
    pub fn listen(self) -> tokio::net::TcpListener {
        self.0.listen(128).unwrap();
        self.0.set_nonblocking(true).unwrap();
        tokio::net::TcpListener::from_std(self.0.into()).unwrap()
    }
}

impl Reserved {
    /// [`Reserved::new`] with `SO_REUSEPORT`: a server that binds with it
    /// too (Caddy does) can take the port while this value holds it, and
    /// nobody else can. The reservation never receives a connection.
    pub fn shared() -> Reserved {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        Reserved(s)
    }
}

impl Default for Reserved {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts the echo upstream on an ephemeral loopback port.
pub async fn start_echo(name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(portcullis::demo::echo::serve(listener, name.to_string()));
    addr
}

pub struct Gateway {
    child: Option<Child>,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<SocketAddr>,
    /// The listening sockets, bound here and passed to every process this
    /// gateway runs as (systemd's `LISTEN_FDS`): a restart serves the same
    /// sockets, and no port is ever picked, released and bound again.
    sockets: Vec<TcpListener>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_path: PathBuf,
}

/// The resident memory of process `pid`, in MiB (NaN when it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A listening socket on an ephemeral loopback port.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("a loopback listener")
}

/// `command` with `sockets` passed as systemd passes them: descriptors
/// 3, 4, … and `LISTEN_FDS`.
pub fn pass_sockets(command: &mut Command, sockets: &[TcpListener]) {
    use command_fds::{CommandFdExt, FdMapping};
    let mappings = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| FdMapping {
            parent_fd: std::os::fd::OwnedFd::from(s.try_clone().unwrap()),
            child_fd: 3 + i as i32,
        })
        .collect();
    command.fd_mappings(mappings).unwrap();
    command
        .env("LISTEN_FDS", sockets.len().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
}

/// Fills the placeholders a config template may use: `{http}`, `{admin}`,
/// `{tls}`, `{dir}`.
fn render(template: &str, http: u16, admin: u16, tls: u16, dir: &std::path::Path) -> String {
    template
        .replace("{http}", &http.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{tls}", &tls.to_string())
        .replace("{dir}", &dir.display().to_string())
}

/// A config with the listeners and secrets filled in, and `extra`
/// (YAML: routes, identity_headers, …) appended.
pub fn config_with(extra: &str) -> String {
    format!(
        r#"server:
  listen: "127.0.0.1:{{http}}"
  public_url: "http://auth.test:{{http}}"
  grace_period: 5s
admin:
  listen: "127.0.0.1:{{admin}}"
  tokens: ["{ADMIN_TOKEN}"]
store:
  url: "sqlite://{{dir}}/portcullis.db"
session:
  secret: "{SECRET}"
log:
  format: text
  level: info
{extra}"#
    )
}

/// [`config_with`] for the `lab` organization (roles Admin and Member) of
/// users pre-provisioned at `authentik` ([`manual_user`]), with `routes`
/// (YAML list items), the store at `store_url`, cached for `cache_ttl`.
pub fn lab_config(routes: &str, store_url: &str, cache_ttl: &str) -> String {
    config_with(&format!(
        r#"identity_providers:
  - id: authentik
    issuer: "https://sso.example.com/"
    client_id: portcullis
organizations:
  - id: lab
    roles: [{{name: Admin}}, {{name: Member}}]
routes:
{routes}"#
    ))
    .replace(
        "store:\n  url: \"sqlite://{dir}/portcullis.db\"\n",
        &format!("store:\n  url: \"{store_url}\"\n  cache_ttl: {cache_ttl}\n"),
    )
}

impl Gateway {
    /// Starts `portcullis run` and waits until both listeners answer.
    pub async fn start(template: &str) -> Gateway {
        Self::start_with(template, |_| {}).await
    }

    pub async fn start_with(template: &str, prepare: impl Fn(&std::path::Path)) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let mut sockets = vec![listener(), listener()];
        if template.contains("{tls}") {
            sockets.push(listener());
        }
        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let port = |i: usize| addrs.get(i).map(|a| a.port()).unwrap_or(0);
        let config_path = dir.path().join("portcullis.yaml");
        std::fs::write(
            &config_path,
            render(template, port(0), port(1), port(2), dir.path()),
        )
        .unwrap();
        let log_path = dir.path().join("gateway.log");
        std::fs::File::create(&log_path).unwrap();
        let mut gw = Gateway {
            child: None,
            http: addrs[0],
            admin: addrs[1],
            tls: addrs.get(2).copied(),
            sockets,
            dir,
            config_path,
            log_path,
        };
        gw.spawn();
        if let Err(code) = gw.wait_ready().await {
            panic!("gateway did not start (exit {code:?}):\n{}", gw.logs());
        }
        gw
    }

    /// Runs the binary on the config file, with the listening sockets.
    fn spawn(&mut self) {
        assert!(
            !self.sockets.is_empty(),
            "the gateway's sockets were closed when it exited"
        );
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        pass_sockets(&mut command, &self.sockets);
        self.child = Some(command.spawn().expect("the gateway binary starts"));
    }

    /// Stops the process and starts it again on the same sockets, with
    /// the same directory (config file, SQLite store).
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
        if let Err(code) = self.wait_ready().await {
            panic!("gateway did not restart (exit {code:?}):\n{}", self.logs());
        }
    }

    /// Waits until the gateway answers, or the process exits. Every socket
    /// listens from the start (a connection waits in its queue until the
    /// gateway accepts it), so the admin listener's `/healthz` is asked,
    /// which counts in no request metric; without an admin listener, the
    /// gateway's own.
    async fn wait_ready(&mut self) -> Result<(), Option<i32>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = std::fs::read_to_string(&self.config_path).unwrap_or_default();
        let probe = if text.contains(&format!(":{}\"", self.admin.port())) {
            self.admin
        } else {
            self.http
        };
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(status.code());
            }
            if tokio::task::spawn_blocking(move || answers(probe))
                .await
                .unwrap()
            {
                return Ok(());
            }
        }
        Err(None)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to end, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                // Gone for good: its sockets close, as they would have
                // without this harness holding them.
                self.sockets.clear();
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log once it holds `needle`. The gateway's log lines are written
    /// by a thread of their own, a moment after what they tell of: wait
    /// for one, never read it right after the event.
    pub async fn log_with(&self, needle: &str) -> String {
        eventually(
            &format!("the log line {needle:?}"),
            Duration::from_secs(10),
            || async {
                let logs = self.logs();
                logs.contains(needle).then_some(logs)
            },
        )
        .await
    }

    /// `template` with this gateway's ports and directory filled in.
    pub fn rendered(&self, template: &str) -> String {
        render(
            template,
            self.http.port(),
            self.admin.port(),
            self.tls.map(|a| a.port()).unwrap_or(0),
            self.dir.path(),
        )
    }

    pub fn rewrite_config(&self, template: &str) {
        let text = self.rendered(template);
        // Write then rename, so a reload never sees half a file.
        let tmp = self.dir.path().join("portcullis.yaml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Calls this gateway's management API with the test admin token.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> ApiAnswer {
        admin_call(self.admin, Some(ADMIN_TOKEN), method, path, body).await
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether an HTTP request to `addr` gets an answer within a moment.
pub fn answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let request = b"GET /healthz HTTP/1.1\r\nHost: ready.test\r\nConnection: close\r\n\r\n";
    let mut first = [0u8; 5];
    stream.write_all(request).is_ok() && stream.read_exact(&mut first).is_ok() && &first == b"HTTP/"
}

/// An answer of the management API: status, headers, and the body as
/// JSON (a string when it is not JSON, `null` when empty).
pub struct ApiAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

/// Calls the management API on `admin` as `token` (`None`: no
/// `Authorization` header), with a JSON body when given.
pub async fn admin_call(
    admin: SocketAddr,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> ApiAnswer {
    let mut req = reqwest::Client::new().request(method, format!("http://{admin}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    ApiAnswer {
        status,
        headers,
        body,
    }
}

/// A metric's value from Prometheus text, e.g. `portcullis_config_reloads_total`.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A raw HTTP/1.1 exchange, for requests no client library would send.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let request = request.to_vec();
    tokio::task::spawn_blocking(move || raw_blocking(addr, &request))
        .await
        .unwrap()
}

fn raw_blocking(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// GET `target` on `host` with extra header lines, connection closed after.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    target: &str,
    extra_headers: &[&str],
) -> RawResponse {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in extra_headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}

/// A new, empty database on the test PostgreSQL server that `./dev test`
/// starts (PORTCULLIS_TEST_POSTGRES_URL), and its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let base = std::env::var("PORTCULLIS_TEST_POSTGRES_URL").expect(
        "PORTCULLIS_TEST_POSTGRES_URL is not set: run the tests with `./dev test`, \
         which starts a PostgreSQL server on loopback",
    );
    let name = format!("t_{}", hex::encode(rand::random::<[u8; 8]>()));
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("test PostgreSQL at {base}: {e}"));
    // The name is ours: hex digits after a fixed prefix.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// A session for `user`, written into `store` as a login would write it:
/// the `Cookie:` header line that carries it, and its hashed id.
pub async fn session_cookie(
    store: &portcullis::store::Store,
    user: &str,
    idp: &str,
    subject: &str,
    claims: serde_json::Value,
    expires_in: i64,
) -> (String, String) {
    let id = portcullis::session::cookie::SessionId::generate();
    store
        .create_session(&portcullis::store::NewSession {
            id_hash: id.hash(),
            user_id: user.to_string(),
            idp: idp.to_string(),
            subject: subject.to_string(),
            idp_sub: Some(subject.to_string()),
            sid: None,
            id_token: None,
            refresh_token: None,
            claims,
            expires_at: portcullis::store::now() + expires_in,
        })
        .await
        .unwrap();
    (format!("Cookie: _portcullis={}", id.encode()), id.hash())
}

/// A WebSocket handshake request to `addr` for `host` and `path`, with a
/// `Cookie:` header line's value when given.
pub fn ws_request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    cookie: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request.headers_mut().insert("host", host.parse().unwrap());
    if let Some(line) = cookie {
        let value = line.strip_prefix("Cookie: ").unwrap_or(line);
        request
            .headers_mut()
            .insert("cookie", value.parse().unwrap());
    }
    request
}

/// A user `alice-sub` at `authentik` (alice@example.com) with a manual
/// membership of `org` with `roles`, as the management API would create
/// them; the user's id.
pub async fn manual_user(store: &portcullis::store::Store, org: &str, roles: &[&str]) -> String {
    use portcullis::provision::{Membership, MembershipSource};
    store
        .create_user(
            &portcullis::store::NewUser {
                idp: "authentik".into(),
                subject: Some("alice-sub".into()),
                email: Some("alice@example.com".into()),
                name: Some("Alice".into()),
                memberships: vec![Membership {
                    org: org.into(),
                    roles: roles.iter().map(|r| r.to_string()).collect(),
                    source: MembershipSource::Manual,
                }],
            },
            "token:0",
        )
        .await
        .unwrap()
        .id
}

/// The top of a config for login tests: listeners, public_url on
/// `localhost`, the admin token, `store_url`, the session secret.
pub fn localhost_preamble(store_url: &str) -> String {
    format!(
        r#"server:
  listen: "127.0.0.1:{{http}}"
  public_url: "http://localhost:{{http}}"
  grace_period: 1s
admin:
  listen: "127.0.0.1:{{admin}}"
  tokens: ["{ADMIN_TOKEN}"]
store:
  url: "{store_url}"
  cache_ttl: 30s
session:
  secret: "{SECRET}"
log:
  format: text
  level: info
"#
    )
}
