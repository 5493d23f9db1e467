//! The load harness: one run, one machine, every target behind the same
//! upstream, so the figures are ratios rather than lone numbers:
//!
//!   1. the upstream itself (nginx answering 200 from memory),
//!   2. nginx as a reverse proxy in front of it,
//!   3. a bare Pingora proxy with Portcullis's engine settings
//!      (`benches/bare/`): the baseline the gateway's own work is measured
//!      against,
//!   4. Portcullis on a public route,
//!   5. Portcullis on a protected route: session cookie, cached session,
//!      org + role policy, identity headers and a signed assertion,
//!   6. nginx with `auth_request` to Portcullis's `/_portcullis/auth`,
//!   7. (5) on one proxy thread instead of one per core.
//!
//! Rounds are interleaved (every target once per round) and the medians
//! go into BENCHMARKS.md. Load comes from wrk on loopback. Run it with
//! `./dev load` (installs wrk and nginx) or `cargo bench --bench load`
//! (`LOAD_ROUNDS=n` for another number of rounds). Under
//! `cargo test --benches` it only checks that it was built.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod bare;
mod report;
#[path = "../tests/support/mod.rs"]
mod support;

const DURATION: &str = "8s";
/// `LOAD_DURATION` overrides [`DURATION`] (a profile wants longer runs).
fn duration() -> String {
    std::env::var("LOAD_DURATION").unwrap_or_else(|_| DURATION.to_string())
}
const CONNECTIONS: &str = "32";
const THREADS: &str = "1";

struct Proc(Child);

impl Drop for Proc {
    /// SIGTERM, so that nginx's master takes its workers down with it (a
    /// SIGKILLed master leaves them running, serving and holding ports);
    /// SIGKILL if it is still there after five seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port held for the whole run (bound with `SO_REUSEPORT`,
/// never listening): nginx and the bare proxy bind it too with
/// `reuseport`, and nobody else can take it in between.
fn reserved(held: &mut Vec<support::Reserved>) -> u16 {
    let r = support::Reserved::shared();
    let port = r.port();
    held.push(r);
    port
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the gateway answers HTTP on `port`: its sockets listen
/// from the start, so a connection alone proves nothing. Panics when it
/// exits first or does not answer within 30 s.
fn wait_answers(gateway: &mut Proc, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !support::answers(std::net::SocketAddr::from(([127, 0, 0, 1], port))) {
        if let Ok(Some(status)) = gateway.0.try_wait() {
            panic!("the gateway on {port} exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the gateway on {port} did not answer"
        );
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
        &duration(),
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

/// A latency as wrk prints it (`812.00us`, `1.23ms`, `1.02s`), in µs.
fn micros(s: &str) -> f64 {
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => f64::NAN,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// One thing measured: a name, where wrk sends its load, with which
/// headers.
struct Target {
    name: &'static str,
    port: u16,
    host: &'static str,
    headers: Vec<String>,
}

/// `portcullis run` on `config`, its log (the access log at `info`, as
/// operators run it) in `log`, serving on `sockets` (bound here, passed as
/// systemd passes them).
fn portcullis(config: &Path, log: &Path, sockets: &[TcpListener]) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(["run", "--config"])
        .arg(config)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    support::pass_sockets(&mut command, sockets);
    Proc(command.spawn().unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Re-run of this binary as the bare-engine baseline.
    if args.get(1).map(String::as_str) == Some("--bare-pingora") {
        bare::serve(&args[2], &args[3], args[4].parse().unwrap());
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("load harness built; run it with `./dev load` or `cargo bench --bench load`");
        return;
    }
    let rounds: usize = std::env::var("LOAD_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut held = Vec::new();
    let mut port = || reserved(&mut held);
    let (up, proxy, bare_port, fa) = (port(), port(), port(), port());
    let (gateway_sockets, one_sockets) = (
        [support::listener(), support::listener()],
        [support::listener(), support::listener()],
    );
    let port_of = |l: &TcpListener| l.local_addr().unwrap().port();
    let (http, admin) = (port_of(&gateway_sockets[0]), port_of(&gateway_sockets[1]));
    let (http1, admin1) = (port_of(&one_sockets[0]), port_of(&one_sockets[1]));
    // The proxies get as many workers as Portcullis gets threads: one per
    // core. Keep-alive is unbounded so no proxy pays for reconnecting.
    let _upstream = nginx(
        dir.path(),
        "upstream",
        1,
        &format!(
            "keepalive_requests 10000000;\n  server {{ listen 127.0.0.1:{up} reuseport; location / {{ return 200 \"ok\\n\"; }} }}"
        ),
    );
    let _proxy = nginx(
        dir.path(),
        "proxy",
        cores,
        &format!(
            "keepalive_requests 10000000;\n  upstream app {{ server 127.0.0.1:{up}; keepalive 64; }}\n  server {{ listen 127.0.0.1:{proxy} reuseport; location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}"
        ),
    );
    // nginx in front, asking Portcullis (forward-auth) about each request,
    // as the README's recipe does, with keep-alive to both.
    let _forward_auth = nginx(
        dir.path(),
        "forward-auth",
        cores,
        &format!(
            "keepalive_requests 10000000;\n  upstream app {{ server 127.0.0.1:{up}; keepalive 64; }}\n  upstream portcullis {{ server 127.0.0.1:{http}; keepalive 64; }}\n  server {{ listen 127.0.0.1:{fa} reuseport;\n    location = /_portcullis_auth {{ internal; proxy_pass http://portcullis/_portcullis/auth; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass_request_body off; proxy_set_header Content-Length \"\"; proxy_set_header X-Forwarded-Method $request_method; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Uri $request_uri; }}\n    location / {{ auth_request /_portcullis_auth; proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; }} }}"
        ),
    );
    let exe = std::env::current_exe().unwrap();
    let _bare = Proc(
        Command::new(&exe)
            .args([
                "--bare-pingora",
                &format!("127.0.0.1:{bare_port}"),
                &format!("127.0.0.1:{up}"),
                &cores.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let db = dir.path().join("load.db");
    let config = |http: u16, admin: u16, threads: usize| {
        format!(
            r#"server:
  listen: "127.0.0.1:{http}"
  public_url: "http://auth.load.test"
  trusted_proxies: ["127.0.0.1"]
  threads: {threads}
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
  level: info
"#,
            db = db.display()
        )
    };
    let config_path = dir.path().join("portcullis.yaml");
    std::fs::write(&config_path, config(http, admin, cores)).unwrap();
    let mut gateway = portcullis(
        &config_path,
        &dir.path().join("gateway.log"),
        &gateway_sockets,
    );
    wait_answers(&mut gateway, admin);
    // The same gateway on one proxy thread, for the scaling figure.
    let one_path = dir.path().join("one-thread.yaml");
    std::fs::write(&one_path, config(http1, admin1, 1)).unwrap();
    let mut one = portcullis(&one_path, &dir.path().join("one-thread.log"), &one_sockets);
    wait_answers(&mut one, admin1);
    for port in [up, proxy, bare_port, fa] {
        wait_port(port);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (cookie, load_user) = rt.block_on(async {
        use portcullis::provision::{Membership, MembershipSource};
        use portcullis::session::cookie::SessionId;
        use portcullis::store::{NewUser, Store};
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
        write_session(&store, &id, &user.id).await;
        (format!("Cookie: _portcullis={}", id.encode()), user.id)
    });
    let targets = vec![
        Target {
            name: "upstream (nginx, direct)",
            port: up,
            host: "x",
            headers: vec![],
        },
        Target {
            name: "nginx reverse proxy",
            port: proxy,
            host: "x",
            headers: vec![],
        },
        Target {
            name: "bare Pingora proxy (same engine settings)",
            port: bare_port,
            host: "x",
            headers: vec![cookie.clone()],
        },
        Target {
            name: "Portcullis, public route",
            port: http,
            host: "public.load.test",
            headers: vec![],
        },
        Target {
            name: "Portcullis, protected route with a session",
            port: http,
            host: "app.load.test",
            headers: vec![cookie.clone()],
        },
        Target {
            name: "nginx auth_request -> Portcullis /_portcullis/auth",
            port: fa,
            host: "app.load.test",
            headers: vec![cookie.clone()],
        },
        Target {
            name: "Portcullis, protected route, 1 proxy thread",
            port: http1,
            host: "app.load.test",
            headers: vec![cookie.clone()],
        },
    ];
    // `LOAD_ONLY=text|text`: only the targets whose name contains one of
    // them (for a profile, or a quick comparison).
    let only = std::env::var("LOAD_ONLY").unwrap_or_default();
    let targets: Vec<Target> = targets
        .into_iter()
        .filter(|t| only.split('|').any(|o| t.name.contains(o)))
        .collect();
    // Warm every path once (connections, caches), and check each answers
    // 2xx: a refusal measured fast would be a lie.
    for t in &targets {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Host: {}", t.host))
            .args(t.headers.iter().flat_map(|h| ["-H", h.as_str()]))
            .arg(format!("http://127.0.0.1:{}/", t.port))
            .output()
            .expect("curl runs");
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(code.starts_with('2'), "{}: answered {code}", t.name);
        let _ = Command::new("wrk")
            .args(["-t1", "-c4", "-d1s", "-H", &format!("Host: {}", t.host)])
            .args(t.headers.iter().flat_map(|h| ["-H", h.as_str()]))
            .arg(format!("http://127.0.0.1:{}/", t.port))
            .output();
    }
    // Interleaved: every target once per round, so a noisy moment on the
    // shared machine hits all of them alike.
    let mut samples: Vec<Vec<Figures>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        for (i, t) in targets.iter().enumerate() {
            let f = wrk(t.port, t.host, &t.headers);
            eprintln!("  {:<52} {:>9.0} req/s  p99 {}", t.name, f.rps, f.p99);
            samples[i].push(f);
        }
    }
    let medians: Vec<(f64, f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                median(s.iter().map(|f| f.rps).collect()),
                median(s.iter().map(|f| micros(&f.p50)).collect()),
                median(s.iter().map(|f| micros(&f.p99)).collect()),
            )
        })
        .collect();
    if targets.len() < 7 {
        // A partial run: medians (and ratios when the bare proxy ran), nothing written.
        let bare = targets
            .iter()
            .position(|t| t.name.starts_with("bare"))
            .map(|i| medians[i].0.max(1.0));
        for (t, (rps, p50, p99)) in targets.iter().zip(&medians) {
            let ratio = bare.map(|b| format!("{:.2}x", rps / b)).unwrap_or_default();
            eprintln!(
                "median {:<52} {rps:>9.0} req/s {ratio:>6}  p50 {p50:.0} µs  p99 {p99:.0} µs",
                t.name
            );
        }
        return;
    }
    let bare_rps = medians[2].0.max(1.0);
    let mut table = format!(
        "Measured by `./dev load` (`cargo bench --bench load`) at commit `{}` on {}: \
         wrk `-t{THREADS} -c{CONNECTIONS} -d{}` on loopback, {rounds} interleaved rounds, medians. \
         The access log is on (`info`, JSON, to a file). Everything shares the same cores (wrk, nginx, the gateway), \
         so read the ratios, not the absolute numbers.\n\n\
         | setup | req/s | vs bare Pingora | p50 | p99 |\n| --- | ---: | ---: | ---: | ---: |\n",
        report::commit(),
        report::machine(),
        duration()
    );
    for (t, (rps, p50, p99)) in targets.iter().zip(&medians) {
        table.push_str(&format!(
            "| {} | {:.0} | {:.2}x | {:.0} µs | {:.0} µs |\n",
            t.name,
            rps,
            rps / bare_rps,
            p50,
            p99
        ));
    }
    let added = medians[4].2 - medians[3].2;
    table.push_str(&format!(
        "\np99 added by authentication (protected minus public route): {added:.0} µs.\n"
    ));
    if std::env::var("LOAD_SCALE").as_deref() != Ok("0") {
        table.push_str(&rt.block_on(session_rss(gateway.0.id(), http, &db, &load_user)));
    }
    println!("\n{table}");
    report::write_section("load", "## Throughput", &table);
}

/// RSS with 0, 10,000 and 100,000 live sessions in the cache: sessions
/// written into the store, then each asked for once through the protected
/// route (a cache miss that fills the cache, as a login's first request
/// would). The table's rows.
async fn session_rss(pid: u32, port: u16, db: &Path, user: &str) -> String {
    use futures_util::StreamExt;
    use portcullis::session::cookie::SessionId;
    use portcullis::store::Store;
    let store = Store::open(
        &format!("sqlite://{}", db.display()),
        portcullis::config::StoreKind::Sqlite,
    )
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let mut rows = vec![(1usize, support::rss_mib(pid))];
    let mut live = 1usize;
    for target in [10_000usize, 100_000] {
        let ids: Vec<SessionId> = (live..target).map(|_| SessionId::generate()).collect();
        eprintln!("writing {} sessions", ids.len());
        for chunk in ids.chunks(500) {
            futures_util::stream::iter(chunk)
                .for_each_concurrent(8, |id| {
                    let store = &store;
                    async move { write_session(store, id, user).await }
                })
                .await;
        }
        eprintln!("asking for each through the gateway");
        let failures = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(&ids)
            .for_each_concurrent(32, |id| {
                let (client, failures) = (&client, &failures);
                async move {
                    let ok = client
                        .get(format!("http://127.0.0.1:{port}/"))
                        .header("host", "app.load.test")
                        .header("cookie", format!("_portcullis={}", id.encode()))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .await;
        let failed = failures.into_inner();
        assert_eq!(failed, 0, "{failed} session requests failed");
        live = target;
        rows.push((live, support::rss_mib(pid)));
    }
    let mut out = String::from(
        "\nResident memory of the gateway (`VmRSS`) with live sessions in its cache \
         (each written to the store, then asked for once through the protected route):\n\n\
         | live sessions | RSS |\n| ---: | ---: |\n",
    );
    for (n, mib) in rows {
        out.push_str(&format!("| {n} | {mib:.0} MiB |\n"));
    }
    out
}

/// A session of the load test's user, as a login would write it.
async fn write_session(
    store: &portcullis::store::Store,
    id: &portcullis::session::cookie::SessionId,
    user: &str,
) {
    store
        .create_session(&portcullis::store::NewSession {
            id_hash: id.hash(),
            user_id: user.to_string(),
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
}
