//! A rogue OpenID provider on loopback: a real HTTP server that speaks the
//! protocol but hands out whatever ID token the test asks for (wrong
//! issuer, `alg: none`, HS256 keyed with the public key, …), so that the
//! gateway's checks meet hostile input. Its keys are the test fixtures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const RSA_PEM: &str = include_str!("../fixtures/rsa-test-key.pem");
pub const RSA_PUBLIC_PEM: &str = include_str!("../fixtures/rsa-test-key.pub.pem");
pub const RSA_JWK: &str = include_str!("../fixtures/rsa-test-key.jwk.json");
pub const CLIENT_ID: &str = "portcullis";

/// How the next ID token is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    Nothing,
    WrongIssuer,
    WrongAudience,
    Expired,
    AlgNone,
    Hs256WithPublicKey,
    UnknownKid,
    NonceMismatch,
    IssuedInTheFuture,
    TwoAudiencesNoAzp,
    UserinfoSubDiffers,
    BadSignature,
}

#[derive(Default)]
struct Inner {
    spoil: Option<Spoil>,
    /// code -> nonce of the authorization request.
    codes: HashMap<String, String>,
    claims: Value,
    extra_jwks: Vec<Value>,
    /// Every ID token for a user of its own (`sub` `user-N`).
    unique_subjects: bool,
    issued: u64,
}

#[derive(Clone)]
pub struct Rogue {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Rogue {
    pub async fn start() -> Rogue {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Rogue {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Self::serve(listener)
    }

    /// Serves on a listener the test bound beforehand.
    pub fn serve(listener: tokio::net::TcpListener) -> Rogue {
        let addr = listener.local_addr().unwrap();
        Self::serve_as(listener, addr)
    }

    /// Serves on `listener`, known to the world (its issuer, its
    /// endpoints) as `public`: a relay in front of it.
    pub fn serve_as(listener: tokio::net::TcpListener, public: SocketAddr) -> Rogue {
        let addr = public;
        let rogue = Rogue {
            addr,
            inner: Arc::new(Mutex::new(Inner {
                claims: json!({"sub": "mallory", "email": "mallory@example.com", "email_verified": true, "groups": ["home-lab"]}),
                ..Default::default()
            })),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(rogue.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        rogue
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn spoil(&self, s: Spoil) {
        self.inner.lock().unwrap().spoil = Some(s);
    }

    pub fn set_claims(&self, claims: Value) {
        self.inner.lock().unwrap().claims = claims;
    }

    /// From now on each ID token is for a user of its own: `sub` is
    /// `user-1`, `user-2`, … (the other claims as set).
    pub fn unique_subjects(&self) {
        self.inner.lock().unwrap().unique_subjects = true;
    }

    /// Publishes one more key (a rotation).
    pub fn add_jwk(&self, jwk: Value) {
        self.inner.lock().unwrap().extra_jwks.push(jwk);
    }

    /// A token signed with the fixture RSA key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("test-rsa-1".into());
        jsonwebtoken::encode(
            &h,
            claims,
            &EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// Claims of a back-channel logout token from this IdP: the logout
    /// event, no `exp`, and `extra` merged in.
    pub fn logout_claims(&self, extra: Value) -> Value {
        let mut c = self.claims(json!({
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}}
        }));
        c.as_object_mut().unwrap().remove("exp");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// Standard claims for a token from this IdP.
    pub fn claims(&self, extra: Value) -> Value {
        let now = portcullis::store::now();
        let mut c = json!({"iss": self.issuer(), "aud": CLIENT_ID, "iat": now, "exp": now + 300});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }
}

async fn discovery(State(r): State<Rogue>) -> Json<Value> {
    let base = r.issuer();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(r): State<Rogue>) -> Json<Value> {
    let mut keys = vec![serde_json::from_str::<Value>(RSA_JWK).unwrap()];
    keys.extend(r.inner.lock().unwrap().extra_jwks.iter().cloned());
    Json(json!({ "keys": keys }))
}

async fn authorize(
    State(r): State<Rogue>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let code = format!("code-{}", hex::encode(rand::random::<[u8; 8]>()));
    r.inner
        .lock()
        .unwrap()
        .codes
        .insert(code.clone(), q.get("nonce").cloned().unwrap_or_default());
    let mut to = url::Url::parse(&q["redirect_uri"]).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
    Redirect::to(to.as_str())
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn token(
    State(r): State<Rogue>,
    Form(f): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    let (spoil, nonce, claims) = {
        let mut inner = r.inner.lock().unwrap();
        // A code is good once.
        let Some(nonce) = inner
            .codes
            .remove(f.get("code").map(String::as_str).unwrap_or(""))
        else {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant"})),
            );
        };
        let mut claims = inner.claims.clone();
        if inner.unique_subjects {
            inner.issued += 1;
            claims["sub"] = json!(format!("user-{}", inner.issued));
        }
        (inner.spoil.unwrap_or(Spoil::Nothing), nonce, claims)
    };
    let now = portcullis::store::now();
    let mut c = r.claims(claims);
    c["nonce"] = json!(nonce);
    match spoil {
        Spoil::WrongIssuer => c["iss"] = json!("http://127.0.0.1:1"),
        Spoil::WrongAudience => c["aud"] = json!("someone-else"),
        Spoil::Expired => {
            c["iat"] = json!(now - 4000);
            c["exp"] = json!(now - 3600);
        }
        Spoil::NonceMismatch => c["nonce"] = json!("another-nonce"),
        Spoil::IssuedInTheFuture => {
            c["iat"] = json!(now + 3600);
            c["exp"] = json!(now + 7200);
        }
        Spoil::TwoAudiencesNoAzp => c["aud"] = json!([CLIENT_ID, "another-client"]),
        _ => {}
    }
    let id_token = match spoil {
        Spoil::AlgNone => format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&c)
        ),
        Spoil::Hs256WithPublicKey => {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("test-rsa-1".into());
            jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()))
                .unwrap()
        }
        Spoil::UnknownKid => {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some("not-published".into());
            jsonwebtoken::encode(
                &h,
                &c,
                &EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
            )
            .unwrap()
        }
        Spoil::BadSignature => {
            let good = r.sign(&c);
            let mut parts: Vec<&str> = good.split('.').collect();
            let mut evil = c.clone();
            evil["sub"] = json!("admin");
            let payload = b64(&evil);
            parts[1] = &payload;
            parts.join(".")
        }
        _ => r.sign(&c),
    };
    (
        axum::http::StatusCode::OK,
        Json(
            json!({"access_token": "rogue-access-token", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}),
        ),
    )
}

async fn userinfo(State(r): State<Rogue>) -> Json<Value> {
    let inner = r.inner.lock().unwrap();
    let mut claims = inner.claims.clone();
    if inner.spoil == Some(Spoil::UserinfoSubDiffers) {
        claims["sub"] = json!("someone-else");
    }
    claims["department"] = json!("Security");
    Json(claims)
}

/// POSTs `token` to the back-channel logout endpoint of the gateway on
/// `port`; the answer's status.
pub async fn post_logout_token(port: u16, token: String) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "http://localhost:{port}/_portcullis/backchannel-logout"
        ))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A browser's login through the rogue IdP on the gateway at `base`
/// (`http://localhost:PORT`), returning to `rd`: the login start's answer
/// and the gateway's answer to the callback (not followed further).
pub async fn login_through(
    b: &super::idp::Browser,
    base: &str,
    rd: &str,
) -> (super::idp::Page, super::idp::Page) {
    let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let start = b.get(&format!("{base}/_portcullis/login?rd={rd}")).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let at_idp = b.get(&start.location().unwrap()).await;
    assert_eq!(at_idp.status, 303, "{}", at_idp.body);
    let answer = b.get(&at_idp.location().unwrap()).await;
    (start, answer)
}
