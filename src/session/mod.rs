//! Sessions: ids in cookies, records in the store, and a moka cache in
//! front so that the request path reads the store only on a miss. A cached
//! entry lives at most `store.cache_ttl`, which bounds how long a logout,
//! revocation or role change made on another replica takes to arrive.

pub mod cookie;
pub(crate) mod login_state;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use jmespath::{Rcvar, ToJmespath};
use serde_json::Value;

use crate::assertion::{AssertionClaims, AssertionError, LIFETIME_SECS, REUSE_MARGIN_SECS, Signer};
use crate::authz::Denied;
use crate::metrics::Metrics;
use crate::store::{SessionRecord, Store, StoreError};
use crate::util::Background;

/// Who a request is from: a session's user, with what the policy and the
/// identity headers need. Also caches the route verdicts and assertions
/// made for it, which die with it.
pub struct Principal {
    pub session_hash: Option<String>,
    pub user_id: String,
    pub idp: String,
    pub subject: String,
    pub email: Option<String>,
    /// The claims say `email_verified: true` (the JSON boolean).
    pub email_verified: bool,
    pub name: Option<String>,
    pub claims: Value,
    pub claims_data: Rcvar,
    /// Roles by organization id, sorted.
    pub roles: BTreeMap<String, Vec<String>>,
    pub expires_at: i64,
    /// When the IdP last vouched for the session (login or refresh).
    pub validated_at: i64,
    /// The session holds a refresh token.
    pub refreshable: bool,
    last_seen: AtomicI64,
    /// [`Sessions::stamp`] taken before the store was read for this
    /// principal: a user forgotten at or after it makes it stale.
    loaded: u64,
    verdicts: Mutex<HashMap<(u64, usize), Result<(), Denied>>>,
    /// Few entries (one per host and org the user visits): a list.
    assertions: Mutex<Vec<CachedAssertion>>,
}

struct CachedAssertion {
    issuer: String,
    audience: String,
    org: Option<String>,
    jwt: Arc<str>,
    exp: i64,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("user_id", &self.user_id)
            .field("idp", &self.idp)
            .finish()
    }
}

impl Principal {
    /// `loaded`: the [`Sessions::stamp`] taken before `r` was read.
    pub fn from_record(r: SessionRecord, loaded: u64) -> Principal {
        let claims_data = (&r.claims)
            .to_jmespath()
            .unwrap_or_else(|_| Rcvar::new(jmespath::Variable::Null));
        let roles = r
            .memberships
            .into_iter()
            .map(|m| (m.org, m.roles))
            .collect();
        Principal {
            session_hash: Some(r.id_hash),
            user_id: r.user_id,
            idp: r.idp,
            subject: r.subject,
            email: r.email,
            email_verified: email_verified(&r.claims),
            name: r.name,
            claims: r.claims,
            claims_data,
            roles,
            expires_at: r.expires_at,
            validated_at: r.validated_at,
            refreshable: r.refreshable,
            last_seen: AtomicI64::new(r.last_seen_at),
            loaded,
            verdicts: Mutex::new(HashMap::new()),
            assertions: Mutex::new(Vec::new()),
        }
    }

    /// A bearer token's user: no session, the token's claims, live until
    /// the token expires.
    pub fn from_token(
        user: crate::store::User,
        idp: &str,
        subject: &str,
        claims: Value,
        expires_at: i64,
        loaded: u64,
    ) -> Principal {
        let claims_data = (&claims)
            .to_jmespath()
            .unwrap_or_else(|_| Rcvar::new(jmespath::Variable::Null));
        Principal {
            session_hash: None,
            user_id: user.id,
            idp: idp.to_string(),
            subject: subject.to_string(),
            email: user.email,
            email_verified: email_verified(&claims),
            name: user.name,
            claims,
            claims_data,
            roles: user
                .memberships
                .into_iter()
                .map(|m| (m.org, m.roles))
                .collect(),
            expires_at,
            validated_at: crate::store::now(),
            refreshable: false,
            last_seen: AtomicI64::new(crate::store::now()),
            loaded,
            verdicts: Mutex::new(HashMap::new()),
            assertions: Mutex::new(Vec::new()),
        }
    }

    /// Within its lifetime and not idle for longer than `idle`.
    pub fn is_live(&self, now: i64, idle: i64) -> bool {
        now < self.expires_at && now - self.last_seen.load(Ordering::Relaxed) < idle
    }

    pub fn seen(&self, now: i64) {
        self.last_seen.fetch_max(now, Ordering::Relaxed);
    }

    /// The user's email, when the IdP verified it; else nothing.
    pub fn verified_email(&self) -> Option<&str> {
        self.email.as_deref().filter(|_| self.email_verified)
    }

    /// The ID token's `acr`, when known.
    pub fn acr(&self) -> Option<&str> {
        self.claims.get("acr").and_then(Value::as_str)
    }

    /// The ID token's `auth_time`, when known.
    pub fn auth_time(&self) -> Option<i64> {
        self.claims.get("auth_time").and_then(Value::as_i64)
    }

    pub fn roles_in(&self, org: &str) -> &[String] {
        self.roles.get(org).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The route policy's verdict for this principal, computed once per
    /// config generation and route.
    pub fn verdict(&self, generation: u64, route: &crate::config::Route) -> Result<(), Denied> {
        let key = (generation, route.index);
        if let Some(v) = self.verdicts.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return v;
        }
        let v = crate::authz::authorize(route, &self.roles, &self.claims_data);
        if let Ok(mut m) = self.verdicts.lock() {
            m.insert(key, v.clone());
        }
        v
    }

    /// An assertion for this principal at `audience`, reused while it has
    /// more than a minute left.
    pub fn assertion(
        &self,
        signer: &Signer,
        issuer: &str,
        audience: &str,
        org: Option<&str>,
        now: i64,
    ) -> Result<Arc<str>, AssertionError> {
        let cached = self.assertions.lock().ok().and_then(|list| {
            list.iter()
                .find(|a| a.audience == audience && a.org.as_deref() == org && a.issuer == issuer)
                .filter(|a| a.exp - now > REUSE_MARGIN_SECS)
                .map(|a| a.jwt.clone())
        });
        if let Some(jwt) = cached {
            return Ok(jwt);
        }
        let exp = (now + LIFETIME_SECS).min(self.expires_at.max(now + REUSE_MARGIN_SECS));
        let jwt: Arc<str> = signer
            .sign(&AssertionClaims {
                iss: issuer,
                aud: audience,
                sub: &self.user_id,
                email: self.verified_email(),
                email_verified: self.verified_email().is_some(),
                name: self.name.as_deref(),
                idp: &self.idp,
                acr: self.acr(),
                auth_time: self.auth_time(),
                org,
                roles: org.map(|o| self.roles_in(o)).unwrap_or(&[]),
                iat: now,
                exp,
            })?
            .into();
        if let Ok(mut list) = self.assertions.lock() {
            list.retain(|a| {
                !(a.audience == audience && a.org.as_deref() == org && a.issuer == issuer)
                    && a.exp > now
            });
            list.push(CachedAssertion {
                issuer: issuer.to_string(),
                audience: audience.to_string(),
                org: org.map(str::to_string),
                jwt: jwt.clone(),
                exp,
            });
        }
        Ok(jwt)
    }
}

/// Only the JSON boolean `true` counts as verified.
fn email_verified(claims: &Value) -> bool {
    claims.get("email_verified") == Some(&Value::Bool(true))
}

/// Session ids the store did not know, remembered for `cache_ttl`.
const UNKNOWN_CAPACITY: u64 = 10_000;
/// Users forgotten within one cache lifetime that are remembered one by
/// one; past 90% of it, both caches are dropped whole instead.
const FORGOTTEN_CAPACITY: u64 = 100_000;
/// Session look-ups on the store at once, and how long one waits for its
/// turn before the request is answered 503.
const LOOKUPS_IN_FLIGHT: usize = 16;
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// The session cache over the store.
pub struct Sessions {
    cache: moka::future::Cache<String, Option<Arc<Principal>>>,
    /// Ids the store did not know (or knew ended), kept apart so that a
    /// flood of made-up cookies cannot push live sessions out of `cache`.
    unknown: moka::sync::Cache<String, ()>,
    /// Store look-ups of sessions the caches do not hold, in flight at
    /// once: a flood of made-up cookies queues here, not on the store.
    lookups: tokio::sync::Semaphore,
    /// Verified bearer tokens by SHA-256, for the same bounded time.
    pub bearer: moka::future::Cache<String, Arc<Principal>>,
    /// Sessions this replica asked the store to refresh lately: asked at
    /// most once per cache lifetime, whoever then does it.
    refresh_asked: moka::sync::Cache<String, ()>,
    /// Users whose cached sessions and tokens were forgotten (a role
    /// change, a revocation, a deletion), with the stamp of that moment:
    /// a principal loaded before it is stale. Kept for the cache's
    /// lifetime, after which nothing loaded before can still be cached.
    /// (moka's `invalidate_entries_if` would keep one predicate per call
    /// until it had scanned the cache: under many changes they pile up.)
    forgotten: moka::sync::Cache<String, u64>,
    stamps: AtomicU64,
    /// The stamp of the last user forgotten: a principal loaded after it
    /// is current without a look-up in `forgotten` (the request path).
    last_forgotten: AtomicU64,
    store: Store,
    background: Background,
}

impl Sessions {
    pub fn new(store: Store, background: Background, ttl: Duration) -> Sessions {
        Sessions {
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            bearer: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            forgotten: moka::sync::Cache::builder()
                .max_capacity(FORGOTTEN_CAPACITY)
                .time_to_live(ttl)
                .build(),
            stamps: AtomicU64::new(1),
            last_forgotten: AtomicU64::new(0),
            refresh_asked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            unknown: moka::sync::Cache::builder()
                .max_capacity(UNKNOWN_CAPACITY)
                .time_to_live(ttl)
                .build(),
            lookups: tokio::sync::Semaphore::new(LOOKUPS_IN_FLIGHT),
            store,
            background,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Runs a store call on the background runtime.
    pub async fn with_store<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Store) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.background
            .run(f(self.store.clone()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// The live session with this hashed id. A store failure on a cache
    /// miss is an error (the caller answers 503); an unknown, expired or
    /// idle session is `Ok(None)`.
    pub async fn get(
        &self,
        hash: &str,
        idle: Duration,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Principal>>, StoreError> {
        let now = crate::store::now();
        let idle = idle.as_secs() as i64;
        if let Some(hit) = self.cache.get(hash).await
            && hit.as_ref().is_none_or(|p| self.is_current(p))
        {
            metrics.session_cache_hits.inc();
            return Ok(hit.filter(|p| {
                let live = p.is_live(now, idle);
                if live {
                    p.seen(now);
                }
                live
            }));
        }
        if self.unknown.contains_key(hash) {
            metrics.session_cache_hits.inc();
            return Ok(None);
        }
        metrics.session_cache_misses.inc();
        let Ok(Ok(_permit)) = tokio::time::timeout(LOOKUP_WAIT, self.lookups.acquire()).await
        else {
            metrics.session_lookups_shed.inc();
            return Err(StoreError::Unavailable(
                "too many session look-ups waiting for the store".into(),
            ));
        };
        let owned = hash.to_string();
        let loaded = self.stamp();
        let record = self
            .with_store(move |s| async move { s.session(&owned).await })
            .await?;
        let principal = record.map(|r| Arc::new(Principal::from_record(r, loaded)));
        if let Some(p) = &principal
            && p.is_live(now, idle)
            && now - p.last_seen.load(Ordering::Relaxed) > 60
        {
            // Keeps the idle clock of other replicas honest; not on the
            // request's path.
            let (store, hash) = (self.store.clone(), hash.to_string());
            self.background.spawn(async move {
                if let Err(e) = store.touch_session(&hash, now).await {
                    tracing::debug!(error = %e, "session last-seen not recorded");
                }
            });
            p.seen(now);
        }
        match &principal {
            Some(p) => self.cache.insert(hash.to_string(), Some(p.clone())).await,
            None => self.unknown.insert(hash.to_string(), ()),
        }
        Ok(principal.filter(|p| p.is_live(now, idle)))
    }

    /// Whether this replica should ask the store to refresh the session:
    /// `true` once per cache lifetime of a session.
    pub fn ask_refresh(&self, hash: &str) -> bool {
        let asked = std::cell::Cell::new(false);
        self.refresh_asked.get_with_by_ref(hash, || asked.set(true));
        asked.get()
    }

    /// Drops cached sessions so that the next request reads the store.
    pub async fn forget(&self, hashes: &[String]) {
        for h in hashes {
            self.cache.invalidate(h).await;
        }
    }

    /// Drops a bearer token from the cache by its SHA-256 (hex).
    pub async fn forget_bearer_hash(&self, hash: &str) {
        self.bearer.invalidate(hash).await;
    }

    /// Drops every cached session and bearer token (notices from other
    /// replicas may have been missed).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
        self.bearer.invalidate_all();
    }

    /// Applies what another replica changed (or this one: harmless).
    pub async fn apply(&self, notice: crate::store::Notice) {
        use crate::store::Notice;
        match notice {
            Notice::Sessions(hashes) => self.forget(&hashes).await,
            Notice::Tokens(hashes) => {
                for h in &hashes {
                    self.forget_bearer_hash(h).await;
                }
            }
            Notice::Users(users) => {
                for u in &users {
                    self.forget_user(u);
                }
            }
            Notice::Lost => self.forget_all(),
        }
    }

    /// Drops a bearer token from the cache (its session was logged out).
    pub async fn forget_bearer(&self, token: &str) {
        self.bearer
            .invalidate(&hex::encode(crate::util::sha256(token.as_bytes())))
            .await;
    }

    /// Drops every cached session and bearer token of a user (role
    /// change, revocation, deletion): their next request reads the store.
    pub fn forget_user(&self, user_id: &str) {
        if self.forgotten.entry_count() >= FORGOTTEN_CAPACITY / 10 * 9 {
            // Too many to remember one by one: forget everyone.
            self.forget_all();
            self.forgotten.invalidate_all();
            return;
        }
        let stamp = self.stamp();
        // First the mark that sends readers to `forgotten`, then the entry.
        self.last_forgotten.fetch_max(stamp, Ordering::AcqRel);
        self.forgotten.insert(user_id.to_string(), stamp);
    }

    /// A stamp for a principal about to be read from the store (or a user
    /// forgotten now): increasing across the process.
    pub fn stamp(&self) -> u64 {
        self.stamps.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a cached principal is as new as its user's last change.
    pub fn is_current(&self, p: &Principal) -> bool {
        p.loaded > self.last_forgotten.load(Ordering::Acquire)
            || self
                .forgotten
                .get(&p.user_id)
                .is_none_or(|forgotten| forgotten < p.loaded)
    }
}

/// A process-wide counter of config generations, so that cached verdicts
/// from an older config are never used.
pub fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
