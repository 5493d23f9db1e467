//! Hostile logins, tokens and redirects. A rogue IdP on loopback hands the
//! gateway spoiled ID tokens; each case must end with no session and no
//! user created or changed.

mod support;

use portcullis::config::StoreKind;
use portcullis::session::cookie::SessionId;
use portcullis::store::{NewSession, Store};
use serde_json::{Value, json};
use support::idp::{Browser, Page};
use support::rogue::{CLIENT_ID, Rogue, Spoil, login_through, post_logout_token};
use support::*;

struct World {
    gw: Gateway,
    rogue: Rogue,
}

async fn world() -> World {
    let rogue = Rogue::start().await;
    World {
        gw: gateway(&rogue.issuer()).await,
        rogue,
    }
}

async fn gateway(issuer: &str) -> Gateway {
    let upstream = start_echo("app").await;
    let head = localhost_preamble("sqlite://{dir}/portcullis.db");
    let template = format!(
        r#"{head}identity_providers:
  - id: rogue
    issuer: "{issuer}"
    client_id: {CLIENT_ID}
    client_secret: s3cret
    claims: merged
    bearer_audiences: ["api://gateway"]
    provisioning:
      default:
        org: "contains(groups, '{{{{orgId}}}}')"
        roles: "'Member'"
organizations:
  - id: home-lab
    roles: [{{name: Member}}]
routes:
  - name: app
    hosts: ["localhost", "app.test"]
    upstreams: ["{upstream}"]
    org: home-lab
  - name: api
    hosts: ["localhost"]
    path_prefix: "/api"
    upstreams: ["{upstream}"]
    org: home-lab
    accept_bearer: true
"#
    );
    Gateway::start(&template).await
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{}", self.gw.http.port(), path)
    }

    async fn store(&self) -> Store {
        let url = format!("sqlite://{}/portcullis.db", self.gw.dir.path().display());
        Store::open(&url, StoreKind::Sqlite).await.unwrap()
    }

    /// A login through the rogue IdP up to the gateway's answer to the
    /// callback (not followed further).
    async fn login(&self, b: &Browser, rd: &str) -> Page {
        login_through(b, &self.url(""), rd).await.1
    }
}

fn has_session_cookie(p: &Page) -> bool {
    p.set_cookies()
        .iter()
        .any(|c| c.starts_with("_portcullis=") && !c.starts_with("_portcullis=;"))
}

#[tokio::test]
async fn spoiled_id_tokens_give_no_session_and_no_user() {
    let w = world().await;
    let cases = [
        (Spoil::WrongIssuer, "issuer"),
        (Spoil::WrongAudience, "audience"),
        (Spoil::Expired, "expired"),
        (Spoil::AlgNone, "algorithm"),
        (Spoil::Hs256WithPublicKey, "algorithm"),
        (Spoil::UnknownKid, "kid"),
        (Spoil::NonceMismatch, "nonce"),
        (Spoil::IssuedInTheFuture, "future"),
        (Spoil::TwoAudiencesNoAzp, "azp"),
        (Spoil::BadSignature, "signature"),
        (Spoil::UserinfoSubDiffers, "another user"),
    ];
    for (spoil, reason) in cases {
        w.rogue.spoil(spoil);
        let b = Browser::new();
        let page = w.login(&b, "/").await;
        assert_eq!(page.status, 400, "{spoil:?}: {}", page.body);
        assert!(!has_session_cookie(&page), "{spoil:?} got a session");
        assert!(
            page.body.contains(reason),
            "{spoil:?}: the page should say why ({reason}): {}",
            page.body
        );
        // The page offers a fresh login.
        assert!(page.body.contains("/_portcullis/login"), "{spoil:?}");
        assert_eq!(w.store().await.count_users().await.unwrap(), 0, "{spoil:?}");
    }
    // The same flow with an unspoiled token works, so each refusal above
    // was the spoiling's doing.
    w.rogue.spoil(Spoil::Nothing);
    let page = w.login(&Browser::new(), "/").await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert!(has_session_cookie(&page));
    assert_eq!(w.store().await.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn callback_state_must_match_a_sealed_login() {
    let w = world().await;
    let b = Browser::new();
    let start = b.get(&w.url("/_portcullis/login?rd=%2F")).await;
    let at_idp = b.get(&start.location().unwrap()).await;
    let callback = at_idp.location().unwrap();
    let state_cookie = start
        .set_cookies()
        .into_iter()
        .find(|c| c.contains("_login_"))
        .unwrap();
    let (name, value) = state_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap();
    let (name, value) = (name.to_string(), value.to_string());
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let call = |url: String, cookie: Option<String>| {
        let raw = raw.clone();
        async move {
            let mut req = raw.get(url);
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let session = r.headers().get_all("set-cookie").iter().any(|c| {
                c.to_str().unwrap().starts_with("_portcullis=")
                    && !c.to_str().unwrap().starts_with("_portcullis=;")
            });
            (status, session, r.text().await.unwrap())
        }
    };
    let good_cookie = format!("{name}={value}");
    // A state that is not this login's: its cookie is not found.
    let other_state = callback.replace("state=", "state=x");
    let (s, session, body) = call(other_state, Some(good_cookie.clone())).await;
    assert_eq!((s, session), (400, false));
    assert!(body.contains("no_login_state"), "{body}");
    // No state at all.
    let no_state = callback.split("&state=").next().unwrap().to_string();
    let (s, session, _) = call(no_state, Some(good_cookie.clone())).await;
    assert_eq!((s, session), (400, false));
    // The login-state cookie tampered with.
    let mut bytes = value.into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{name}={}", String::from_utf8(bytes).unwrap());
    let (s, session, body) = call(callback.clone(), Some(tampered)).await;
    assert_eq!((s, session), (400, false));
    assert!(body.contains("bad_login_state"), "{body}");
    // Another login's sealed value under this login's cookie name.
    let other = b.get(&w.url("/_portcullis/login?rd=%2F")).await;
    let other_value = other
        .set_cookies()
        .into_iter()
        .find(|c| c.contains("_login_"))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let (s, session, _) = call(callback.clone(), Some(format!("{name}={other_value}"))).await;
    assert_eq!((s, session), (400, false));
    assert_eq!(w.store().await.count_users().await.unwrap(), 0);
    // The untouched callback still works: the refusals were about the
    // tampering.
    let (s, session, _) = call(callback, Some(good_cookie)).await;
    assert_eq!((s, session), (302, true));
}

#[tokio::test]
async fn open_redirects_are_refused() {
    let w = world().await;
    let port = w.gw.http.port();
    let kept = [
        ("/dashboard?a=1", "/dashboard?a=1".to_string()),
        (
            &*format!("http://app.test:{port}/x"),
            format!("http://app.test:{port}/x"),
        ),
    ];
    for (rd, want) in kept {
        let page = w.login(&Browser::new(), rd).await;
        assert_eq!(page.status, 302);
        assert_eq!(page.location().unwrap(), want, "rd {rd}");
    }
    let hostile = [
        "//evil.com",
        "///evil.com/",
        "/\\evil.com",
        "\\/evil.com",
        "/%09/evil.com",
        "/%2F%2Fevil.com",
        "/%5Cevil.com",
        "https:evil.com",
        "https:/evil.com",
        "javascript:alert(document.cookie)",
        "https://evil.com/",
        "http://localhost.evil.com/",
        "https://localhost@evil.com/",
        "https://evil.com\\@localhost/",
        "data:text/html;base64,PHNjcmlwdD4=",
        "/\r\nSet-Cookie: a=b",
    ];
    for rd in hostile {
        let page = w.login(&Browser::new(), rd).await;
        assert_eq!(page.status, 302, "{rd}");
        assert_eq!(page.location().unwrap(), "/", "rd {rd:?} must become /");
    }
}

#[tokio::test]
async fn bearer_tokens_on_routes_that_accept_them() {
    let w = world().await;
    // A user exists once they have logged in.
    w.rogue.spoil(Spoil::Nothing);
    assert_eq!(w.login(&Browser::new(), "/").await.status, 302);
    let api = |token: String, path: &'static str| {
        let url = w.url(path);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let good = w.rogue.sign(&w.rogue.claims(json!({"sub": "mallory"})));
    let r = api(good.clone(), "/api/things").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["headers"]["x-auth-subject"][0], "mallory");
    assert_eq!(body["headers"]["x-auth-roles"][0], "Member");
    // The Authorization header itself still goes upstream (it is the
    // app's API credential), but never as an identity header.
    // Extra audience from bearer_audiences.
    let other_aud = w.rogue.sign(
        &w.rogue
            .claims(json!({"sub": "mallory", "aud": "api://gateway"})),
    );
    assert_eq!(api(other_aud, "/api/x").await.status(), 200);

    let refused = [
        (
            "unknown user",
            w.rogue.sign(&w.rogue.claims(json!({"sub": "nobody"}))),
        ),
        (
            "wrong audience",
            w.rogue
                .sign(&w.rogue.claims(json!({"sub": "mallory", "aud": "other"}))),
        ),
        ("expired", {
            let now = portcullis::store::now();
            w.rogue.sign(
                &w.rogue
                    .claims(json!({"sub": "mallory", "iat": now - 7200, "exp": now - 3600})),
            )
        }),
        (
            "wrong issuer",
            w.rogue.sign(
                &w.rogue
                    .claims(json!({"sub": "mallory", "iss": "http://127.0.0.1:1"})),
            ),
        ),
        ("alg none", {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!(
                "{}.{}.",
                b64.encode(r#"{"alg":"none"}"#),
                b64.encode(w.rogue.claims(json!({"sub": "mallory"})).to_string())
            )
        }),
        ("garbage", "not-a-jwt".to_string()),
    ];
    for (what, token) in refused {
        let r = api(token, "/api/x").await;
        assert_eq!(r.status(), 401, "{what}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    // A route without accept_bearer ignores the token.
    assert_eq!(api(good, "/other").await.status(), 401);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_on_an_unknown_kid() {
    let w = world().await;
    w.rogue.spoil(Spoil::Nothing);
    assert_eq!(w.login(&Browser::new(), "/").await.status, 302);
    // A new EC key, published after the gateway cached the JWKS.
    let stored = portcullis::assertion::Signer::generate().unwrap();
    let signer = portcullis::assertion::Signer::new(&stored).unwrap();
    let jwk: Value = serde_json::from_str::<Value>(signer.jwks()).unwrap()["keys"][0].clone();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(stored.kid.clone());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(stored.private_key.as_bytes()).unwrap();
    let token =
        jsonwebtoken::encode(&header, &w.rogue.claims(json!({"sub": "mallory"})), &key).unwrap();
    let call = |token: String| {
        let url = w.url("/api/x");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Published after the gateway cached the JWKS: the unknown kid makes it
    // fetch the keys again, and the token passes.
    w.rogue.add_jwk(jwk);
    assert_eq!(call(token).await, 200);
    // A kid that is nowhere: refused, and no second refresh so soon.
    header.kid = Some("never-published".into());
    let stray =
        jsonwebtoken::encode(&header, &w.rogue.claims(json!({"sub": "mallory"})), &key).unwrap();
    assert_eq!(call(stray.clone()).await, 401);
    assert_eq!(call(stray).await, 401);
    let logs = w.gw.log_with("JWKS refreshed for an unknown kid").await;
    assert_eq!(
        logs.matches("JWKS refreshed for an unknown kid").count(),
        1,
        "{logs}"
    );
}

#[tokio::test]
async fn backchannel_logout_tokens_are_verified() {
    let w = world().await;
    w.rogue.spoil(Spoil::Nothing);
    assert_eq!(w.login(&Browser::new(), "/").await.status, 302);
    let store = w.store().await;
    let user = store
        .user_by_identity("rogue", "mallory")
        .await
        .unwrap()
        .unwrap();
    let id = SessionId::generate();
    store
        .create_session(&NewSession {
            id_hash: id.hash(),
            user_id: user.id.clone(),
            idp: "rogue".into(),
            subject: "mallory".into(),
            idp_sub: Some("mallory".into()),
            sid: Some("idp-session-1".into()),
            id_token: None,
            refresh_token: None,
            claims: json!({"sub": "mallory"}),
            expires_at: portcullis::store::now() + 3600,
        })
        .await
        .unwrap();
    let port = w.gw.http.port();
    let post = |token: String| post_logout_token(port, token);
    let base = |extra: Value| {
        let mut c = w
            .rogue
            .logout_claims(json!({"sid": "idp-session-1", "jti": "j1"}));
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let hostile = [
        ("a nonce", base(json!({"nonce": "n"}))),
        ("no event", base(json!({"events": {}}))),
        ("wrong audience", base(json!({"aud": "other"}))),
        ("wrong issuer", base(json!({"iss": "http://127.0.0.1:1"}))),
        ("neither sub nor sid", {
            let mut c = base(json!({}));
            c.as_object_mut().unwrap().remove("sid");
            c
        }),
    ];
    for (what, claims) in hostile {
        assert_eq!(post(w.rogue.sign(&claims)).await, 400, "{what}");
        assert!(
            store.session(&id.hash()).await.unwrap().is_some(),
            "{what} ended the session"
        );
    }
    assert_eq!(post("garbage".into()).await, 400);
    // The genuine token ends the session with that sid, once.
    let genuine = w.rogue.sign(&base(json!({})));
    assert_eq!(post(genuine.clone()).await, 200);
    assert!(store.session(&id.hash()).await.unwrap().is_none());
    assert_eq!(post(genuine).await, 400, "a replayed logout token");
}

#[tokio::test]
async fn an_idp_down_at_start_gives_502_until_it_answers() {
    // Bound and not listening: refused until the IdP takes this socket.
    let reserved = Reserved::new();
    let port = reserved.port();
    let gw = gateway(&format!("http://127.0.0.1:{port}")).await;
    let b = Browser::new();
    let login = format!(
        "http://localhost:{}/_portcullis/login?rd=%2F",
        gw.http.port()
    );
    let down = b.get(&login).await;
    assert_eq!(down.status, 502);
    assert!(
        down.body.contains("rogue"),
        "the page names the IdP: {}",
        down.body
    );
    // Sessions do not need the IdP.
    let url = format!("sqlite://{}/portcullis.db", gw.dir.path().display());
    let store = Store::open(&url, StoreKind::Sqlite).await.unwrap();
    let user = store
        .create_user(
            &portcullis::store::NewUser {
                idp: "rogue".into(),
                subject: Some("s".into()),
                email: None,
                name: None,
                memberships: vec![portcullis::provision::Membership {
                    org: "home-lab".into(),
                    roles: vec!["Member".into()],
                    source: portcullis::provision::MembershipSource::Manual,
                }],
            },
            "token:0",
        )
        .await
        .unwrap();
    let (cookie, _) = session_cookie(&store, &user.id, "rogue", "s", json!({}), 600).await;
    let r = get(gw.http, "localhost", "/x", &[&cookie]).await;
    assert_eq!(r.status, 200);
    // The IdP comes up: logins work again (after the short back-off).
    let _rogue = Rogue::serve(reserved.listen());
    let page = eventually(
        "logins recover",
        std::time::Duration::from_secs(20),
        || async {
            let page = b.get(&login).await;
            assert!(page.status == 302 || page.status == 502, "{}", page.status);
            (page.status == 302).then_some(page)
        },
    )
    .await;
    assert!(
        page.location()
            .unwrap()
            .starts_with(&format!("http://127.0.0.1:{port}/authorize"))
    );
}

#[tokio::test]
async fn a_policy_error_at_login_is_logged_counted_and_refused() {
    let w = world().await;
    w.rogue.spoil(Spoil::Nothing);
    // No `groups` claim: `contains(groups, 'home-lab')` fails at run time.
    w.rogue
        .set_claims(json!({"sub": "nogroups", "email": "n@elsewhere.org", "email_verified": true}));
    let page = w.login(&Browser::new(), "/").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(!has_session_cookie(&page));
    let metrics = w.gw.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_policy_errors_total{idp="rogue",org="home-lab"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"portcullis_logins_total{idp="rogue",outcome="no_membership"} 1"#));
    let logs = w.gw.log_with("policy expression failed").await;
    assert!(logs.contains("contains(groups, 'home-lab')"), "{logs}");
    assert_eq!(w.store().await.count_users().await.unwrap(), 0);
}

/// SPEC section 8: a login begun on one replica finishes on another (same
/// file, same secret, same store), and the session works on both.
#[tokio::test]
async fn a_login_begun_on_one_replica_finishes_on_another() {
    let w = world().await;
    w.rogue.spoil(Spoil::Nothing);
    let a = &w.gw;
    let text = std::fs::read_to_string(&a.config_path).unwrap();
    let b = Gateway::start(
        &text
            .replace(
                &format!("listen: \"127.0.0.1:{}\"", a.http.port()),
                "listen: \"127.0.0.1:{http}\"",
            )
            .replace(
                &format!("listen: \"127.0.0.1:{}\"", a.admin.port()),
                "listen: \"127.0.0.1:{admin}\"",
            ),
    )
    .await;
    let browser = Browser::new();
    let start = browser.get(&w.url("/_portcullis/login?rd=%2Fdone")).await;
    let state_cookie = start
        .set_cookies()
        .into_iter()
        .find(|c| c.contains("_login_"))
        .unwrap();
    let at_idp = browser.get(&start.location().unwrap()).await;
    let callback = url::Url::parse(&at_idp.location().unwrap()).unwrap();
    // The callback reaches replica B (as a load balancer might send it).
    let target = format!("{}?{}", callback.path(), callback.query().unwrap());
    let cookie = format!("Cookie: {}", state_cookie.split(';').next().unwrap());
    let host = format!("localhost:{}", a.http.port());
    let r = get(b.http, &host, &target, &[&cookie, "Accept: text/html"]).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/done"));
    let session = r
        .head
        .lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .find(|c| c.starts_with("_portcullis=") && !c.starts_with("_portcullis=;"))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // The session is good on both replicas.
    for gw in [a, &b] {
        let r = get(gw.http, "localhost", "/", &[&format!("Cookie: {session}")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}
