//! First logins per second through the real callback: the gateway on a
//! SQLite store, the test OpenID provider (`oidc-provider`, tests/idp) on
//! loopback, a scripted browser per login (every redirect followed, the
//! IdP's login and consent forms filled in), with 10 and with 1,000
//! organizations declared. Each login is a new user: the callback
//! exchanges the code, verifies the ID token, provisions (one
//! transaction) and sets the session.
//!
//! Two figures per case: logins completed per second with
//! `LOGINS_CONCURRENCY` browsers (default 8) — the IdP's work included,
//! since a user waits for all of it — and the latency of the callback
//! request alone (the gateway's share). Written into BENCHMARKS.md.
//! Run it with `./dev load` or `cargo bench --bench logins`
//! (`LOGINS=n` logins per case, default 300). Under
//! `cargo test --benches` it only checks that it was built.

mod report;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use support::idp::{Browser, Idp, client, main_idp_yaml};
use support::{Gateway, listener, localhost_preamble, start_echo};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn template(idp_port: u16, upstream: std::net::SocketAddr, orgs: usize) -> String {
    let mut yaml = format!(
        "{}identity_providers:\n{}organizations:\n",
        localhost_preamble("sqlite://{dir}/portcullis.db"),
        main_idp_yaml(idp_port, "contains(groups, 'admin') && 'Admin' || 'Member'"),
    );
    for i in 0..orgs {
        yaml.push_str(&format!(
            "  - id: org-{i}\n    roles: [{{name: Admin}}, {{name: Member}}]\n"
        ));
    }
    yaml.push_str(&format!(
        "routes:\n  - name: app\n    hosts: [\"localhost\"]\n    upstreams: [\"{upstream}\"]\n    org: org-1\n"
    ));
    // Logins are what is measured: the access log at warn keeps the
    // gateway's log file small over thousands of redirects.
    yaml.replace("  level: info\n", "  level: warn\n")
}

fn accounts(n: usize) -> Value {
    let mut map = Map::new();
    for i in 0..n {
        map.insert(
            format!("user-{i}"),
            json!({"email": format!("user-{i}@example.com"), "email_verified": true,
                   "name": format!("User {i}"), "groups": ["org-1", "org-7", "admin"]}),
        );
    }
    Value::Object(map)
}

/// One first login from a protected page to the upstream's answer.
/// Returns the time the callback request took.
async fn login(base: &str, account: &str) -> Duration {
    let b = Browser::new();
    let mut trail = Vec::new();
    let first = b.get(&format!("{base}/dashboard")).await;
    let page = b.sign_in_at_idp(first, account, &mut trail).await;
    assert_eq!(
        page.status, 200,
        "{account}: the login ended at {} ({}): {}",
        page.url, page.status, page.body
    );
    trail
        .iter()
        .find(|p| p.url.contains("/_portcullis/callback"))
        .map(|p| p.took)
        .unwrap_or_else(|| panic!("{account}: no callback on the way to {}", page.url))
}

struct Figures {
    orgs: usize,
    logins: usize,
    per_second: f64,
    callback_p50: Duration,
    callback_p99: Duration,
}

async fn measure(orgs: usize, logins: usize, concurrency: usize) -> Figures {
    let warm_up = concurrency;
    let upstream = start_echo("app").await;
    let idp_socket = listener();
    let idp_port = idp_socket.local_addr().unwrap().port();
    let gw = Gateway::start(&template(idp_port, upstream, orgs)).await;
    let _idp = Idp::start(
        json!([{
            "clients": [client("portcullis", "main-secret", gw.http.port())],
            "accounts": accounts(warm_up + logins),
        }]),
        std::slice::from_ref(&idp_socket),
    );
    let base = Arc::new(format!("http://localhost:{}", gw.http.port()));
    for i in 0..warm_up {
        login(&base, &format!("user-{i}")).await;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(warm_up));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (base, next) = (base.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= warm_up + logins {
                    return times;
                }
                times.push(login(&base, &format!("user-{i}")).await);
            }
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let users = support::metric_value(&gw.metrics().await, "portcullis_logins_total");
    eprintln!("{orgs} organizations: {logins} logins in {elapsed:?} (metric: {users:?})");
    Figures {
        orgs,
        logins,
        per_second: logins as f64 / elapsed.as_secs_f64(),
        callback_p50: at(0.5),
        callback_p99: at(0.99),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("logins bench built; run it with `./dev load` or `cargo bench --bench logins`");
        return;
    }
    let logins = env_usize("LOGINS", 300);
    let concurrency = env_usize("LOGINS_CONCURRENCY", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let figures: Vec<Figures> = [10, 1_000]
        .into_iter()
        .map(|orgs| rt.block_on(measure(orgs, logins, concurrency)))
        .collect();
    let mut table = format!(
        "Measured by `cargo bench --bench logins` (part of `./dev load`) at commit `{}` on {}: \
         first logins of new users, {concurrency} scripted browsers at once, each login every \
         redirect from a protected page through the test IdP's login and consent forms to the \
         upstream. The IdP (oidc-provider, Node) shares the cores.\n\n\
         | organizations | logins | logins/s | callback p50 | callback p99 |\n\
         | ---: | ---: | ---: | ---: | ---: |\n",
        report::commit(),
        report::machine(),
    );
    for f in &figures {
        table.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} ms | {:.1} ms |\n",
            f.orgs,
            f.logins,
            f.per_second,
            f.callback_p50.as_secs_f64() * 1e3,
            f.callback_p99.as_secs_f64() * 1e3,
        ));
    }
    println!("\n{table}");
    report::write_section("logins", "## Logins per second", &table);
}
