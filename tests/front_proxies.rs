//! Forward-auth behind the real proxies (SPEC 3): Debian's nginx
//! (`auth_request`) and Caddy (`forward_auth`) in front of the echo app,
//! configured with the recipe files under `examples/` (the README shows the
//! same files), each asking Portcullis. A browser without a session is sent
//! through the login at `oidc-provider` and back through the proxy with
//! identity headers; a policy failure is a 403 through the proxy; identity
//! headers a client sends never reach the app (advisory class: header
//! spoofing through a proxy that forwards what it does not set).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::idp::{Browser, Idp, Page, client, main_idp_yaml};
use support::*;

const APP_HOST: &str = "app.example.test";
const AUTH_HOST: &str = "auth.example.test";

fn recipe(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap()
}

fn gateway_template(idp_port: u16, upstream: SocketAddr) -> String {
    let main = main_idp_yaml(idp_port, "'Member'");
    format!(
        r#"server:
  listen: "127.0.0.1:{{http}}"
  public_url: "http://{AUTH_HOST}:{{http}}"
  trusted_proxies: ["127.0.0.1/32"]
  grace_period: 1s
admin:
  listen: "127.0.0.1:{{admin}}"
  tokens: ["{ADMIN_TOKEN}"]
store:
  url: "sqlite://{{dir}}/portcullis.db"
session:
  secret: "{SECRET}"
  cookie_domain: ".example.test"
log:
  format: text
  level: info
identity_providers:
{main}organizations:
  - id: lab
    roles: [{{name: Admin}}, {{name: Member}}]
routes:
  - name: app
    hosts: ["{APP_HOST}"]
    upstreams: ["{upstream}"]
    org: lab
  - name: admin
    hosts: ["{APP_HOST}"]
    path_prefix: /admin
    upstreams: ["{upstream}"]
    org: lab
    allow_roles: [Admin]
"#
    )
}

/// A proxy process, stopped (and waited for) when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    /// Held for the proxy's life (Caddy's port reservation).
    _reserved: Option<Reserved>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // A graceful stop: nginx's master takes its workers with it.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recipe with the addresses of this test's gateway and app.
fn localize(text: &str, gateway: SocketAddr, app: SocketAddr) -> String {
    text.replace("127.0.0.1:9090", &gateway.to_string())
        .replace("127.0.0.1:3000", &app.to_string())
        .replace(
            "https://auth.example.com",
            &format!("http://{AUTH_HOST}:{}", gateway.port()),
        )
}

/// nginx with examples/nginx-auth-request.conf, on a socket bound here
/// and passed to it (nginx takes inherited sockets from `NGINX`).
fn start_nginx(gateway: SocketAddr, app: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let socket = listener();
    let addr = socket.local_addr().unwrap();
    let site = localize(&recipe("nginx-auth-request.conf"), gateway, app)
        .replace("listen 80;", &format!("listen {addr};"))
        .replace(
            "server_name app.example.com;",
            &format!("server_name {APP_HOST};"),
        );
    let d = dir.path().display();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("site.conf"), site).unwrap();
    let main = format!(
        "daemon off;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut command = Command::new(nginx_binary());
    command
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .env("NGINX", "3;")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    pass_sockets(&mut command, std::slice::from_ref(&socket));
    let child = command.spawn().expect("nginx starts");
    drop(socket);
    Proxy {
        child,
        addr,
        _dir: dir,
        _reserved: None,
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is installed (./dev test installs it)")
}

/// Caddy with examples/Caddyfile. Caddy binds its port itself, with
/// `SO_REUSEPORT`: the port is reserved here (bound the same way, never
/// listening) for as long as Caddy runs, so nobody else can take it.
fn start_caddy(gateway: SocketAddr, app: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let reserved = Reserved::shared();
    let port = reserved.port();
    let site = localize(&recipe("Caddyfile"), gateway, app).replace(
        "app.example.com {",
        &format!("http://{APP_HOST}:{port} {{\n\tbind 127.0.0.1"),
    );
    let config = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, config).unwrap();
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        // Caddy keeps state under HOME / XDG: here, not in the user's.
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("caddy is installed (./dev test installs it)");
    Proxy {
        child,
        addr: ([127, 0, 0, 1], port).into(),
        _dir: dir,
        _reserved: Some(reserved),
    }
}

struct World {
    _gw: Gateway,
    _idp: Idp,
    proxy: Proxy,
    browser: Browser,
}

async fn world(start: fn(SocketAddr, SocketAddr) -> Proxy) -> World {
    let app = start_echo("app").await;
    let socket = listener();
    let idp_port = socket.local_addr().unwrap().port();
    let gw = Gateway::start(&gateway_template(idp_port, app)).await;
    let redirect = format!("http://{AUTH_HOST}:{}", gw.http.port());
    let mut client = client("portcullis", "main-secret", gw.http.port());
    client["redirect_uris"] = json!([format!("{redirect}/_portcullis/callback")]);
    let idp = Idp::start(
        json!([{
            "clients": [client],
            "accounts": {"alice": {"email": "alice@example.com", "email_verified": true, "groups": ["lab"]}},
        }]),
        std::slice::from_ref(&socket),
    );
    let proxy = start(gw.http, app);
    let browser = Browser::resolving(&[(APP_HOST, proxy.addr), (AUTH_HOST, gw.http)]);
    let w = World {
        _gw: gw,
        _idp: idp,
        proxy,
        browser,
    };
    // The proxy answers once it has started.
    let url = w.url("/");
    eventually("the proxy answers", Duration::from_secs(30), || async {
        w.browser.client().get(&url).send().await.ok().map(|_| ())
    })
    .await;
    w
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("http://{APP_HOST}:{}{path}", self.proxy.addr.port())
    }

    /// Opens `path` through the proxy without a session and signs in.
    async fn sign_in(&self, path: &str) -> Page {
        let first = self.browser.get(&self.url(path)).await;
        assert_eq!(first.status, 302, "to the sign-in: {}", first.body);
        let location = first.location().unwrap();
        assert!(
            location.starts_with(&format!("http://{AUTH_HOST}:"))
                && location.contains("/_portcullis/login?rd="),
            "{location}"
        );
        self.browser
            .sign_in_at_idp(first, "alice", &mut Vec::new())
            .await
    }
}

fn upstream_header(page: &Page, name: &str) -> Option<String> {
    page.json()["headers"][name][0].as_str().map(str::to_string)
}

async fn login_and_headers(start: fn(SocketAddr, SocketAddr) -> Proxy) {
    let w = world(start).await;
    let page = w.sign_in("/reports?year=2026").await;
    assert_eq!(page.status, 200, "{} {}", page.url, page.body);
    // Back through the proxy, where the login began.
    assert_eq!(page.url, w.url("/reports?year=2026"));
    assert_eq!(page.json()["upstream"], "app");
    assert_eq!(
        upstream_header(&page, "x-auth-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        upstream_header(&page, "x-auth-idp").as_deref(),
        Some("main")
    );
    assert_eq!(upstream_header(&page, "x-auth-org").as_deref(), Some("lab"));
    assert_eq!(
        upstream_header(&page, "x-auth-roles").as_deref(),
        Some("Member")
    );
    assert!(upstream_header(&page, "x-auth-assertion").is_some());
}

async fn policy_failure_is_403(start: fn(SocketAddr, SocketAddr) -> Proxy) {
    let w = world(start).await;
    assert_eq!(w.sign_in("/").await.status, 200);
    let page = w.browser.get(&w.url("/admin/users")).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        !page.body.contains("\"upstream\""),
        "the app was reached: {}",
        page.body
    );
}

/// Advisory class: identity header spoofing. Every header name the
/// gateway sets, sent by the client, with and without a session.
async fn spoofed_headers_never_reach_the_app(start: fn(SocketAddr, SocketAddr) -> Proxy) {
    let w = world(start).await;
    let spoofed = [
        ("X-Auth-User-Id", "u_admin"),
        ("X-Auth-Subject", "root"),
        ("X-Auth-Idp", "evil"),
        ("X-Auth-Email", "ceo@example.com"),
        ("X-Auth-Name", "The CEO"),
        ("X-Auth-Org", "everything"),
        ("X-Auth-Roles", "Admin"),
        ("X-Auth-Assertion", "eyJhbGciOiJub25lIn0.e30."),
    ];
    let send = |w: &World| {
        let mut req = w.browser.client().get(w.url("/spoof"));
        for (k, v) in spoofed {
            req = req.header(k, v);
        }
        req
    };
    // Without a session the app is never reached.
    let r = send(&w).send().await.unwrap();
    assert_eq!(r.status(), 302);
    // With one, the app sees the gateway's values only.
    assert_eq!(w.sign_in("/").await.status, 200);
    let r = send(&w).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let headers = &body["headers"];
    for (k, v) in spoofed {
        let got = &headers[k.to_ascii_lowercase()];
        assert!(
            got.as_array()
                .is_none_or(|vals| vals.iter().all(|x| x != v)),
            "{k}: {got}"
        );
    }
    assert_eq!(headers["x-auth-email"][0], "alice@example.com");
    assert_eq!(headers["x-auth-roles"][0], "Member");
    // The user has no name: the app gets none. (Caddy before 2.7, as in
    // Debian 12, copies a header the answer lacks as its placeholder text;
    // never the client's value, which is what matters here.)
    let name = &headers["x-auth-name"];
    assert!(
        name.is_null() || name[0] == "{http.reverse_proxy.header.X-Auth-Name}",
        "{name}"
    );
}

#[tokio::test]
async fn nginx_login_then_identity_headers() {
    login_and_headers(start_nginx).await
}

#[tokio::test]
async fn nginx_policy_failure_is_403() {
    policy_failure_is_403(start_nginx).await
}

#[tokio::test]
async fn nginx_spoofed_identity_headers_never_reach_the_app() {
    spoofed_headers_never_reach_the_app(start_nginx).await
}

#[tokio::test]
async fn caddy_login_then_identity_headers() {
    login_and_headers(start_caddy).await
}

#[tokio::test]
async fn caddy_policy_failure_is_403() {
    policy_failure_is_403(start_caddy).await
}

#[tokio::test]
async fn caddy_spoofed_identity_headers_never_reach_the_app() {
    spoofed_headers_never_reach_the_app(start_caddy).await
}

/// The README shows the recipes exactly as the tests run them.
#[test]
fn the_readme_shows_the_tested_recipes() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for name in [
        "nginx-auth-request.conf",
        "Caddyfile",
        "traefik-forward-auth.yaml",
    ] {
        let text = recipe(name);
        assert!(
            readme.contains(text.trim_end()),
            "README.md does not show examples/{name} as it is"
        );
    }
}
