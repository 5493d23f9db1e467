//! OpenID Connect with the IdPs: discovery and JWKS (cached, refreshed in
//! the background, one rate-limited refresh on an unknown `kid`), the
//! authorization request (state, nonce, PKCE S256), the code exchange,
//! userinfo, and token verification (`verify`). Plain async code over an
//! HTTP client that never follows redirects; no Pingora types.

pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};
use serde_json::Value;

use crate::config::{ClaimsSource, IdentityProvider};
use crate::util::Background;
pub use verify::{Expect, Keys, TokenKind, VerifyError};

/// Discovery and keys older than this are refreshed in the background.
const REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
/// An IdP that failed is not asked again sooner than this.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// At most one JWKS refresh for an unknown `kid` per IdP in this time.
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);
/// Largest IdP answer read.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("identity provider {idp} is unreachable: {reason}")]
    Unreachable { idp: String, reason: String },
    #[error("identity provider {idp} answered unexpectedly: {reason}")]
    Protocol { idp: String, reason: String },
    #[error("token rejected: {0}")]
    Token(#[from] VerifyError),
    /// The IdP no longer honours the grant (`invalid_grant`: the refresh
    /// token was revoked, expired or its user is gone).
    #[error("identity provider {idp} refused the grant: {reason}")]
    GrantRefused { idp: String, reason: String },
}

/// What discovery found out about one IdP.
pub struct Discovered {
    pub metadata: CoreProviderMetadata,
    pub end_session_endpoint: Option<String>,
    pub keys: Keys,
    pub fetched: Instant,
    pub keys_fetched: Instant,
}

struct Entry {
    current: arc_swap::ArcSwapOption<Discovered>,
    failed_at: Mutex<Option<(Instant, String)>>,
    kid_refresh_at: Mutex<Option<Instant>>,
    refreshing: tokio::sync::Mutex<()>,
}

pub struct Oidc {
    http: reqwest::Client,
    background: Background,
    /// By issuer URL: IdP ids may be renamed on reload, issuers stay.
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

/// Tokens from a code exchange.
pub struct Tokens {
    pub id_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
}

/// Tokens from a refresh: the IdP may send a new ID token, and may rotate
/// the refresh token.
pub struct Refreshed {
    pub id_token: Option<String>,
    pub access_token: String,
    pub refresh_token: Option<String>,
}

/// A login's authorization request.
pub struct AuthRequest {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl Oidc {
    pub fn new(background: Background) -> Result<Oidc, reqwest::Error> {
        let http = reqwest::Client::builder()
            // Never follow an IdP's redirect (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Oidc {
            http,
            background,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entry(&self, issuer: &str) -> Arc<Entry> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(issuer.to_string())
            .or_insert_with(|| {
                Arc::new(Entry {
                    current: arc_swap::ArcSwapOption::empty(),
                    failed_at: Mutex::new(None),
                    kid_refresh_at: Mutex::new(None),
                    refreshing: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The IdP's discovery document and keys: cached, refreshed in the
    /// background when old, fetched now when never fetched.
    pub async fn provider(&self, idp: &IdentityProvider) -> Result<Arc<Discovered>, OidcError> {
        let entry = self.entry(&idp.issuer);
        if let Some(d) = entry.current.load_full() {
            if d.fetched.elapsed() > REFRESH_AFTER {
                self.refresh_in_background(idp, entry.clone());
            }
            return Ok(d);
        }
        self.fetch_now(idp, &entry).await
    }

    /// Fetches discovery for every IdP once, without waiting: the gateway
    /// starts whether or not they answer.
    pub fn warm_up(&self, idps: &[Arc<IdentityProvider>]) {
        for idp in idps {
            let entry = self.entry(&idp.issuer);
            if entry.current.load().is_none() {
                self.refresh_in_background(idp, entry);
            }
        }
    }

    fn refresh_in_background(&self, idp: &IdentityProvider, entry: Arc<Entry>) {
        let (http, idp) = (self.http.clone(), idp.clone());
        self.background.spawn(async move {
            let Ok(_guard) = entry.refreshing.try_lock() else {
                return;
            };
            match discover(&http, &idp).await {
                Ok(d) => {
                    entry.current.store(Some(Arc::new(d)));
                    tracing::info!(target: "portcullis::oidc", idp = %idp.id, "discovery refreshed");
                }
                Err(e) => {
                    tracing::warn!(target: "portcullis::oidc", idp = %idp.id, error = %e, "discovery refresh failed; keeping the cached document");
                }
            }
        });
    }

    async fn fetch_now(
        &self,
        idp: &IdentityProvider,
        entry: &Arc<Entry>,
    ) -> Result<Arc<Discovered>, OidcError> {
        if let Some((at, why)) = entry.failed_at.lock().ok().and_then(|f| f.clone())
            && at.elapsed() < RETRY_AFTER_FAILURE
        {
            return Err(OidcError::Unreachable {
                idp: idp.id.clone(),
                reason: why,
            });
        }
        let (http, owned, e2) = (self.http.clone(), idp.clone(), entry.clone());
        let result: Result<Arc<Discovered>, OidcError> = self
            .background
            .run(async move {
                let _guard = e2.refreshing.lock().await;
                if let Some(d) = e2.current.load_full() {
                    return Ok(d);
                }
                let d = Arc::new(discover(&http, &owned).await?);
                e2.current.store(Some(d.clone()));
                Ok(d)
            })
            .await
            .map_err(|e| OidcError::Unreachable {
                idp: idp.id.clone(),
                reason: e.to_string(),
            })?;
        match &result {
            Ok(_) => {
                tracing::info!(target: "portcullis::oidc", idp = %idp.id, "discovery loaded");
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::oidc", idp = %idp.id, error = %e, "discovery failed");
                if let Ok(mut f) = entry.failed_at.lock() {
                    *f = Some((Instant::now(), e.to_string()));
                }
            }
        }
        result
    }

    /// Re-reads the IdP's JWKS after a token named a `kid` we do not know,
    /// at most once per [`UNKNOWN_KID_REFRESH`]. `None` when rate-limited.
    async fn refresh_keys(&self, idp: &IdentityProvider) -> Option<Arc<Discovered>> {
        let entry = self.entry(&idp.issuer);
        {
            let mut last = entry.kid_refresh_at.lock().ok()?;
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFRESH) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let current = entry.current.load_full()?;
        let uri = current.metadata.jwks_uri().url().to_string();
        let (http, id) = (self.http.clone(), idp.id.clone());
        let keys = self
            .background
            .run(async move { fetch_json(&http, &id, &uri, None).await })
            .await
            .ok()?;
        match keys {
            Ok(jwks) => {
                let fresh = Arc::new(Discovered {
                    metadata: current.metadata.clone(),
                    end_session_endpoint: current.end_session_endpoint.clone(),
                    keys: Keys::parse(&jwks),
                    fetched: current.fetched,
                    keys_fetched: Instant::now(),
                });
                entry.current.store(Some(fresh.clone()));
                tracing::info!(target: "portcullis::oidc", idp = %idp.id, keys = fresh.keys.len(), "JWKS refreshed for an unknown kid");
                Some(fresh)
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::oidc", idp = %idp.id, error = %e, "JWKS refresh failed");
                None
            }
        }
    }

    /// Verifies a token signed by `idp`, refreshing its keys once when the
    /// token names a key we do not have.
    pub async fn verify(
        &self,
        idp: &IdentityProvider,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<Value, OidcError> {
        let d = self.provider(idp).await?;
        match verify::verify(token, &d.keys, expect) {
            Err(VerifyError::UnknownKid(kid)) => match self.refresh_keys(idp).await {
                Some(fresh) => Ok(verify::verify(token, &fresh.keys, expect)?),
                None => Err(VerifyError::UnknownKid(kid).into()),
            },
            other => Ok(other?),
        }
    }

    /// The URL that starts a login at the IdP, with fresh state, nonce and
    /// PKCE verifier.
    pub fn authorization_request(
        &self,
        d: &Discovered,
        idp: &IdentityProvider,
        redirect_uri: &str,
        step_up: Option<&crate::config::StepUp>,
    ) -> Result<AuthRequest, OidcError> {
        let client = client(d.metadata.clone(), idp, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in idp.scopes.iter().filter(|s| s.as_str() != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        if let Some(su) = step_up {
            for acr in &su.acr_values {
                req = req.add_auth_context_value(openidconnect::AuthenticationContextClass::new(
                    acr.clone(),
                ));
            }
            if let Some(max) = su.max_age {
                req = req.set_max_age(max);
            }
        }
        let (url, state, nonce) = req.url();
        Ok(AuthRequest {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges an authorization code (with the PKCE verifier) for tokens.
    pub async fn exchange(
        &self,
        d: &Discovered,
        idp: &IdentityProvider,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<Tokens, OidcError> {
        let (metadata, owned, redirect) =
            (d.metadata.clone(), idp.clone(), redirect_uri.to_string());
        let (code, verifier, http) = (
            code.to_string(),
            pkce_verifier.to_string(),
            self.http.clone(),
        );
        // On the background runtime, where the HTTP client's connections live.
        let response = self
            .background
            .run(async move {
                let client = token_client(&metadata, &owned, &redirect)?;
                client
                    .exchange_code(AuthorizationCode::new(code))
                    .set_pkce_verifier(PkceCodeVerifier::new(verifier))
                    .request_async(&http)
                    .await
                    .map_err(|e| match &e {
                        // No answer: the IdP is unreachable (502), not at fault.
                        oauth2::RequestTokenError::Request(_) => OidcError::Unreachable {
                            idp: owned.id.clone(),
                            reason: format!("code exchange failed: {}", describe_token_error(&e)),
                        },
                        _ => protocol(
                            &owned,
                            format!("code exchange failed: {}", describe_token_error(&e)),
                        ),
                    })
            })
            .await
            .map_err(|e| protocol(idp, e.to_string()))??;
        let id_token = response
            .extra_fields()
            .id_token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| protocol(idp, "the token response has no id_token"))?;
        Ok(Tokens {
            id_token,
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        })
    }

    /// Redeems a refresh token (RFC 6749 section 6). `GrantRefused` when
    /// the IdP answers `invalid_grant`; `Unreachable` when no answer came.
    pub async fn refresh(
        &self,
        d: &Discovered,
        idp: &IdentityProvider,
        redirect_uri: &str,
        refresh_token: &str,
    ) -> Result<Refreshed, OidcError> {
        let (metadata, owned, redirect) =
            (d.metadata.clone(), idp.clone(), redirect_uri.to_string());
        let (token, http) = (refresh_token.to_string(), self.http.clone());
        let response = self
            .background
            .run(async move {
                let client = token_client(&metadata, &owned, &redirect)?;
                client
                    .exchange_refresh_token(&oauth2::RefreshToken::new(token))
                    .request_async(&http)
                    .await
                    .map_err(|e| match &e {
                        oauth2::RequestTokenError::ServerResponse(r)
                            if *r.error()
                                == oauth2::basic::BasicErrorResponseType::InvalidGrant =>
                        {
                            OidcError::GrantRefused {
                                idp: owned.id.clone(),
                                reason: describe_token_error(&e),
                            }
                        }
                        oauth2::RequestTokenError::Request(_) => OidcError::Unreachable {
                            idp: owned.id.clone(),
                            reason: describe_token_error(&e),
                        },
                        _ => protocol(
                            &owned,
                            format!("refresh failed: {}", describe_token_error(&e)),
                        ),
                    })
            })
            .await
            .map_err(|e| protocol(idp, e.to_string()))??;
        Ok(Refreshed {
            id_token: response
                .extra_fields()
                .id_token
                .clone()
                .filter(|t| !t.is_empty()),
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        })
    }

    /// The userinfo endpoint's claims (a JSON answer; signed userinfo is
    /// not supported).
    pub async fn userinfo(
        &self,
        d: &Discovered,
        idp: &IdentityProvider,
        access_token: &str,
    ) -> Result<Value, OidcError> {
        let Some(endpoint) = d.metadata.userinfo_endpoint() else {
            return Err(protocol(
                idp,
                "claims: merged, but the IdP has no userinfo endpoint",
            ));
        };
        let (http, url, token, id) = (
            self.http.clone(),
            endpoint.url().to_string(),
            access_token.to_string(),
            idp.id.clone(),
        );
        self.background
            .run(async move { fetch_json(&http, &id, &url, Some(&token)).await })
            .await
            .map_err(|e| protocol(idp, e.to_string()))?
    }

    /// Whether `claims: merged` applies.
    pub fn merges_userinfo(idp: &IdentityProvider) -> bool {
        idp.claims == ClaimsSource::Merged
    }
}

fn protocol(idp: &IdentityProvider, reason: impl Into<String>) -> OidcError {
    OidcError::Protocol {
        idp: idp.id.clone(),
        reason: reason.into(),
    }
}

fn describe_token_error<
    RE: std::error::Error + 'static,
    T: oauth2::ErrorResponseType + std::fmt::Display + 'static,
>(
    e: &oauth2::RequestTokenError<RE, oauth2::StandardErrorResponse<T>>,
) -> String {
    match e {
        openidconnect::RequestTokenError::ServerResponse(r) => {
            format!(
                "{} {}",
                r.error(),
                r.error_description().cloned().unwrap_or_default()
            )
        }
        other => other.to_string(),
    }
}

/// The token endpoint's answer with the ID token as the IdP sent it: its
/// claims are read only after verification, as plain JSON, so that a claim
/// of an unusual type (`email_verified: "true"`) never fails the exchange.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RawIdToken {
    #[serde(default)]
    id_token: Option<String>,
}

impl oauth2::ExtraTokenFields for RawIdToken {}

type TokenClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::StandardTokenResponse<RawIdToken, oauth2::basic::BasicTokenType>,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// A client for the IdP's token endpoint (code exchange, refresh).
fn token_client(
    metadata: &CoreProviderMetadata,
    idp: &IdentityProvider,
    redirect_uri: &str,
) -> Result<TokenClient, OidcError> {
    let token_url = metadata
        .token_endpoint()
        .cloned()
        .ok_or_else(|| protocol(idp, "the IdP has no token endpoint"))?;
    let redirect = RedirectUrl::new(redirect_uri.to_string())
        .map_err(|e| protocol(idp, format!("redirect URI {redirect_uri}: {e}")))?;
    let mut client = oauth2::Client::new(ClientId::new(idp.client_id.clone()))
        .set_token_uri(token_url)
        .set_redirect_uri(redirect);
    if let Some(secret) = &idp.client_secret {
        client = client.set_client_secret(ClientSecret::new(secret.clone()));
    }
    Ok(client)
}

type LoginClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn client(
    metadata: CoreProviderMetadata,
    idp: &IdentityProvider,
    redirect_uri: &str,
) -> Result<LoginClient, OidcError> {
    let redirect = RedirectUrl::new(redirect_uri.to_string())
        .map_err(|e| protocol(idp, format!("redirect URI {redirect_uri}: {e}")))?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(idp.client_id.clone()),
        idp.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect))
}

async fn read_json(resp: reqwest::Response, idp: &str) -> Result<Value, OidcError> {
    let status = resp.status();
    let fail = |reason: String| OidcError::Protocol {
        idp: idp.to_string(),
        reason,
    };
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    if resp.content_length().is_some_and(|l| l as usize > MAX_BODY) {
        return Err(fail("answer too large".into()));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| fail(format!("reading the answer: {e}")))?;
    if bytes.len() > MAX_BODY {
        return Err(fail("answer too large".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| fail(format!("not JSON: {e}")))
}

/// GETs a JSON document from the IdP, with a bearer token when given.
async fn fetch_json(
    http: &reqwest::Client,
    idp: &str,
    url: &str,
    bearer: Option<&str>,
) -> Result<Value, OidcError> {
    let mut req = http.get(url).header("accept", "application/json");
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| OidcError::Unreachable {
        idp: idp.to_string(),
        reason: e.to_string(),
    })?;
    read_json(resp, idp).await
}

/// Discovery at `issuer/.well-known/openid-configuration`, its `issuer`
/// checked, then the JWKS.
async fn discover(http: &reqwest::Client, idp: &IdentityProvider) -> Result<Discovered, OidcError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        idp.issuer.trim_end_matches('/')
    );
    let doc = fetch_json(http, &idp.id, &url, None).await?;
    let metadata: CoreProviderMetadata = serde_json::from_value(doc.clone())
        .map_err(|e| protocol(idp, format!("discovery document: {e}")))?;
    if metadata.issuer().as_str().trim_end_matches('/') != idp.issuer.trim_end_matches('/') {
        return Err(protocol(
            idp,
            format!(
                "discovery names issuer {}, not the configured {}",
                metadata.issuer().as_str(),
                idp.issuer
            ),
        ));
    }
    let jwks = fetch_json(http, &idp.id, metadata.jwks_uri().url().as_str(), None).await?;
    let keys = Keys::parse(&jwks);
    if keys.is_empty() {
        return Err(protocol(idp, "the JWKS has no usable signing key"));
    }
    let now = Instant::now();
    Ok(Discovered {
        end_session_endpoint: doc
            .get("end_session_endpoint")
            .and_then(Value::as_str)
            .map(str::to_string),
        metadata,
        keys,
        fetched: now,
        keys_fetched: now,
    })
}
