//! What one cached session costs in memory, part by part: 100,000
//! principals built as a cache miss builds them (`Principal::from_record`),
//! then each with the assertion its first protected request signs, then
//! each in a moka cache built as the session cache is (capacity 100,000,
//! time to live). Resident memory (`VmRSS`) before and after each step,
//! per session, with the allocator the gateway runs with. Two claim sets:
//! the load harness's (`sub` only) and a typical ID token's.
//!
//! `cargo bench --bench session_memory`; under `cargo test --benches` it
//! only checks that it was built. Writes its section of BENCHMARKS.md.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use portcullis::assertion::Signer;
use portcullis::provision::{Membership, MembershipSource};
use portcullis::session::Principal;
use portcullis::store::SessionRecord;

mod report;
#[path = "../tests/support/mod.rs"]
mod support;

const SESSIONS: usize = 100_000;

fn rss_bytes() -> f64 {
    support::rss_mib(std::process::id()) * 1024.0 * 1024.0
}

fn record(i: usize, claims: &serde_json::Value) -> SessionRecord {
    SessionRecord {
        id_hash: format!("{:064x}", i),
        user_id: format!("u_{i:024}"),
        idp: "authentik".into(),
        subject: format!("9590c3bf-8b6e-4f5c-a7b2-{i:012}"),
        sid: None,
        id_token: None,
        claims: claims.clone(),
        created_at: 0,
        last_seen_at: portcullis::store::now(),
        expires_at: portcullis::store::now() + 3600,
        validated_at: portcullis::store::now(),
        refreshable: false,
        email: Some(format!("user{i}@example.com")),
        name: Some("Example User".into()),
        memberships: vec![Membership {
            org: "lab".into(),
            roles: vec!["Admin".into()],
            source: MembershipSource::Manual,
        }],
    }
}

/// Bytes per session: principals alone, with an assertion, in the cache.
fn measure(claims: &serde_json::Value, signer: &Signer, rt: &tokio::runtime::Runtime) -> [f64; 3] {
    let cache: moka::future::Cache<Arc<str>, Option<Arc<Principal>>> =
        moka::future::Cache::builder()
            .max_capacity(SESSIONS as u64)
            .time_to_live(Duration::from_secs(300))
            .build();
    let before = rss_bytes();
    let principals: Vec<Arc<Principal>> = (0..SESSIONS)
        .map(|i| Arc::new(Principal::from_record(record(i, claims), 1)))
        .collect();
    let alone = rss_bytes();
    let now = portcullis::store::now();
    for p in &principals {
        p.assertion(
            signer,
            "https://auth.example.com",
            "app.example.com",
            Some("lab"),
            now,
        )
        .unwrap();
    }
    let signed = rss_bytes();
    rt.block_on(async {
        for p in &principals {
            cache
                .insert(p.session_hash.clone().unwrap(), Some(p.clone()))
                .await;
        }
        cache.run_pending_tasks().await;
    });
    assert_eq!(cache.entry_count(), SESSIONS as u64);
    let cached = rss_bytes();
    let per = |b: f64| b / SESSIONS as f64;
    [
        per(alone - before),
        per(signed - alone),
        per(cached - signed),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench" || a == "--case") {
        println!("session memory bench built; run it with `cargo bench --bench session_memory`");
        return;
    }
    let typical = serde_json::json!({
        "iss": "https://sso.example.com/application/o/portcullis/",
        "sub": "9590c3bf-8b6e-4f5c-a7b2-1f0c2d3e4a5b",
        "aud": "portcullis",
        "exp": 1767225600, "iat": 1767222000, "auth_time": 1767222000,
        "acr": "goauthentik.io/providers/oauth2/default",
        "email": "user@example.com", "email_verified": true,
        "name": "Example User", "given_name": "Example", "preferred_username": "user",
        "nickname": "user",
        "groups": ["grafana", "engineering", "vpn-users"],
    });
    let cases = [
        (
            "`sub` only (as the load harness)",
            serde_json::json!({"sub": "load"}),
        ),
        ("a typical ID token (14 claims, 3 groups)", typical),
    ];
    let mut table = format!(
        "Measured by `cargo bench --bench session_memory` at commit `{}` on {}: {SESSIONS} sessions \
         (one organization, one role, an email and a name each), resident memory per session after each step.\n\n\
         | claims | principal | + its assertion | + its cache entry | in all |\n| --- | ---: | ---: | ---: | ---: |\n",
        report::commit(),
        report::machine(),
    );
    // Each case in a process of its own: memory freed by one case and kept
    // by the allocator would make the next look smaller.
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let case: usize = args[i + 1].parse().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let signer = Signer::new(&Signer::generate().unwrap()).unwrap();
        let [alone, signed, cached] = measure(&cases[case].1, &signer, &rt);
        println!("{alone} {signed} {cached}");
        return;
    }
    for (case, (name, _)) in cases.iter().enumerate() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--case", &case.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let figures: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let [alone, signed, cached] = [figures[0], figures[1], figures[2]];
        eprintln!(
            "{name}: principal {alone:.0} B, assertion {signed:.0} B, cache entry {cached:.0} B"
        );
        table.push_str(&format!(
            "| {name} | {alone:.0} B | {signed:.0} B | {cached:.0} B | {:.0} B |\n",
            alone + signed + cached
        ));
    }
    println!("\n{table}");
    report::write_section("session-memory", "## Memory per cached session", &table);
}
