//! The demo's development IdP: a small OpenID provider on loopback with a
//! page to pick a sample user (or type claims). Authorization code flow
//! with PKCE S256, ES256-signed ID tokens, userinfo, end-session. For the
//! demo only: it asks for no password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::assertion::Signer;

/// A sample user on the picking page.
pub struct SampleUser {
    pub key: &'static str,
    pub claims: Value,
    pub note: &'static str,
}

pub fn sample_users() -> Vec<SampleUser> {
    vec![
        SampleUser {
            key: "alice",
            claims: json!({"sub": "alice", "name": "Alice Admin", "email": "alice@example.com", "email_verified": true, "groups": ["home-lab", "admin"], "department": "Platform"}),
            note: "groups home-lab + admin: Admin of Home Lab by policy",
        },
        SampleUser {
            key: "bob",
            claims: json!({"sub": "bob", "name": "Bob Member", "email": "bob@example.com", "email_verified": true, "groups": ["home-lab"], "department": "Support"}),
            note: "group home-lab: Member of Home Lab by policy",
        },
        SampleUser {
            key: "carol",
            claims: json!({"sub": "carol", "name": "Carol Partner", "email": "carol@partner.org", "email_verified": true, "groups": []}),
            note: "verified email at partner.org: joins Partners just in time",
        },
        SampleUser {
            key: "dave",
            claims: json!({"sub": "dave", "name": "Dave Unverified", "email": "dave@partner.org", "email_verified": false, "groups": []}),
            note: "unverified partner.org email: no membership, refused",
        },
    ]
}

pub struct Client {
    pub id: String,
    pub secret: String,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
}

struct Pending {
    claims: Value,
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
}

struct Inner {
    issuer: String,
    client: Client,
    kid: String,
    key: EncodingKey,
    jwks: Value,
    codes: Mutex<HashMap<String, Pending>>,
    access: Mutex<HashMap<String, Value>>,
}

#[derive(Clone)]
struct DevIdp(Arc<Inner>);

#[derive(Template)]
#[template(path = "demo_idp.html")]
struct PickPage<'a> {
    users: Vec<(String, String, String)>,
    params: &'a [(String, String)],
    error: Option<String>,
}

/// Serves the IdP on `listener` for `client`.
pub async fn serve(listener: tokio::net::TcpListener, client: Client) {
    let issuer = match listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => {
            tracing::error!(error = %e, "demo IdP has no address");
            return;
        }
    };
    let (kid, key, jwks) = match key() {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "demo IdP key");
            return;
        }
    };
    let idp = DevIdp(Arc::new(Inner {
        issuer,
        client,
        kid,
        key,
        jwks,
        codes: Mutex::new(HashMap::new()),
        access: Mutex::new(HashMap::new()),
    }));
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks_doc))
        .route("/authorize", get(authorize).post(pick))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo))
        .route("/end-session", get(end_session))
        .with_state(idp);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "demo IdP stopped");
    }
}

fn key() -> Result<(String, EncodingKey, Value), String> {
    let stored = Signer::generate().map_err(|e| e.to_string())?;
    let signer = Signer::new(&stored).map_err(|e| e.to_string())?;
    let jwks: Value = serde_json::from_str(signer.jwks()).map_err(|e| e.to_string())?;
    let key = EncodingKey::from_ec_pem(stored.private_key.as_bytes()).map_err(|e| e.to_string())?;
    Ok((stored.kid, key, jwks))
}

async fn discovery(State(idp): State<DevIdp>) -> Json<Value> {
    let base = &idp.0.issuer;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "end_session_endpoint": format!("{base}/end-session"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "email", "profile", "groups"],
    }))
}

async fn jwks_doc(State(idp): State<DevIdp>) -> Json<Value> {
    Json(idp.0.jwks.clone())
}

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, message.to_string()).into_response()
}

/// The authorization request's parameters, checked.
fn check_request(idp: &DevIdp, q: &HashMap<String, String>) -> Result<(), &'static str> {
    let c = &idp.0.client;
    if q.get("client_id") != Some(&c.id) {
        return Err("unknown client_id");
    }
    if q.get("redirect_uri") != Some(&c.redirect_uri) {
        return Err("redirect_uri is not the registered one");
    }
    if q.get("response_type").map(String::as_str) != Some("code") {
        return Err("only response_type=code");
    }
    if q.get("code_challenge_method").map(String::as_str) != Some("S256")
        || q.get("code_challenge").is_none_or(|c| c.is_empty())
    {
        return Err("PKCE S256 is required");
    }
    Ok(())
}

fn render(params: &HashMap<String, String>, error: Option<String>) -> Response {
    let mut keep: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "claims"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    keep.sort();
    let users = sample_users()
        .into_iter()
        .map(|u| {
            (
                u.key.to_string(),
                format!(
                    "{} <{}>",
                    u.claims["name"].as_str().unwrap_or(""),
                    u.claims["email"].as_str().unwrap_or("")
                ),
                u.note.to_string(),
            )
        })
        .collect();
    match (PickPage {
        users,
        params: &keep,
        error,
    })
    .render()
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn authorize(
    State(idp): State<DevIdp>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = check_request(&idp, &q) {
        return bad(e);
    }
    render(&q, None)
}

async fn pick(State(idp): State<DevIdp>, Form(f): Form<HashMap<String, String>>) -> Response {
    if let Err(e) = check_request(&idp, &f) {
        return bad(e);
    }
    let claims = match f.get("user").map(String::as_str) {
        Some("custom") => {
            match serde_json::from_str::<Value>(f.get("claims").map(String::as_str).unwrap_or("")) {
                Ok(v)
                    if v.get("sub")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty()) =>
                {
                    v
                }
                Ok(_) => return render(&f, Some("The claims need a non-empty \"sub\".".into())),
                Err(e) => return render(&f, Some(format!("The claims are not JSON: {e}"))),
            }
        }
        Some(key) => match sample_users().into_iter().find(|u| u.key == key) {
            Some(u) => u.claims,
            None => return bad("unknown sample user"),
        },
        None => return bad("no user picked"),
    };
    let code = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
    let redirect_uri = idp.0.client.redirect_uri.clone();
    if let Ok(mut codes) = idp.0.codes.lock() {
        codes.insert(
            code.clone(),
            Pending {
                claims,
                nonce: f.get("nonce").cloned(),
                challenge: f.get("code_challenge").cloned().unwrap_or_default(),
                redirect_uri: redirect_uri.clone(),
            },
        );
    }
    let Ok(mut to) = url::Url::parse(&redirect_uri) else {
        return bad("bad redirect_uri");
    };
    to.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = f.get("state") {
        to.query_pairs_mut().append_pair("state", state);
    }
    Redirect::to(to.as_str()).into_response()
}

fn token_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response()
}

/// Client credentials from Basic auth or the form.
fn client_ok(idp: &DevIdp, headers: &HeaderMap, f: &HashMap<String, String>) -> bool {
    let c = &idp.0.client;
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let decode = |x: &str| {
                percent_encoding::percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((decode(id), decode(secret)))
        });
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => (
            f.get("client_id").cloned().unwrap_or_default(),
            f.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    id == c.id && secret == c.secret
}

async fn token(
    State(idp): State<DevIdp>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if !client_ok(&idp, &headers, &f) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if f.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return token_error("unsupported_grant_type");
    }
    let pending = idp
        .0
        .codes
        .lock()
        .ok()
        .and_then(|mut c| c.remove(f.get("code").map(String::as_str).unwrap_or("")));
    let Some(p) = pending else {
        return token_error("invalid_grant");
    };
    if f.get("redirect_uri") != Some(&p.redirect_uri) {
        return token_error("invalid_grant");
    }
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    let computed = URL_SAFE_NO_PAD.encode(crate::util::sha256(verifier.as_bytes()));
    if computed != p.challenge {
        return token_error("invalid_grant");
    }
    let now = crate::store::now();
    let mut claims = p.claims.clone();
    if let Some(o) = claims.as_object_mut() {
        o.insert("iss".into(), idp.0.issuer.clone().into());
        o.insert("aud".into(), idp.0.client.id.clone().into());
        o.insert("iat".into(), now.into());
        o.insert("exp".into(), (now + 600).into());
        if let Some(n) = &p.nonce {
            o.insert("nonce".into(), n.clone().into());
        }
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(idp.0.kid.clone());
    let id_token = match jsonwebtoken::encode(&header, &claims, &idp.0.key) {
        Ok(t) => t,
        Err(_) => return token_error("server_error"),
    };
    let access = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
    if let Ok(mut a) = idp.0.access.lock() {
        a.insert(access.clone(), p.claims);
    }
    Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 600, "id_token": id_token}))
        .into_response()
}

async fn userinfo(State(idp): State<DevIdp>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    match idp.0.access.lock().ok().and_then(|a| a.get(token).cloned()) {
        Some(claims) => Json(claims).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response(),
    }
}

async fn end_session(
    State(idp): State<DevIdp>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // The demo IdP keeps no sign-in session: there is nothing to end here.
    match q.get("post_logout_redirect_uri") {
        Some(uri) if *uri == idp.0.client.post_logout_redirect_uri => {
            Redirect::to(uri).into_response()
        }
        _ => Html("<!doctype html><title>Signed out</title><p>Signed out.</p>").into_response(),
    }
}
