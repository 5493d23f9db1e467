//! The bad day (SPEC 4, 7): the gateway killed in the middle of a burst
//! of first logins, an upstream that goes away and comes back, the IdP
//! gone for a while. Each ends with the gateway serving again and nothing
//! half-written in the store.

mod support;

use std::time::{Duration, Instant};

use portcullis::config::StoreKind;
use portcullis::store::Store;
use serde_json::json;
use sqlx::Connection;
use support::flaky::Flaky;
use support::idp::Browser;
use support::rogue::{CLIENT_ID, Rogue};
use support::*;

fn template(issuer: &str, upstream: std::net::SocketAddr) -> String {
    template_on("sqlite://{dir}/portcullis.db", issuer, upstream)
}

fn template_on(store_url: &str, issuer: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"{head}identity_providers:
  - id: rogue
    display_name: "Rogue IdP"
    issuer: "{issuer}"
    client_id: {CLIENT_ID}
    claims: id_token
    provisioning:
      default:
        org: "contains(groups, '{{{{orgId}}}}')"
        roles: "'Member'"
organizations:
  - id: home-lab
    roles: [{{name: Member}}]
routes:
  - name: app
    hosts: ["localhost"]
    upstreams: ["{upstream}"]
    org: home-lab
"#,
        head = localhost_preamble(store_url),
    )
}

/// A first login through the rogue IdP, up to the gateway's answer to the
/// callback; `Err` when a connection fails on the way (the gateway killed).
async fn try_login(port: u16) -> Result<(u16, Option<String>), reqwest::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()?;
    let start = client
        .get(format!("http://localhost:{port}/_portcullis/login?rd=%2F"))
        .send()
        .await?;
    let to_idp = start.headers()["location"].to_str().unwrap().to_string();
    let at_idp = client.get(to_idp).send().await?;
    let back = at_idp.headers()["location"].to_str().unwrap().to_string();
    let answer = client.get(back).send().await?;
    let session = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("_portcullis=") && !c.starts_with("_portcullis=;"))
        .map(|c| c.split(';').next().unwrap().to_string());
    Ok((answer.status().as_u16(), session))
}

/// The rogue IdP answering each login as a user never seen before, a
/// member of home-lab.
async fn first_logins_idp() -> Rogue {
    let rogue = Rogue::start().await;
    rogue.set_claims(json!({"groups": ["home-lab"]}));
    rogue.unique_subjects();
    rogue
}

/// 20 first logins started at once, returned once `at_least` users are in
/// the store at `url`: some logins done, others still in flight.
async fn first_logins_under_way(
    port: u16,
    url: &str,
    kind: StoreKind,
    at_least: i64,
) -> Vec<tokio::task::JoinHandle<Result<(u16, Option<String>), reqwest::Error>>> {
    let logins = (0..20)
        .map(|_| tokio::spawn(async move { try_login(port).await }))
        .collect();
    let store = Store::open(url, kind).await.unwrap();
    eventually(
        "a few first logins done",
        Duration::from_secs(30),
        || async { (store.count_users().await.unwrap() >= at_least).then_some(()) },
    )
    .await;
    logins
}

async fn one_value(db: &mut sqlx::AnyConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db)
        .await
        .unwrap()
}

/// What a half-written login would leave, counted in the store at `url`
/// (SQLite or PostgreSQL): each must be none; a SQLite file must pass
/// `PRAGMA integrity_check` too. Returns the users.
async fn assert_nothing_half_written(url: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(url).await.unwrap();
    if url.starts_with("sqlite:") {
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(check, "ok", "PRAGMA integrity_check of {url}");
    }
    let half_written = [
        (
            "a user without a membership",
            "SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
             (SELECT 1 FROM memberships m WHERE m.user_id = u.id)",
        ),
        (
            "a user without an identity",
            "SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
             (SELECT 1 FROM identities i WHERE i.user_id = u.id)",
        ),
        (
            "a session without a user",
            "SELECT COUNT(*) FROM sessions s WHERE NOT EXISTS \
             (SELECT 1 FROM users u WHERE u.id = s.user_id)",
        ),
        (
            "a user without its user.created audit event",
            "SELECT COUNT(*) FROM users u WHERE NOT EXISTS \
             (SELECT 1 FROM audit_events a WHERE a.user_id = u.id AND a.action = 'user.created')",
        ),
    ];
    for (what, sql) in half_written {
        assert_eq!(one_value(&mut db, sql).await, 0, "{what}");
    }
    one_value(&mut db, "SELECT COUNT(*) FROM users").await
}

/// SIGKILL while 20 first logins are in flight, then a restart on the
/// same SQLite file: the file is intact, every login either happened
/// whole or not at all, and logins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_first_logins_leaves_the_store_whole() {
    let rogue = first_logins_idp().await;
    let upstream = start_echo("app").await;
    let mut gw = Gateway::start(&template(&rogue.issuer(), upstream)).await;
    let db_path = gw.dir.path().join("portcullis.db");
    let url = format!("sqlite://{}", db_path.display());
    let port = gw.http.port();

    // Kill once some logins are through and others are not.
    let logins = first_logins_under_way(port, &url, StoreKind::Sqlite, 3).await;
    gw.signal("KILL");
    let mut completed = 0;
    for l in logins {
        if let Ok(Ok((302, Some(_)))) = l.await {
            completed += 1;
        }
    }
    gw.restart().await;

    let users = assert_nothing_half_written(&url).await;
    assert!(
        users >= completed,
        "{users} users, {completed} logins completed"
    );

    // Logins work again, and their sessions pass.
    let (status, session) = try_login(port).await.unwrap();
    assert_eq!(status, 302);
    let cookie = format!("Cookie: {}", session.unwrap());
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
}

/// PostgreSQL restarted (a crash: every connection cut, in-flight
/// transactions lost) while 20 first logins are in flight and a signed-in
/// user keeps working: each login completes or answers 503, never another
/// error or a hang; the signed-in user is served throughout from the
/// cache; nothing is half-written; and the gateway, not restarted, takes
/// logins again once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_first_logins_loses_nothing_and_recovers() {
    let pg = own_postgres::OwnPostgres::start();
    let rogue = first_logins_idp().await;
    let upstream = start_echo("app").await;
    let gw = Gateway::start(&template_on(&pg.url(), &rogue.issuer(), upstream)).await;
    let port = gw.http.port();
    let (status, session) = try_login(port).await.unwrap();
    assert_eq!(status, 302);
    let cookie = format!("Cookie: {}", session.unwrap());
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);

    // The signed-in user's requests, all through the restart.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let (stop, cookie, addr) = (stop.clone(), cookie.clone(), gw.http);
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(get(addr, "localhost", "/", &[&cookie]).await.status);
            }
            statuses
        })
    };
    let logins = first_logins_under_way(port, &pg.url(), StoreKind::Postgres, 4).await;
    pg.restart();

    let mut outcomes = std::collections::BTreeMap::new();
    for l in logins {
        let (status, session) = l.await.unwrap().expect("every login is answered");
        assert!(
            (status == 302 && session.is_some()) || (status == 503 && session.is_none()),
            "a login ended {status} (session: {session:?})"
        );
        *outcomes.entry(status).or_insert(0) += 1;
    }
    eprintln!("first logins through the restart, by status: {outcomes:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = steady.await.unwrap();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "the signed-in user got {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );

    let users = assert_nothing_half_written(&pg.url()).await;
    assert!(
        users > outcomes.get(&302).copied().unwrap_or(0),
        "{users} users, outcomes {outcomes:?}"
    );
    // Back without a restart of the gateway: new logins and their sessions.
    let session = eventually(
        "a login after the restart",
        Duration::from_secs(30),
        || async {
            match try_login(port).await {
                Ok((302, Some(s))) => Some(s),
                _ => None,
            }
        },
    )
    .await;
    let cookie = format!("Cookie: {session}");
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
}

/// A small tmpfs of the test's own, unmounted when dropped. Mounting needs
/// root, which `./dev test` (and CI) has.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs at {} needs root (./dev test runs as root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_path_buf())
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        // What a full disk leaves: a few bytes at most.
        while f.write_all(&block[..512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The SQLite store's disk full: logins that must write answer 503 (never
/// another error), the signed-in user is served from the cache, and once
/// there is room again logins work and the file is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_with_503_and_corrupts_nothing() {
    let rogue = first_logins_idp().await;
    let upstream = start_echo("app").await;
    let disk = std::sync::Mutex::new(None);
    let gw = Gateway::start_with(
        &template_on(
            "sqlite://{dir}/disk/portcullis.db",
            &rogue.issuer(),
            upstream,
        ),
        |dir| *disk.lock().unwrap() = Some(SmallDisk::mount(&dir.join("disk"), "8m")),
    )
    .await;
    let disk = disk.into_inner().unwrap().unwrap();
    let port = gw.http.port();
    let (status, session) = try_login(port).await.unwrap();
    assert_eq!(status, 302);
    let cookie = format!("Cookie: {}", session.unwrap());
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);

    let filler = disk.fill();
    // SQLite reuses pages it already has, so a few writes may still fit:
    // logins go on until the disk refuses one.
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let (status, _) = try_login(port).await.unwrap();
        assert!(
            status == 302 || status == 503,
            "a login on a full disk answered {status}"
        );
        statuses.push(status);
        if status == 503 {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "200 logins fitted on a full disk"
    );
    eprintln!(
        "logins on the full disk before one was refused: {}",
        statuses.len()
    );
    // The management API's writes say the same.
    let write = gw
        .api(
            reqwest::Method::POST,
            "/api/users",
            Some(json!({"idp": "rogue", "email": "full@example.com",
                        "memberships": [{"organizationId": "home-lab", "roles": ["Member"]}]})),
        )
        .await;
    assert_eq!(write.status, 503, "{:?}", write.body);
    // Reads from the cache keep working.
    for _ in 0..20 {
        assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
    }

    std::fs::remove_file(filler).unwrap();
    // Every connection of the store's pool (4) takes a turn: none is left
    // broken by the failed writes.
    for i in 0..8 {
        let (status, session) = try_login(port).await.unwrap();
        assert_eq!(
            status,
            302,
            "login {i} once there is room again:\n{}",
            gw.logs()
        );
        let cookie = format!("Cookie: {}", session.unwrap());
        assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
    }
    let url = format!(
        "sqlite://{}",
        gw.dir.path().join("disk/portcullis.db").display()
    );
    assert_nothing_half_written(&url).await;
    drop(gw);
}

/// An upstream that disappears and comes back: 502 while it is gone,
/// answered at once rather than hanging, the session untouched; served
/// again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_that_goes_away_gives_502_then_serves_again() {
    let rogue = Rogue::start().await;
    let flaky = Flaky::bind(start_echo("app").await).await;
    let gw = Gateway::start(&template(&rogue.issuer(), flaky.addr)).await;
    let (status, session) = try_login(gw.http.port()).await.unwrap();
    assert_eq!(status, 302);
    let cookie = format!("Cookie: {}", session.unwrap());
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);

    flaky.set_down(true);
    for _ in 0..5 {
        let started = Instant::now();
        let r = get(gw.http, "localhost", "/", &[&cookie]).await;
        assert_eq!(r.status, 502, "{}", r.body);
        // Bounded by the upstream connect timeout (5 s), never a hang.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    flaky.set_down(false);
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
    let m = gw.metrics().await;
    assert!(m.contains("status=\"502\""), "502s counted: {m}");
}

/// The IdP gone for a while: existing sessions keep working; a login that
/// needs it gets the 502 page naming it; logins work once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_idp_gone_keeps_sessions_and_names_it_to_new_logins() {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flaky = Flaky::start(relay, inner.local_addr().unwrap());
    let rogue = Rogue::serve_as(inner, flaky.addr);
    let upstream = start_echo("app").await;
    let gw = Gateway::start(&template(&rogue.issuer(), upstream)).await;
    let port = gw.http.port();
    let (status, session) = try_login(port).await.unwrap();
    assert_eq!(status, 302);
    let cookie = format!("Cookie: {}", session.unwrap());

    // A browser on its way back from the IdP when it goes away.
    let b = Browser::new();
    let start = b
        .get(&format!("http://localhost:{port}/_portcullis/login?rd=%2F"))
        .await;
    let at_idp = b.get(&start.location().unwrap()).await;
    flaky.set_down(true);

    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
    let answer = b.get(&at_idp.location().unwrap()).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(answer.body.contains("Rogue IdP"), "{}", answer.body);
    assert!(
        answer
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with("_portcullis=") || c.starts_with("_portcullis=;")),
        "no session without the IdP's word"
    );

    flaky.set_down(false);
    let (status, session) = try_login(port).await.unwrap();
    assert_eq!(status, 302);
    assert!(session.is_some());
    assert_eq!(get(gw.http, "localhost", "/", &[&cookie]).await.status, 200);
}
