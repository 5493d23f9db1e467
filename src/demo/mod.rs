//! `portcullis demo`: a first look in one process, on loopback only. It
//! starts the header-echo upstream and the gateway in front of it with a
//! built-in config, and prints the URL to open.

pub mod echo;

use std::net::{SocketAddr, TcpListener};

use crate::config::{Config, Environment};

fn port_or_free(preferred: u16) -> u16 {
    TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| TcpListener::bind("127.0.0.1:0"))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(preferred)
}

fn demo_config(http: u16, admin: u16, upstream: SocketAddr, dir: &std::path::Path) -> String {
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
organizations:
  - id: demo
    name: "Demo"
    roles:
      - name: Admin
      - name: Member
routes:
  - name: echo
    hosts: ["localhost", "127.0.0.1"]
    upstreams: ["{upstream}"]
    public: true
  - name: protected
    hosts: ["localhost", "127.0.0.1"]
    path_prefix: "/private"
    upstreams: ["{upstream}"]
    org: demo
log:
  format: text
  level: info
"#,
        db = dir.join("demo.db").display(),
    )
}

/// Runs the demo until Ctrl-C.
pub fn run() -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let (tx, rx) = std::sync::mpsc::channel();
    crate::util::spawn_on_own_runtime(async move {
        match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => {
                let _ = tx.send(listener.local_addr());
                echo::serve(listener, "demo-echo").await;
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    let upstream = rx.recv()??;
    let http = port_or_free(8080);
    let admin = port_or_free(9090);
    let path = dir.join("portcullis-demo.yaml");
    std::fs::write(&path, demo_config(http, admin, upstream, &dir))?;
    let config = Config::from_yaml(
        &std::fs::read_to_string(&path)?,
        &path,
        &Environment::system(),
    )?;
    crate::telemetry::init(&config.log);
    println!();
    println!("  Portcullis demo is running.");
    println!("  Open            http://localhost:{http}/");
    println!("  Send a forged header and watch it disappear:");
    println!("    curl -H 'X-Auth-Email: evil@example.com' http://localhost:{http}/");
    println!("  A protected path (answers 401, or a login redirect in a browser):");
    println!("    curl -i http://localhost:{http}/private");
    println!("  Metrics         http://127.0.0.1:{admin}/metrics");
    println!("  Config          {}", path.display());
    println!("  Stop with Ctrl-C.");
    println!();
    crate::app::run(config, path)?;
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
