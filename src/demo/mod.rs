//! `portcullis demo`: a first look in one process, on loopback only. It
//! starts the header-echo upstream and the gateway in front of it with a
//! built-in config, and prints the URL to open.

pub mod echo;
pub(crate) mod idp;

use std::net::{SocketAddr, TcpListener};

use crate::config::{Config, Environment};

/// A loopback listener on `preferred`, else on a free port: bound here
/// once and handed to the gateway.
fn listen_on(preferred: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", preferred)).or_else(|_| TcpListener::bind("127.0.0.1:0"))
}

struct Ports {
    http: u16,
    admin: u16,
    idp: std::net::SocketAddr,
    upstream: SocketAddr,
}

fn demo_config(p: &Ports, client_secret: &str, dir: &std::path::Path) -> String {
    let secret = hex::encode(rand::random::<[u8; 32]>());
    format!(
        r#"# Built-in configuration of `portcullis demo`.
server:
  listen: "127.0.0.1:{http}"
  public_url: "http://localhost:{http}"
  grace_period: 1s
admin:
  listen: "127.0.0.1:{admin}"
  tokens: ["demo-admin-token-not-for-production"]
store:
  url: "sqlite://{db}"
session:
  secret: "{secret}"
identity_providers:
  - id: dev
    display_name: "Development IdP"
    issuer: "http://{idp}"
    client_id: portcullis-demo
    client_secret: "{client_secret}"
    scopes: [openid, email, profile, groups]
    claims: merged
    provisioning:
      # Every org: a member when the groups name it; Admin with "admin".
      default:
        org: "contains(groups, '{{{{orgId}}}}')"
        roles: "contains(groups, 'admin') && 'Admin' || 'Member'"
organizations:
  - id: home-lab
    name: "Home Lab"
    roles:
      - name: Admin
        description: "Full access"
      - name: Member
  - id: partners
    name: "Partners"
    roles:
      - name: Member
    jit:
      # Verified partner.org emails join just in time.
      email_domains: [partner.org]
      default_roles: [Member]
routes:
  - name: public
    hosts: ["localhost", "127.0.0.1"]
    path_prefix: "/public"
    upstreams: ["{upstream}"]
    public: true
  - name: home-lab
    hosts: ["localhost", "127.0.0.1"]
    upstreams: ["{upstream}"]
    org: home-lab
    claim_headers:
      X-Department: "department"
  - name: admin
    hosts: ["localhost", "127.0.0.1"]
    path_prefix: "/admin"
    upstreams: ["{upstream}"]
    org: home-lab
    allow_roles: [Admin]
  - name: partners
    hosts: ["localhost", "127.0.0.1"]
    path_prefix: "/partners"
    upstreams: ["{upstream}"]
    org: partners
log:
  format: text
  level: info
"#,
        http = p.http,
        admin = p.admin,
        idp = p.idp,
        upstream = p.upstream,
        db = dir.join("demo.db").display(),
    )
}

/// Binds a loopback listener on a thread of its own and serves `serve` on it.
fn spawn_server<F, Fut>(serve: F) -> anyhow::Result<SocketAddr>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    crate::util::spawn_on_own_runtime(async move {
        match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => {
                let _ = tx.send(listener.local_addr());
                serve(listener).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    Ok(rx.recv()??)
}

/// Runs the demo until Ctrl-C; its temporary directory goes with it.
pub fn run() -> anyhow::Result<()> {
    let dir = TempDir::create()?;
    let http_listener = listen_on(8080)?;
    let admin_listener = listen_on(9090)?;
    let http = http_listener.local_addr()?.port();
    let admin = admin_listener.local_addr()?.port();
    let gateway_url = format!("http://localhost:{http}");
    let upstream =
        spawn_server(move |l| echo::serve_demo(l, "demo-echo".to_string(), gateway_url))?;
    let client_secret = hex::encode(rand::random::<[u8; 16]>());
    let client = idp::Client {
        id: "portcullis-demo".into(),
        secret: client_secret.clone(),
        redirect_uri: format!("http://localhost:{http}{}", crate::paths::CALLBACK),
        post_logout_redirect_uri: format!("http://localhost:{http}/"),
    };
    let idp_addr = spawn_server(move |l| idp::serve(l, client))?;
    let ports = Ports {
        http,
        admin,
        idp: idp_addr,
        upstream,
    };
    let path = dir.0.join("portcullis-demo.yaml");
    std::fs::write(&path, demo_config(&ports, &client_secret, &dir.0))?;
    let config = Config::from_yaml(
        &std::fs::read_to_string(&path)?,
        &path,
        &Environment::system(),
    )?;
    crate::telemetry::init(&config.log);
    println!();
    println!("  Portcullis demo is running.");
    println!("  Open            http://localhost:{http}/");
    println!("  and sign in at the development IdP as one of its sample users:");
    println!("    alice (Admin), bob (Member), carol (Partners, just in time), dave (refused).");
    println!("  Also try        http://localhost:{http}/admin     (Admin only)");
    println!("                  http://localhost:{http}/partners  (Partners only)");
    println!(
        "                  http://localhost:{http}{}",
        crate::paths::USERINFO
    );
    println!(
        "                  http://localhost:{http}{}",
        crate::paths::LOGOUT
    );
    println!("  A forged identity header never reaches the app:");
    println!("    curl -H 'X-Auth-Email: evil@example.com' http://localhost:{http}/public/");
    println!("  Metrics         http://127.0.0.1:{admin}/metrics");
    println!("  Config          {}", path.display());
    println!("  Stop with Ctrl-C.");
    println!();
    let inherited = crate::listen::Inherited::from_listeners(vec![http_listener, admin_listener])?;
    stop_on_ctrl_c(dir.0.clone())?;
    crate::app::build(config, path, inherited)?.run()?;
    Ok(())
}

/// The demo's files (config, SQLite store), removed when it ends.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn create() -> std::io::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-demo-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ctrl-C (or SIGTERM) removes the demo's directory and ends the process:
/// the server's own shutdown may exit before `run` returns.
fn stop_on_ctrl_c(dir: std::path::PathBuf) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "\n  Demo stopped; its files ({}) are removed.",
                dir.display()
            );
            crate::telemetry::flush();
            std::process::exit(0);
        }
    });
    Ok(())
}
