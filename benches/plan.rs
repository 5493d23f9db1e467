//! `portcullis plan` over a large store: 100,000 users on SQLite, each
//! with the claims of a last login and two policy memberships, planned
//! under a configuration that changes an expression, renames a role and
//! drops an organization. Timed end to end (the real command, its JSON
//! written to a file) with its peak RSS, into BENCHMARKS.md. Run it with
//! `./dev load` or `cargo bench --bench plan` (`PLAN_USERS=n`, default
//! 100,000). Under `cargo test --benches` it plans 2,000 users and checks
//! the totals.

mod report;

use std::path::Path;
use std::time::Instant;

use sqlx::sqlite::SqlitePoolOptions;

const ORGS: usize = 10;

/// The configuration planned: org-0's expression now wants `admin` too,
/// `Admin` is renamed `Administrator`, org-9 is dropped.
fn new_config(store: &Path) -> String {
    let mut yaml = format!(
        r#"server:
  listen: "127.0.0.1:0"
  public_url: "https://auth.example.com"
store:
  url: "sqlite://{}"
session:
  secret: "0123456789abcdef0123456789abcdef"
identity_providers:
  - id: main
    issuer: "https://sso.example.com/"
    client_id: portcullis
    provisioning:
      default:
        org: "contains(groups, '{{{{orgId}}}}')"
        roles: "contains(groups, 'admin') && 'Administrator' || 'Member'"
      organizations:
        org-0:
          org: "contains(groups, 'org-0') && contains(groups, 'admin')"
organizations:
"#,
        store.display()
    );
    for i in 0..ORGS - 1 {
        yaml.push_str(&format!(
            "  - id: org-{i}\n    roles: [{{name: Administrator}}, {{name: Member}}]\n"
        ));
    }
    yaml.push_str("routes: []\n");
    yaml
}

/// User `i`: member of org-(i % 10) and org-((i + 1) % 10); every fifth an
/// admin. What a login under the old configuration would have stored.
async fn fill(db: &Path, users: usize) {
    let url = format!("sqlite://{}", db.display());
    // Migrated by the store itself, as the gateway would.
    portcullis::store::Store::open(&url, portcullis::config::StoreKind::Sqlite)
        .await
        .unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..users {
        let id = format!("user-{i:07}");
        let admin = i % 5 == 0;
        let orgs = [i % ORGS, (i + 1) % ORGS];
        let mut groups: Vec<String> = orgs.iter().map(|o| format!("org-{o}")).collect();
        if admin {
            groups.push("admin".into());
        }
        let claims = serde_json::json!({"sub": id, "email": format!("{id}@example.com"),
            "email_verified": true, "name": format!("User {i}"), "groups": groups});
        sqlx::query(
            "INSERT INTO users (id, email, name, created_at, updated_at) VALUES (?, ?, ?, 0, 0)",
        )
        .bind(&id)
        .bind(format!("{id}@example.com"))
        .bind(format!("User {i}"))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO identities (user_id, idp, subject, email, created_at, claims) VALUES (?, 'main', ?, ?, 0, ?)",
        )
        .bind(&id)
        .bind(&id)
        .bind(format!("{id}@example.com"))
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
        for o in orgs {
            let org = format!("org-{o}");
            sqlx::query("INSERT INTO memberships (user_id, org_id, source, created_at, updated_at) VALUES (?, ?, 'policy', 0, 0)")
                .bind(&id)
                .bind(&org)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO membership_roles (user_id, org_id, role) VALUES (?, ?, ?)")
                .bind(&id)
                .bind(&org)
                .bind(if admin { "Admin" } else { "Member" })
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// The largest peak RSS of the children waited for so far, in MiB.
fn children_peak_rss_mib() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    // Linux reports ru_maxrss in KiB.
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss() as f64 / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let users: usize = if quick {
        2_000
    } else {
        std::env::var("PLAN_USERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000)
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("portcullis.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let filled = Instant::now();
    rt.block_on(fill(&db, users));
    eprintln!("{users} users written in {:?}", filled.elapsed());
    let config = dir.path().join("new.yaml");
    std::fs::write(&config, new_config(&db)).unwrap();
    let out_path = dir.path().join("plan.json");

    let started = Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["plan", "--json", "--config"])
        .arg(&config)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .status()
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "portcullis plan failed: {status}");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    let totals = &plan["totals"];
    let peak = children_peak_rss_mib();
    // See fill(): every admin's roles are renamed, org-0's non-admins
    // lose org-0 and org-9's memberships are dropped.
    assert_eq!(totals["users"], users as u64, "{totals}");
    let org9 = (0..users)
        .filter(|i| i % ORGS == 9 || (i + 1) % ORGS == 9)
        .count() as u64;
    assert_eq!(
        totals["organizations"]["org-9"]["removed"], org9,
        "{totals}"
    );
    let org0_removed = (0..users)
        .filter(|i| (i % ORGS == 0 || (i + 1) % ORGS == 0) && i % 5 != 0)
        .count() as u64;
    assert_eq!(
        totals["organizations"]["org-0"]["removed"], org0_removed,
        "{totals}"
    );
    let per_second = users as f64 / took.as_secs_f64();
    println!("plan: {users} users in {took:.2?} ({per_second:.0} users/s), peak RSS {peak:.0} MiB");
    if quick {
        return;
    }
    let section = format!(
        "Measured by `cargo bench --bench plan` (part of `./dev load`) at commit `{}` on {}: \
         `portcullis plan --json` over a SQLite store of {users} users (each with kept claims and \
         two policy memberships, {ORGS} organizations) under a configuration that changes an \
         expression, renames a role and drops an organization; output to a file.\n\n\
         | users | time | users/s | peak RSS |\n| ---: | ---: | ---: | ---: |\n| {users} | {:.1} s | {per_second:.0} | {peak:.0} MiB |\n",
        report::commit(),
        report::machine(),
        took.as_secs_f64(),
    );
    report::write_section("plan", "## Policy plan", &section);
}
