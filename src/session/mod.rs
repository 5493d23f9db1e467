//! Sessions: ids in cookies, records in the store, and a moka cache in
//! front so that the request path reads the store only on a miss. A cached
//! entry lives at most `store.cache_ttl`, which bounds how long a logout,
//! revocation or role change made on another replica takes to arrive.

pub mod cookie;
pub(crate) mod login_state;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use jmespath::{Rcvar, ToJmespath};
use serde_json::Value;

use crate::assertion::{AssertionClaims, AssertionError, LIFETIME_SECS, REUSE_MARGIN_SECS, Signer};
use crate::authz::{Denied, Roles};
use crate::metrics::Metrics;
use crate::store::{SessionRecord, Store, StoreError};
use crate::util::Background;

/// Who a request is from: a session's user, with what the policy and the
/// identity headers need. Also caches the route verdicts and assertions
/// made for it, which die with it. Kept small: the cache holds one per
/// live session (BENCHMARKS.md, resident memory).
pub struct Principal {
    /// The session's hashed id, shared with the cache's key.
    pub session_hash: Option<Arc<str>>,
    pub user_id: Box<str>,
    pub idp: Box<str>,
    pub subject: Box<str>,
    pub email: Option<Box<str>>,
    /// The claims say `email_verified: true` (the JSON boolean).
    pub email_verified: bool,
    pub name: Option<Box<str>>,
    /// The stored claims as compact JSON text, read into JMESPath's form
    /// the first time a policy or claim header needs them.
    claims: Box<str>,
    claims_data: OnceLock<Rcvar>,
    acr: Option<Box<str>>,
    auth_time: Option<i64>,
    pub roles: Roles,
    pub expires_at: i64,
    /// When the IdP last vouched for the session (login or refresh).
    pub validated_at: i64,
    /// The session holds a refresh token.
    pub refreshable: bool,
    last_seen: AtomicI64,
    /// [`Sessions::stamp`] taken before the store was read for this
    /// principal: a user forgotten at or after it makes it stale.
    loaded: u64,
    /// Verdicts by config generation and route index; only the current
    /// generation's are kept.
    verdicts: Mutex<Vec<CachedVerdict>>,
    /// Few entries (one per host and org the user visits): a list.
    assertions: Mutex<Vec<CachedAssertion>>,
}

/// A route's verdict: config generation, route index, verdict.
type CachedVerdict = (u64, usize, Result<(), Denied>);

struct CachedAssertion {
    /// Issuer, audience and org, joined by NUL (which none may hold).
    key: Box<str>,
    /// Ready to send: a clone shares the bytes, and they are checked once.
    jwt: http::HeaderValue,
    exp: i64,
}

fn assertion_key(issuer: &str, audience: &str, org: Option<&str>) -> Box<str> {
    let mut key =
        String::with_capacity(issuer.len() + audience.len() + 2 + org.map_or(0, str::len));
    key.push_str(issuer);
    key.push('\0');
    key.push_str(audience);
    if let Some(org) = org {
        key.push('\0');
        key.push_str(org);
    }
    key.into_boxed_str()
}

/// Whether `key` is [`assertion_key`] of these, without building one.
fn is_assertion_key(key: &str, issuer: &str, audience: &str, org: Option<&str>) -> bool {
    let mut parts = key.split('\0');
    parts.next() == Some(issuer)
        && parts.next() == Some(audience)
        && parts.next() == org
        && parts.next().is_none()
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
        let mut p = Principal::new(
            r.user_id,
            r.idp,
            r.subject,
            r.email,
            r.name,
            &r.claims,
            r.memberships,
            loaded,
        );
        p.session_hash = Some(r.id_hash.into());
        p.expires_at = r.expires_at;
        p.validated_at = r.validated_at;
        p.refreshable = r.refreshable;
        p.last_seen = AtomicI64::new(r.last_seen_at);
        p
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
        let mut p = Principal::new(
            user.id,
            idp.to_string(),
            subject.to_string(),
            user.email,
            user.name,
            &claims,
            user.memberships,
            loaded,
        );
        p.expires_at = expires_at;
        p
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        user_id: String,
        idp: String,
        subject: String,
        email: Option<String>,
        name: Option<String>,
        claims: &Value,
        memberships: Vec<crate::provision::Membership>,
        loaded: u64,
    ) -> Principal {
        let now = crate::store::now();
        Principal {
            session_hash: None,
            user_id: user_id.into(),
            idp: idp.into(),
            subject: subject.into(),
            email: email.map(String::into_boxed_str),
            email_verified: claims.get("email_verified") == Some(&Value::Bool(true)),
            name: name.map(String::into_boxed_str),
            claims: claims.to_string().into_boxed_str(),
            claims_data: OnceLock::new(),
            acr: claims.get("acr").and_then(Value::as_str).map(Box::from),
            auth_time: claims.get("auth_time").and_then(Value::as_i64),
            roles: memberships.into_iter().map(|m| (m.org, m.roles)).collect(),
            expires_at: now,
            validated_at: now,
            refreshable: false,
            last_seen: AtomicI64::new(now),
            loaded,
            verdicts: Mutex::new(Vec::new()),
            assertions: Mutex::new(Vec::new()),
        }
    }

    /// The stored claims for JMESPath (policies, claim headers).
    pub fn claims_data(&self) -> &Rcvar {
        self.claims_data.get_or_init(|| {
            serde_json::from_str::<Value>(&self.claims)
                .ok()
                .and_then(|v| v.to_jmespath().ok())
                .unwrap_or_else(|| Rcvar::new(jmespath::Variable::Null))
        })
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
        self.acr.as_deref()
    }

    /// The ID token's `auth_time`, when known.
    pub fn auth_time(&self) -> Option<i64> {
        self.auth_time
    }

    pub fn roles_in(&self, org: &str) -> &[String] {
        self.roles.get(org).unwrap_or(&[])
    }

    /// The route policy's verdict for this principal, computed once per
    /// config generation and route.
    pub fn verdict(&self, generation: u64, route: &crate::config::Route) -> Result<(), Denied> {
        let cached = self.verdicts.lock().ok().and_then(|list| {
            list.iter()
                .find(|(g, r, _)| *g == generation && *r == route.index)
                .map(|(_, _, v)| v.clone())
        });
        if let Some(v) = cached {
            return v;
        }
        let v = crate::authz::authorize(route, &self.roles, self.claims_data());
        if let Ok(mut list) = self.verdicts.lock() {
            list.retain(|(g, _, _)| *g == generation);
            list.reserve_exact(1);
            list.push((generation, route.index, v.clone()));
        }
        v
    }

    /// An assertion for this principal at `audience`, reused while it has
    /// more than a minute left; as the header value it is sent in.
    pub fn assertion(
        &self,
        signer: &Signer,
        issuer: &str,
        audience: &str,
        org: Option<&str>,
        now: i64,
    ) -> Result<http::HeaderValue, AssertionError> {
        let cached = self.assertions.lock().ok().and_then(|list| {
            list.iter()
                .find(|a| is_assertion_key(&a.key, issuer, audience, org))
                .filter(|a| a.exp - now > REUSE_MARGIN_SECS)
                .map(|a| a.jwt.clone())
        });
        if let Some(jwt) = cached {
            return Ok(jwt);
        }
        let exp = (now + LIFETIME_SECS).min(self.expires_at.max(now + REUSE_MARGIN_SECS));
        let jwt = signer.sign(&AssertionClaims {
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
        })?;
        // Base64url and dots: always a valid header value.
        let jwt = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(jwt))
            .map_err(|_| AssertionError::NotHeader)?;
        if let Ok(mut list) = self.assertions.lock() {
            list.retain(|a| !is_assertion_key(&a.key, issuer, audience, org) && a.exp > now);
            list.reserve_exact(1);
            list.push(CachedAssertion {
                key: assertion_key(issuer, audience, org),
                jwt: jwt.clone(),
                exp,
            });
        }
        Ok(jwt)
    }
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
    cache: moka::future::Cache<Arc<str>, Option<Arc<Principal>>>,
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
            Some(p) => {
                let key = p.session_hash.clone().unwrap_or_else(|| hash.into());
                self.cache.insert(key, Some(p.clone())).await
            }
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
            self.cache.invalidate(h.as_str()).await;
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
            .invalidate(&crate::util::sha256_hex(token.as_bytes()))
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
                .get(&*p.user_id)
                .is_none_or(|forgotten| forgotten < p.loaded)
    }
}

/// A process-wide counter of config generations, so that cached verdicts
/// from an older config are never used.
pub fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached assertion is reused only for exactly its issuer, audience
    /// and organization: one minted for another host or org must never be
    /// sent (confused-deputy: a token replayed at an audience it was not
    /// made for).
    #[test]
    fn an_assertion_key_matches_only_its_own_audience() {
        type Of<'a> = (&'a str, &'a str, Option<&'a str>);
        let all: &[Of] = &[
            ("https://auth.test", "app.test", None),
            ("https://auth.test", "app.test", Some("lab")),
            ("https://auth.test", "app.test", Some("lab2")),
            ("https://auth.test", "app.test", Some("")),
            ("https://auth.test", "app.tes", Some("tlab")),
            ("https://auth.test", "other.test", None),
            ("https://auth.test/", "app.test", None),
            ("https://auth.test", "", Some("app.test")),
        ];
        for (i, made) in all.iter().enumerate() {
            let key = assertion_key(made.0, made.1, made.2);
            for (j, asked) in all.iter().enumerate() {
                assert_eq!(
                    is_assertion_key(&key, asked.0, asked.1, asked.2),
                    i == j,
                    "made for {made:?}, asked for {asked:?}"
                );
            }
        }
    }

    /// Claims are kept as text and read for JMESPath when first needed;
    /// what the policy and headers see is what the IdP sent.
    #[test]
    fn claims_read_when_needed() {
        let claims = serde_json::json!({"sub": "u", "acr": "mfa", "auth_time": 7, "email_verified": true, "groups": ["ops"]});
        let user = crate::store::User {
            id: "u1".into(),
            email: Some("u@example.com".into()),
            name: None,
            created_at: 0,
            active: true,
            identities: Vec::new(),
            memberships: Vec::new(),
        };
        let p = Principal::from_token(user, "idp", "u", claims.clone(), i64::MAX, 1);
        assert_eq!(
            (p.acr(), p.auth_time(), p.verified_email()),
            (Some("mfa"), Some(7), Some("u@example.com"))
        );
        let expr = jmespath::compile("contains(groups, 'ops')").unwrap();
        assert_eq!(
            expr.search(p.claims_data()).unwrap().as_boolean(),
            Some(true)
        );
        assert_eq!(*p.claims_data(), claims.to_jmespath().unwrap());
    }
}
