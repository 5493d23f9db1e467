//! The load harness: one run, one machine, four targets behind the same
//! upstream, so the figures are ratios rather than lone numbers.
//!
//!   1. the upstream itself (nginx answering 200 from memory),
//!   2. nginx as a reverse proxy in front of it,
//!   3. Portcullis on a public route,
//!   4. Portcullis on a protected route: session cookie, cached session,
//!      org + role policy, identity headers and a signed assertion.
//!
//! Load comes from wrk on loopback. Run it with `./dev load` (installs wrk
//! and nginx) or `cargo bench --bench load`. Under `cargo test --benches`
//! it only checks that it was built.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DURATION: &str = "8s";
const CONNECTIONS: &str = "64";
const THREADS: &str = "2";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nginx(dir: &Path, name: &str, workers: usize, server: &str) -> Proc {
    let prefix = dir.join(name);
    std::fs::create_dir_all(&prefix).unwrap();
    let conf = format!(
        "worker_processes {workers};\nerror_log {p}/error.log warn;\npid {p}/nginx.pid;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  {server}\n}}\n",
        p = prefix.display()
    );
    let file = prefix.join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    Proc(
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&file)
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts (./dev load installs it)"),
    )
}

struct Figures {
    rps: f64,
    p50: String,
    p99: String,
}

fn wrk(port: u16, host: &str, extra: &[String]) -> Figures {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        THREADS,
        "-c",
        CONNECTIONS,
        "-d",
        DURATION,
        "--latency",
    ])
    .args(["-H", &format!("Host: {host}")]);
    for h in extra {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("wrk runs (./dev load installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    let non2xx = text.lines().find(|l| l.contains("Non-2xx"));
    assert!(non2xx.is_none(), "errors under load on {host}:\n{text}");
    Figures {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("load harness built; run it with `./dev load` or `cargo bench --bench load`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (up, proxy) = (free_port(), free_port());
    // The proxies get as many workers as Portcullis gets threads: one per
    // core. Keep-alive is unbounded so no proxy pays for reconnecting.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let _upstream = nginx(
        dir.path(),
        "upstream",
        1,
        &format!(
            "keepalive_requests 10000000;\n  server {{ listen 127.0.0.1:{up}; location / {{ return 200 \"ok\\n\"; }} }}"
        ),
    );
    let _proxy = nginx(
        dir.path(),
        "proxy",
        cores,
        &format!(
            "keepalive_requests 10000000;\n  upstream app {{ server 127.0.0.1:{up}; keepalive 64; }}\n  server {{ listen 127.0.0.1:{proxy}; location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}"
        ),
    );
    let (http, admin) = (free_port(), free_port());
    let db = dir.path().join("load.db");
    let config = format!(
        r#"server:
  listen: "127.0.0.1:{http}"
  public_url: "http://auth.load.test"
admin:
  listen: "127.0.0.1:{admin}"
  tokens: ["load-test-token"]
store:
  url: "sqlite://{db}"
session:
  secret: "0123456789abcdef0123456789abcdef-load"
organizations:
  - id: lab
    roles: [{{name: Admin}}, {{name: Member}}]
identity_providers:
  - id: idp
    issuer: "http://127.0.0.1:1"
    client_id: load
routes:
  - name: public
    hosts: ["public.load.test"]
    upstreams: ["127.0.0.1:{up}"]
    public: true
  - name: protected
    hosts: ["app.load.test"]
    upstreams: ["127.0.0.1:{up}"]
    org: lab
    allow_roles: [Admin]
log:
  format: json
  level: warn
"#,
        db = db.display()
    );
    let config_path = dir.path().join("portcullis.yaml");
    std::fs::write(&config_path, config).unwrap();
    let _gateway = Proc(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    for port in [up, proxy, http] {
        wait_port(port);
    }
    let cookie = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use portcullis::provision::{Membership, MembershipSource};
        use portcullis::session::cookie::SessionId;
        use portcullis::store::{NewSession, NewUser, Store};
        let store = Store::open(
            &format!("sqlite://{}", db.display()),
            portcullis::config::StoreKind::Sqlite,
        )
        .await
        .unwrap();
        let user = store
            .create_user(
                &NewUser {
                    idp: "idp".into(),
                    subject: Some("load".into()),
                    email: Some("load@example.com".into()),
                    name: Some("Load Test".into()),
                    memberships: vec![Membership {
                        org: "lab".into(),
                        roles: vec!["Admin".into()],
                        source: MembershipSource::Manual,
                    }],
                },
                "load",
            )
            .await
            .unwrap();
        let id = SessionId::generate();
        store
            .create_session(&NewSession {
                id_hash: id.hash(),
                user_id: user.id,
                idp: "idp".into(),
                subject: "load".into(),
                idp_sub: Some("load".into()),
                sid: None,
                id_token: None,
                refresh_token: None,
                claims: serde_json::json!({"sub": "load"}),
                expires_at: portcullis::store::now() + 3600,
            })
            .await
            .unwrap();
        format!("Cookie: _portcullis={}", id.encode())
    });
    // Warm every path once (connections, caches).
    for (port, host, extra) in [
        (up, "x", vec![]),
        (proxy, "x", vec![]),
        (http, "public.load.test", vec![]),
        (http, "app.load.test", vec![cookie.clone()]),
    ] {
        let _ = Command::new("wrk")
            .args(["-t1", "-c4", "-d1s", "-H", &format!("Host: {host}")])
            .args(extra.iter().flat_map(|h| ["-H", h.as_str()]))
            .arg(format!("http://127.0.0.1:{port}/"))
            .output();
    }
    let runs = [
        ("upstream (nginx, direct)", up, "x", vec![]),
        ("nginx reverse proxy", proxy, "x", vec![]),
        ("portcullis, public route", http, "public.load.test", vec![]),
        (
            "portcullis, session + policy + headers",
            http,
            "app.load.test",
            vec![cookie.clone()],
        ),
    ];
    println!(
        "\nwrk -t{THREADS} -c{CONNECTIONS} -d{DURATION} on loopback, {} cores, one run\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "target", "req/s", "p50", "p99", "vs direct", "vs nginx"
    );
    let mut results = Vec::new();
    for (name, port, host, extra) in runs {
        let f = wrk(port, host, &extra);
        results.push((name, f));
    }
    let direct = results[0].1.rps.max(1.0);
    let nginx_rps = results[1].1.rps.max(1.0);
    for (name, f) in &results {
        println!(
            "{:<40} {:>10.0} {:>9} {:>9} {:>9.2}x {:>9.2}x",
            name,
            f.rps,
            f.p50,
            f.p99,
            f.rps / direct,
            f.rps / nginx_rps
        );
    }
    println!();
}
