//! The store, on a SQLite file and on a real PostgreSQL server (started by
//! `./dev test`, which exports PORTCULLIS_TEST_POSTGRES_URL): logins applied
//! in one transaction, concurrent first logins, pre-provisioned users,
//! sessions, the shared signing key, the audit log.

mod support;

use portcullis::config::{Config, StoreKind};
use portcullis::login::provision::provision_login;
use portcullis::provision::{Membership, MembershipSource, Outcome};
use portcullis::store::{AuditFilter, NewSession, NewUser, Store, StoredKey};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database and a URL for it. The temporary directory of a
/// SQLite file lives as long as the returned guard.
struct Db {
    url: String,
    kind: StoreKind,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn fresh(backend: Backend) -> Db {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Db {
                    url: format!("sqlite://{}", dir.path().join("store.db").display()),
                    kind: StoreKind::Sqlite,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => Db {
                url: support::fresh_postgres_database().await,
                kind: StoreKind::Postgres,
                _dir: None,
            },
        }
    }

    async fn open(&self) -> Store {
        Store::open(&self.url, self.kind.clone())
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }
}

fn config() -> Config {
    support::yaml::config(
        r#"identity_providers:
  - id: authentik
    issuer: "https://sso.example.com/"
    client_id: portcullis
    provisioning:
      default:
        org: "contains(groups, '{{orgId}}')"
        roles: "contains(groups, 'admin') && 'Admin' || 'Member'"
  - id: closed
    issuer: "https://closed.example.com/"
    client_id: portcullis
    auto_provision: false
organizations:
  - id: home-lab
    roles: [{name: Admin}, {name: Member}]
  - id: lab-two
    roles: [{name: Admin}, {name: Member}]
    jit:
      email_domains: [example.com]
      default_roles: [Member]
"#,
    )
}

fn claims(sub: &str, groups: &[&str]) -> Value {
    json!({
        "sub": sub,
        "email": format!("{sub}@example.com"),
        "email_verified": true,
        "name": "Example User",
        "groups": groups,
    })
}

fn m(org: &str, roles: &[&str], source: MembershipSource) -> Membership {
    Membership {
        org: org.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        source,
    }
}

async fn login(store: &Store, c: &Config, idp: usize, claims: &Value) -> (Option<String>, Outcome) {
    let applied = provision_login(store, c, &c.identity_providers[idp], claims)
        .await
        .unwrap();
    (applied.user_id, applied.plan.outcome)
}

fn actions(events: &[portcullis::store::AuditEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.action,
                e.organization_id.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

async fn all_events(store: &Store, user: Option<&str>) -> Vec<portcullis::store::AuditEvent> {
    store
        .audit_events(&AuditFilter {
            user_id: user.map(str::to_string),
            org_id: None,
            limit: 1000,
            offset: 0,
            newest_first: false,
        })
        .await
        .unwrap()
}

async fn first_login_then_resync(backend: Backend) {
    let db = Db::fresh(backend).await;
    let store = db.open().await;
    let c = config();
    let (id, outcome) = login(&store, &c, 0, &claims("alice", &["home-lab", "admin"])).await;
    assert_eq!(outcome, Outcome::Allowed);
    let id = id.expect("a user was created");
    let user = store.user(&id).await.unwrap().unwrap();
    assert_eq!(user.email.as_deref(), Some("alice@example.com"));
    assert_eq!(user.identities.len(), 1);
    assert_eq!(user.identities[0].subject.as_deref(), Some("alice"));
    assert_eq!(
        user.memberships,
        vec![
            m("home-lab", &["Admin"], MembershipSource::Policy),
            m("lab-two", &["Member"], MembershipSource::Jit),
        ]
    );
    assert_eq!(
        actions(&all_events(&store, Some(&id)).await),
        [
            "user.created -",
            "membership.created home-lab",
            "membership.created lab-two"
        ]
    );

    // The IdP drops "admin": the policy's roles are replaced.
    let (again, _) = login(&store, &c, 0, &claims("alice", &["home-lab"])).await;
    assert_eq!(again.as_deref(), Some(id.as_str()));
    let user = store.user(&id).await.unwrap().unwrap();
    assert_eq!(
        user.memberships[0],
        m("home-lab", &["Member"], MembershipSource::Policy)
    );

    // The IdP drops the group: the policy membership goes, JIT's stays.
    let (_, outcome) = login(&store, &c, 0, &claims("alice", &[])).await;
    assert_eq!(outcome, Outcome::Allowed);
    let user = store.user(&id).await.unwrap().unwrap();
    assert_eq!(
        user.memberships,
        vec![m("lab-two", &["Member"], MembershipSource::Jit)]
    );
    let events = all_events(&store, Some(&id)).await;
    let removed = events.last().unwrap();
    assert_eq!(removed.action, "membership.removed");
    assert_eq!(removed.actor, "login:authentik");
    assert_eq!(
        removed.before,
        Some(json!({"roles": ["Member"], "source": "policy"}))
    );
    assert_eq!(removed.after, None);
    // Reopening (migrations already applied) keeps everything.
    drop(store);
    let store = db.open().await;
    assert_eq!(store.count_users().await.unwrap(), 1);
}

async fn refused_new_user_leaves_nothing(backend: Backend) {
    let db = Db::fresh(backend).await;
    let store = db.open().await;
    let c = config();
    let mut stranger = claims("mallory", &["elsewhere"]);
    stranger["email"] = json!("mallory@elsewhere.org");
    let (id, outcome) = login(&store, &c, 0, &stranger).await;
    assert_eq!((id, outcome), (None, Outcome::NoMembership));
    // Not known at an IdP without auto-provisioning either.
    let (id, outcome) = login(&store, &c, 1, &claims("bob", &["home-lab"])).await;
    assert_eq!((id, outcome), (None, Outcome::UnknownUser));
    assert_eq!(store.count_users().await.unwrap(), 0);
    assert!(all_events(&store, None).await.is_empty());
}

async fn concurrent_first_logins_make_one_user(backend: Backend) {
    let db = Db::fresh(backend).await;
    // Separate pools: as far as the database can tell, separate replicas.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.open().await);
    }
    let c = std::sync::Arc::new(config());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = stores[i % stores.len()].clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            login(&store, &c, 0, &claims("carol", &["home-lab", "lab-two"])).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let (id, outcome) = t.await.unwrap();
        assert_eq!(outcome, Outcome::Allowed);
        ids.push(id.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every login ended on one user: {ids:?}");
    let store = &stores[0];
    assert_eq!(store.count_users().await.unwrap(), 1);
    let user = store.user(&ids[0]).await.unwrap().unwrap();
    assert_eq!(
        user.memberships,
        vec![
            m("home-lab", &["Member"], MembershipSource::Policy),
            m("lab-two", &["Member"], MembershipSource::Policy),
        ]
    );
    let created: Vec<_> = all_events(store, None)
        .await
        .into_iter()
        .filter(|e| e.action == "user.created")
        .collect();
    assert_eq!(created.len(), 1);
}

async fn pre_provisioned_user_is_linked_by_verified_email(backend: Backend) {
    let db = Db::fresh(backend).await;
    let store = db.open().await;
    let c = config();
    let made = store
        .create_user(
            &NewUser {
                idp: "closed".into(),
                subject: None,
                email: Some("Dave@Example.com".into()),
                name: Some("Dave".into()),
                memberships: vec![m("home-lab", &["Admin"], MembershipSource::Manual)],
            },
            "token:0",
        )
        .await
        .unwrap();
    // The same email again at the same IdP is a conflict.
    let again = store
        .create_user(
            &NewUser {
                idp: "closed".into(),
                subject: None,
                email: Some("dave@example.com".into()),
                name: None,
                memberships: vec![],
            },
            "token:0",
        )
        .await;
    assert!(again.is_err());

    // An unverified email does not link.
    let mut unverified = claims("dave", &[]);
    unverified["email_verified"] = json!("true");
    let (id, outcome) = login(&store, &c, 1, &unverified).await;
    assert_eq!((id, outcome), (None, Outcome::UnknownUser));

    let mut verified = claims("dave", &[]);
    verified["email"] = json!("DAVE@example.com");
    let (id, outcome) = login(&store, &c, 1, &verified).await;
    assert_eq!(outcome, Outcome::Allowed);
    assert_eq!(id.as_deref(), Some(made.id.as_str()));
    let user = store.user(&made.id).await.unwrap().unwrap();
    assert_eq!(user.identities[0].subject.as_deref(), Some("dave"));
    assert_eq!(
        user.memberships,
        vec![m("home-lab", &["Admin"], MembershipSource::Manual)]
    );
    // From now on the subject is the key, whatever the email says.
    let mut renamed = claims("dave", &[]);
    renamed["email"] = json!("someone-else@example.org");
    let (id, _) = login(&store, &c, 1, &renamed).await;
    assert_eq!(id.as_deref(), Some(made.id.as_str()));
    let events = actions(&all_events(&store, Some(&made.id)).await);
    assert_eq!(
        events,
        [
            "user.created -",
            "membership.created home-lab",
            "identity.linked -"
        ]
    );
}

async fn sessions_round_trip(backend: Backend) {
    let db = Db::fresh(backend).await;
    let store = db.open().await;
    let c = config();
    let (id, _) = login(&store, &c, 0, &claims("erin", &["home-lab"])).await;
    let id = id.unwrap();
    let now = portcullis::store::now();
    for (hash, sid) in [("h1", "sid-a"), ("h2", "sid-b")] {
        store
            .create_session(&NewSession {
                id_hash: hash.into(),
                user_id: id.clone(),
                idp: "authentik".into(),
                subject: "erin".into(),
                idp_sub: Some("erin".into()),
                sid: Some(sid.into()),
                id_token: Some("eyJ.x.y".into()),
                refresh_token: None,
                claims: claims("erin", &["home-lab"]),
                expires_at: now + 3600,
            })
            .await
            .unwrap();
    }
    let s = store.session("h1").await.unwrap().unwrap();
    assert_eq!(s.user_id, id);
    assert_eq!(s.sid.as_deref(), Some("sid-a"));
    assert_eq!(s.claims["groups"], json!(["home-lab"]));
    assert_eq!(
        s.memberships,
        vec![
            m("home-lab", &["Member"], MembershipSource::Policy),
            m("lab-two", &["Member"], MembershipSource::Jit),
        ]
    );
    store.touch_session("h1", now + 10).await.unwrap();
    assert_eq!(
        store.session("h1").await.unwrap().unwrap().last_seen_at,
        now + 10
    );
    assert!(store.session("nope").await.unwrap().is_none());

    // Back-channel logout by sid ends that session only; by subject, all.
    let ended = store
        .delete_sessions_by_idp("authentik", Some("erin"), Some("sid-b"))
        .await
        .unwrap();
    assert_eq!(ended, ["h2"]);
    assert!(store.session("h1").await.unwrap().is_some());
    let ended = store
        .delete_sessions_by_idp("authentik", Some("erin"), None)
        .await
        .unwrap();
    assert_eq!(ended, ["h1"]);
    assert!(store.session("h1").await.unwrap().is_none());
    assert!(!store.delete_session("h1").await.unwrap());
}

/// One replica at a time refreshes a session: of two stores (replicas)
/// claiming a due session at once, one gets it; nobody while it is held;
/// a refresh records the IdP's word and releases it; a session not due,
/// or without a refresh token, is never handed out.
async fn one_replica_claims_a_refresh(backend: Backend) {
    let db = Db::fresh(backend).await;
    let (a, b) = (db.open().await, db.open().await);
    let c = config();
    let (id, _) = login(&a, &c, 0, &claims("erin", &["home-lab"])).await;
    let id = id.unwrap();
    let now = portcullis::store::now();
    for (hash, token) in [("r1", Some("sealed-token")), ("r2", None)] {
        a.create_session(&NewSession {
            id_hash: hash.into(),
            user_id: id.clone(),
            idp: "authentik".into(),
            subject: "erin".into(),
            idp_sub: Some("erin".into()),
            sid: None,
            id_token: None,
            refresh_token: token.map(str::to_string),
            claims: claims("erin", &["home-lab"]),
            expires_at: now + 3600,
        })
        .await
        .unwrap();
    }
    let s = a.session("r1").await.unwrap().unwrap();
    assert!(s.refreshable);
    assert_eq!(s.validated_at, s.created_at);
    assert!(!a.session("r2").await.unwrap().unwrap().refreshable);
    // Not due yet (validated after `due`).
    assert!(
        a.claim_refresh("r1", now - 10, now, now + 60)
            .await
            .unwrap()
            .is_none()
    );
    // Due: of two replicas at once, exactly one claims it.
    let later = now + 100;
    let (x, y) = tokio::join!(
        a.claim_refresh("r1", later, later, later + 60),
        b.claim_refresh("r1", later, later, later + 60)
    );
    let claims_won: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
    assert_eq!(claims_won.len(), 1, "one replica refreshes");
    assert_eq!(claims_won[0].refresh_token, "sealed-token");
    assert_eq!(claims_won[0].user_id, id);
    assert_eq!(claims_won[0].claims["groups"], json!(["home-lab"]));
    // Held: nobody else, until the hold runs out.
    assert!(
        b.claim_refresh("r1", later + 30, later + 30, later + 90)
            .await
            .unwrap()
            .is_none()
    );
    // No refresh token: never.
    assert!(
        a.claim_refresh("r2", later, later, later + 60)
            .await
            .unwrap()
            .is_none()
    );
    // A refresh: new claims and token, validated now, hold released.
    a.session_refreshed("r1", &claims("erin", &[]), None, Some("sealed-2"), later)
        .await
        .unwrap();
    let s = b.session("r1").await.unwrap().unwrap();
    assert_eq!(s.validated_at, later);
    assert_eq!(s.claims["groups"], json!([]));
    // The lifetime stays absolute: a refresh never extends it.
    assert_eq!(s.expires_at, now + 3600);
    assert!(
        b.claim_refresh("r1", later, later + 1, later + 61)
            .await
            .unwrap()
            .is_some()
    );
    // Put off (IdP unreachable): not before the hold's end.
    b.hold_refresh("r1", later + 500).await.unwrap();
    assert!(
        a.claim_refresh("r1", later + 400, later + 400, later + 460)
            .await
            .unwrap()
            .is_none()
    );
    let c2 = a
        .claim_refresh("r1", later + 500, later + 500, later + 560)
        .await
        .unwrap();
    assert_eq!(c2.unwrap().refresh_token, "sealed-2");
}

async fn signing_key_is_shared(backend: Backend) {
    let db = Db::fresh(backend).await;
    let (a, b) = (db.open().await, db.open().await);
    let gen_key = |kid: &str| {
        let kid = kid.to_string();
        move || StoredKey {
            kid,
            private_key: "pem".into(),
        }
    };
    let (ka, kb) = tokio::join!(
        a.signing_key("assertion", gen_key("a")),
        b.signing_key("assertion", gen_key("b"))
    );
    let (ka, kb) = (ka.unwrap(), kb.unwrap());
    assert_eq!(ka.kid, kb.kid, "both replicas sign with one key");
    let later = a.signing_key("assertion", gen_key("c")).await.unwrap();
    assert_eq!(later.kid, ka.kid);
}

/// A store made by an earlier version (migrations up to 0003, before
/// claims were kept per identity) is migrated in place at open: its users
/// and memberships are all there, their identities without claims until
/// the next login, which keeps them for `portcullis plan`.
async fn an_older_store_is_migrated_in_place(backend: Backend) {
    let db = Db::fresh(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let which = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/migrations")
        .join(which);
    for file in [
        "0001_init.sql",
        "0002_trust_boundary.sql",
        "0003_session_refresh.sql",
    ] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    sqlx::any::install_default_drivers();
    let url = match backend {
        Backend::Sqlite => format!("{}?mode=rwc", db.url),
        Backend::Postgres => db.url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for sql in [
        "INSERT INTO users (id, email, name, created_at, updated_at) VALUES ('u_old', 's1@example.com', 'Old', 1, 1)",
        "INSERT INTO identities (user_id, idp, subject, email, created_at) VALUES ('u_old', 'authentik', 's1', 's1@example.com', 1)",
        "INSERT INTO memberships (user_id, org_id, source, created_at, updated_at) VALUES ('u_old', 'home-lab', 'policy', 1, 1)",
        "INSERT INTO membership_roles (user_id, org_id, role) VALUES ('u_old', 'home-lab', 'Member')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = db.open().await;
    assert!(store.is_current().await.unwrap());
    let users = store.users_to_replay(None, 10).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0].memberships,
        vec![m("home-lab", &["Member"], MembershipSource::Policy)]
    );
    assert_eq!(
        users[0].identities[0].claims, None,
        "no claims before the next login"
    );
    let c = config();
    let jit = portcullis::provision::jit_from_config(&c);
    let preview = portcullis::provision::preview::preview_user(&c, &jit, &users[0]);
    assert!(
        preview.notes.iter().any(|n| n.contains("no claims kept")),
        "{preview:?}"
    );

    // The next login is the same user, and keeps its claims.
    let kept = claims("s1", &["home-lab", "admin"]);
    let (user, outcome) = login(&store, &c, 0, &kept).await;
    assert_eq!(
        (user.as_deref(), outcome),
        (Some("u_old"), Outcome::Allowed)
    );
    let users = store.users_to_replay(None, 10).await.unwrap();
    assert_eq!(users[0].identities[0].claims.as_ref(), Some(&kept));
    assert_eq!(
        users[0].memberships,
        vec![m("home-lab", &["Admin"], MembershipSource::Policy)]
    );
}

/// Pages of users for `plan` cover every user once, in id order.
async fn users_to_replay_pages_through_everyone(backend: Backend) {
    let db = Db::fresh(backend).await;
    let store = db.open().await;
    let c = config();
    for i in 0..7 {
        login(&store, &c, 0, &claims(&format!("p{i}"), &["home-lab"])).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.users_to_replay(after.as_deref(), 3).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        assert!(page.len() <= 3);
        for u in &page {
            // home-lab by policy, lab-two by its email domain.
            assert_eq!(u.memberships.len(), 2, "{u:?}");
            assert_eq!(u.identities.len(), 1, "{u:?}");
            assert!(u.identities[0].claims.is_some() && u.identities[0].logged_in);
        }
        seen.extend(page.into_iter().map(|u| u.id));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), &seen), (7, &sorted));
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

on_both!(
    first_login_then_resync,
    refused_new_user_leaves_nothing,
    concurrent_first_logins_make_one_user,
    pre_provisioned_user_is_linked_by_verified_email,
    sessions_round_trip,
    one_replica_claims_a_refresh,
    signing_key_is_shared,
    an_older_store_is_migrated_in_place,
    users_to_replay_pages_through_everyone,
);
