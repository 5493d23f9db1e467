//! The soak: the gateway under constant load for minutes, with everything
//! an operator's day brings at the same time. Run it with `./dev soak
//! [--minutes N] [--store sqlite|postgres]` (default 10 minutes, SQLite;
//! `./dev soak` starts a PostgreSQL server for `--store postgres`).
//!
//! While it runs:
//! - `SOAK_RATE` (default 500) requests per second to a protected route,
//!   through a session of a user who stays logged in;
//! - first logins through the test IdP (oidc-provider), each of a user the
//!   gateway has not seen, followed by a logout — front-channel through
//!   the gateway, or back-channel from the IdP — after which the session
//!   must be gone, and the user is deleted through the management API so
//!   that the account's next login is a first login again;
//! - membership changes through the management API (roles set, membership
//!   removed, set again), each of which must show in the audit log;
//! - a configuration reload every 15 seconds, by SIGHUP and by the API in
//!   turn, adding and dropping an organization.
//!
//! The gateway's RSS is sampled every 5 seconds. One summary line at the
//! end; the run fails (exit 1) when a request of the constant load did
//! not answer 200, a login, logout, API change or reload failed, an API
//! change is missing from the audit log, or RSS grew faster than 1 MiB a
//! minute over the second half. The figures go into BENCHMARKS.md. Under
//! `cargo test --benches` it only checks that it was built.

mod report;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Map, Value, json};
use support::idp::{Browser, Idp, client, main_idp_yaml};
use support::{Gateway, listener, localhost_preamble, start_echo};

/// Accounts at the IdP: each is logged in, out and deleted in turn.
const ACCOUNTS: usize = 200;
const LOGIN_WORKERS: usize = 2;
const RELOAD_EVERY: Duration = Duration::from_secs(15);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// RSS growth allowed over the second half, MiB per minute.
const SLOPE_LIMIT: f64 = 1.0;
/// What the soak runs at once (`SOAK_PARTS` picks some).
const ALL_PARTS: [&str; 4] = ["load", "logins", "api", "reloads"];

struct Args {
    minutes: f64,
    store: String,
}

fn args() -> Args {
    let mut out = Args {
        minutes: 10.0,
        store: "sqlite".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => {
                out.minutes = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|m: &f64| *m > 0.0)
                    .expect("--minutes takes a positive number");
            }
            "--store" => {
                out.store = it.next().expect("--store takes sqlite or postgres");
                assert!(
                    out.store == "sqlite" || out.store == "postgres",
                    "--store takes sqlite or postgres, not {:?}",
                    out.store
                );
            }
            _ => {}
        }
    }
    out
}

fn template(idp_port: u16, upstream: std::net::SocketAddr, store_url: &str, spare: bool) -> String {
    let mut yaml = format!(
        "{}identity_providers:\n{}organizations:\n  - id: lab\n    roles: [{{name: Admin}}, {{name: Member}}]\n",
        localhost_preamble(store_url),
        main_idp_yaml(idp_port, "contains(groups, 'admin') && 'Admin' || 'Member'"),
    );
    if spare {
        yaml.push_str("  - id: spare\n    roles: [{name: Member}]\n");
    }
    yaml.push_str(&format!(
        "routes:\n  - name: app\n    hosts: [\"localhost\"]\n    upstreams: [\"{upstream}\"]\n    org: lab\n"
    ));
    yaml
}

fn accounts() -> Value {
    let mut map = Map::new();
    for i in 0..ACCOUNTS {
        map.insert(
            format!("user-{i}"),
            json!({"email": format!("user-{i}@example.com"), "email_verified": true,
                   "name": format!("User {i}"), "groups": ["lab"]}),
        );
    }
    map.insert(
        "steady".into(),
        json!({"email": "steady@example.com", "email_verified": true, "name": "Steady", "groups": ["lab", "admin"]}),
    );
    Value::Object(map)
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    non_2xx: AtomicU64,
    logins: AtomicU64,
    logouts: AtomicU64,
    backchannel: AtomicU64,
    users_deleted: AtomicU64,
    api_changes: AtomicU64,
    reloads: AtomicU64,
    /// Logins, logouts, API calls or reloads that did not go as they must.
    failures: AtomicU64,
}

impl Counts {
    fn fail(&self, what: String) {
        // The first few say what went wrong; the count says how often.
        if self.failures.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("soak: {what}");
        }
    }
}

/// The upstream's echo of the request: the user id the gateway sent.
fn user_id(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v["headers"]["x-auth-user-id"][0]
        .as_str()
        .map(str::to_string)
}

/// One account's round: first login, a request, a logout (front- or
/// back-channel), the session gone, the user deleted.
async fn login_round(gw: &Gateway, idp_port: u16, account: &str, backchannel: bool, c: &Counts) {
    let b = Browser::new();
    let first = b.get(&gw_url(gw, "/dashboard")).await;
    let page = b.sign_in_at_idp(first, account, &mut Vec::new()).await;
    if page.status != 200 {
        return c.fail(format!(
            "{account}: login ended at {} ({})",
            page.url, page.status
        ));
    }
    c.logins.fetch_add(1, Ordering::Relaxed);
    let Some(id) = user_id(&page.body) else {
        return c.fail(format!("{account}: no user id in {}", page.body));
    };
    if backchannel {
        // Signed out at the IdP, which tells the gateway before answering.
        let end = b
            .get(&format!("http://localhost:{idp_port}/session/end"))
            .await;
        let confirm = b.follow(end, &mut Vec::new()).await;
        let Some((action, mut fields)) = confirm.form() else {
            return c.fail(format!("{account}: no logout form at the IdP"));
        };
        fields.push(("logout".into(), "yes".into()));
        let done = b.post_form(&action, &fields).await;
        if done.status >= 400 {
            return c.fail(format!("{account}: IdP logout answered {}", done.status));
        }
        c.backchannel.fetch_add(1, Ordering::Relaxed);
    } else {
        let out = b.get(&gw_url(gw, "/_portcullis/logout")).await;
        if out.status != 302 {
            return c.fail(format!("{account}: logout answered {}", out.status));
        }
        c.logouts.fetch_add(1, Ordering::Relaxed);
    }
    let after = b.get(&gw_url(gw, "/dashboard")).await;
    if after.status != 302 {
        return c.fail(format!(
            "{account}: after logout the session still answered {}",
            after.status
        ));
    }
    let gone = gw
        .api(Method::DELETE, &format!("/api/users/{id}"), None)
        .await;
    if gone.status != 204 {
        return c.fail(format!("{account}: DELETE user answered {}", gone.status));
    }
    c.users_deleted.fetch_add(1, Ordering::Relaxed);
}

fn gw_url(gw: &Gateway, path: &str) -> String {
    format!("http://localhost:{}{path}", gw.http.port())
}

/// The membership changes the API task makes on `user` in org `lab`, in
/// turn; each is one audit event.
fn api_change(n: u64) -> (Method, Option<Value>) {
    match n % 3 {
        0 => (Method::PUT, Some(json!({"roles": ["Admin"]}))),
        1 => (Method::PUT, Some(json!({"roles": ["Member"]}))),
        _ => (Method::DELETE, None),
    }
}

/// The audit events about `user` made by the admin token.
async fn api_audit_events(gw: &Gateway, user: &str) -> u64 {
    let mut n = 0;
    for page in 1.. {
        let got = gw
            .api(
                Method::GET,
                &format!("/api/audit-events?userId={user}&page={page}&page_size=100"),
                None,
            )
            .await;
        let events = got.body.as_array().cloned().unwrap_or_default();
        n += events
            .iter()
            .filter(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("token:")))
            .filter(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("membership."))
            })
            .count() as u64;
        if events.len() < 100 {
            break;
        }
    }
    n
}

/// Least-squares slope of `(minutes, MiB)`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), p| {
        (a + (p.0 - mx) * (p.1 - my), b + (p.0 - mx).powi(2))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

async fn soak(args: &Args) -> bool {
    // `SOAK_PARTS` (comma-separated) runs only some of the activities, to
    // find which one a trend comes from; the figures of such a run are
    // printed but not written into BENCHMARKS.md.
    let parts = std::env::var("SOAK_PARTS").unwrap_or_else(|_| ALL_PARTS.join(","));
    let on = |part: &str| parts.split(',').any(|p| p.trim() == part);
    let rate: u64 = std::env::var("SOAK_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let store_url = match args.store.as_str() {
        "postgres" => support::fresh_postgres_database().await,
        _ => "sqlite://{dir}/portcullis.db".to_string(),
    };
    let upstream = start_echo("app").await;
    let idp_socket = listener();
    let idp_port = idp_socket.local_addr().unwrap().port();
    let gw = Arc::new(Gateway::start(&template(idp_port, upstream, &store_url, false)).await);
    let _idp = Idp::start(
        json!([{
            "clients": [client("portcullis", "main-secret", gw.http.port())],
            "accounts": accounts(),
        }]),
        std::slice::from_ref(&idp_socket),
    );
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));

    // The user who stays: a real login, whose cookie carries the load.
    let steady = Browser::new();
    let first = steady.get(&gw_url(&gw, "/dashboard")).await;
    let page = steady
        .sign_in_at_idp(first, "steady", &mut Vec::new())
        .await;
    assert_eq!(page.status, 200, "the steady user's login: {}", page.body);
    let steady_id = user_id(&page.body).expect("the steady user's id");
    let cookie = steady
        .cookie_line(&gw_url(&gw, "/"))
        .expect("the steady session's cookie")
        .trim_start_matches("Cookie: ")
        .to_string();

    // The API's subject: a manual member of `lab`.
    let made = gw
        .api(
            Method::POST,
            "/api/users",
            Some(json!({"idp": "main", "email": "api-subject@example.com",
                        "memberships": [{"organizationId": "lab", "roles": ["Member"]}]})),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let api_user = made.body["id"].as_str().unwrap().to_string();

    let mut tasks = Vec::new();
    // Constant load: `rate` requests a second over 8 keep-alive clients.
    for _ in 0..if on("load") { 8 } else { 0 } {
        let (gw, c, stop, cookie) = (gw.clone(), counts.clone(), stop.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(8.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let ok = match http
                    .get(gw_url(&gw, "/dashboard"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                c.requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    c.non_2xx.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // First logins and logouts.
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..if on("logins") { LOGIN_WORKERS } else { 0 } {
        let (gw, c, stop, next) = (gw.clone(), counts.clone(), stop.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                // Two workers never hold the same account: ACCOUNTS > workers.
                let account = format!("user-{}", n as usize % ACCOUNTS);
                login_round(&gw, idp_port, &account, n % 2 == 1, &c).await;
            }
        }));
    }
    // Management API membership changes.
    if on("api") {
        let (gw, c, stop, user) = (gw.clone(), counts.clone(), stop.clone(), api_user.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (method, body) = api_change(n);
                let got = gw
                    .api(
                        method,
                        &format!("/api/organizations/lab/users/{user}"),
                        body,
                    )
                    .await;
                if got.status < 300 {
                    c.api_changes.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.fail(format!(
                        "API change {n} answered {}: {:?}",
                        got.status, got.body
                    ));
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Reloads, by SIGHUP and by the API in turn.
    if on("reloads") {
        let (gw, c, stop, store_url) =
            (gw.clone(), counts.clone(), stop.clone(), store_url.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if last.elapsed() < RELOAD_EVERY {
                    continue;
                }
                last = Instant::now();
                n += 1;
                gw.rewrite_config(&template(idp_port, upstream, &store_url, n % 2 == 1));
                let before = metric(&gw, "portcullis_config_reloads_total").await;
                if n.is_multiple_of(2) {
                    gw.signal("HUP");
                } else {
                    let got = gw.api(Method::POST, "/api/config/reload", None).await;
                    if got.status >= 300 {
                        c.fail(format!("reload by the API answered {}", got.status));
                        continue;
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if metric(&gw, "portcullis_config_reloads_total").await > before {
                        c.reloads.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if Instant::now() > deadline {
                        c.fail(format!("reload {n} not applied within 10 s"));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // Sampling, and the progress line.
    let started = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    while started.elapsed() < total {
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        samples.push((minutes, support::rss_mib(gw.pid())));
        eprintln!(
            "soak: {:>5.1} min  requests {}  non-2xx {}  logins {}  failures {}  RSS {:.1} MiB",
            minutes,
            counts.requests.load(Ordering::Relaxed),
            counts.non_2xx.load(Ordering::Relaxed),
            counts.logins.load(Ordering::Relaxed),
            counts.failures.load(Ordering::Relaxed),
            samples.last().unwrap().1,
        );
        tokio::time::sleep(SAMPLE_EVERY.min(total.saturating_sub(started.elapsed()))).await;
    }
    samples.push((
        started.elapsed().as_secs_f64() / 60.0,
        support::rss_mib(gw.pid()),
    ));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let c = &counts;
    let api_changes = c.api_changes.load(Ordering::Relaxed);
    let audited = api_audit_events(&gw, &api_user).await;
    let missing = api_changes.saturating_sub(audited);
    // The steady session lived through it all.
    let still = gw
        .api(
            Method::GET,
            &format!("/api/users/{steady_id}/sessions"),
            None,
        )
        .await;
    if still.body.as_array().is_none_or(|s| s.is_empty()) {
        c.fail("the steady user's session is gone".into());
    }
    let half = args.minutes / 2.0;
    let second_half: Vec<(f64, f64)> = samples.iter().copied().filter(|p| p.0 >= half).collect();
    let rss_slope = slope(&second_half);
    let rss_max = samples.iter().map(|p| p.1).fold(0.0, f64::max);
    let (first, last) = (samples[0].1, samples.last().unwrap().1);
    let line = format!(
        "soak: store={} minutes={} requests={} non-2xx={} logins={} logouts={} back-channel={} \
         users-deleted={} api-changes={} audit-missing={missing} reloads={} failures={} \
         rss-mib first/max/last={first:.1}/{rss_max:.1}/{last:.1} slope-second-half={rss_slope:+.2} MiB/min",
        args.store,
        args.minutes,
        c.requests.load(Ordering::Relaxed),
        c.non_2xx.load(Ordering::Relaxed),
        c.logins.load(Ordering::Relaxed),
        c.logouts.load(Ordering::Relaxed),
        c.backchannel.load(Ordering::Relaxed),
        c.users_deleted.load(Ordering::Relaxed),
        api_changes,
        c.reloads.load(Ordering::Relaxed),
        c.failures.load(Ordering::Relaxed),
    );
    println!("{line}");
    let passed = c.non_2xx.load(Ordering::Relaxed) == 0
        && c.failures.load(Ordering::Relaxed) == 0
        && missing == 0
        && rss_slope < SLOPE_LIMIT;
    let section = format!(
        "Measured by `./dev soak --minutes {} --store {}` at commit `{}` on {}: {rate} requests/s \
         to a protected route through one session, first logins and logouts (front- and \
         back-channel) of {ACCOUNTS} accounts in turn by {LOGIN_WORKERS} scripted browsers, \
         management API membership changes every 200 ms, a reload every {} s. Goal: 0 errors, \
         every API change audited, RSS slope under {SLOPE_LIMIT} MiB/min over the second half: \
         **{}**.\n\n```\n{line}\n```\n",
        args.minutes,
        args.store,
        report::commit(),
        report::machine(),
        RELOAD_EVERY.as_secs(),
        if passed { "met" } else { "not met" },
    );
    if ALL_PARTS.iter().any(|p| !on(p)) {
        println!("(SOAK_PARTS={parts}: not written into BENCHMARKS.md)");
        return passed;
    }
    report::write_section(
        &format!("soak-{}", args.store),
        &format!("## Soak ({})", args.store),
        &section,
    );
    passed
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    support::metric_value(&gw.metrics().await, name).unwrap_or(0.0)
}

fn main() -> std::process::ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak built; run it with `./dev soak [--minutes N] [--store sqlite|postgres]`");
        return std::process::ExitCode::SUCCESS;
    }
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if rt.block_on(soak(&args)) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
