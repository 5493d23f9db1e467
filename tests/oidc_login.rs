//! Logging in end to end against a real, third-party OpenID provider
//! (`oidc-provider` from npm): the gateway, the IdP and the upstream on
//! loopback, a scripted browser in between.

mod support;

use portcullis::config::StoreKind;
use portcullis::store::Store;
use serde_json::{Value, json};
use support::idp::{Browser, Idp, Page, client};
use support::*;

struct World {
    gw: Gateway,
    _idp: Idp,
}

fn template(idp1: u16, idp2: u16, upstream: std::net::SocketAddr) -> String {
    let head = localhost_preamble("sqlite://{dir}/portcullis.db");
    format!(
        r#"{head}identity_providers:
  - id: main
    display_name: "Main IdP"
    issuer: "http://localhost:{idp1}"
    client_id: portcullis
    client_secret: main-secret
    scopes: [openid, email, profile, groups]
    provisioning:
      default:
        org: "contains(groups, '{{{{orgId}}}}')"
        roles: "contains(groups, 'admin') && 'Admin' || 'Member'"
  - id: second
    display_name: "Second IdP"
    issuer: "http://localhost:{idp2}"
    client_id: portcullis-two
    client_secret: second-secret
    scopes: [openid, email, profile]
    claims: merged
organizations:
  - id: home-lab
    roles: [{{name: Admin}}, {{name: Member}}]
    jit:
      email_domains: [example.com]
      default_roles: [Member]
routes:
  - name: app
    hosts: ["localhost"]
    upstreams: ["{upstream}"]
    org: home-lab
"#
    )
}

fn accounts() -> Value {
    json!({
        "alice": {"email": "alice@example.com", "email_verified": true, "name": "Alice", "groups": ["home-lab", "admin"]},
        "bob": {"email": "bob@example.com", "email_verified": true, "name": "Bob", "groups": []},
        "eve": {"email": "eve@elsewhere.org", "email_verified": true, "name": "Eve", "groups": ["strangers"]},
    })
}

async fn world() -> World {
    let upstream = start_echo("app").await;
    // The IdP's ports are in the gateway's config and the gateway's in
    // the IdP's: both bound first, each then handed to its server.
    let idp_sockets = [support::listener(), support::listener()];
    let [p1, p2] = idp_sockets
        .each_ref()
        .map(|s| s.local_addr().unwrap().port());
    let gw = Gateway::start(&template(p1, p2, upstream)).await;
    let port = gw.http.port();
    let idp = Idp::start(
        json!([
            {"clients": [client("portcullis", "main-secret", port)], "accounts": accounts()},
            {"clients": [client("portcullis-two", "second-secret", port)], "accounts": accounts()},
        ]),
        &idp_sockets,
    );
    World { gw, _idp: idp }
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{}", self.gw.http.port(), path)
    }

    async fn store(&self) -> Store {
        let url = format!("sqlite://{}/portcullis.db", self.gw.dir.path().display());
        Store::open(&url, StoreKind::Sqlite).await.unwrap()
    }

    /// Signs in through `idp` (`main` or `second`) as `account`, starting
    /// from a protected page as a browser would. Returns the final page.
    async fn sign_in(&self, b: &Browser, idp: &str, account: &str, trail: &mut Vec<Page>) -> Page {
        let first = b.get(&self.url("/dashboard?tab=1")).await;
        assert_eq!(first.status, 302, "{}", first.body);
        let chooser = b.follow(first, trail).await;
        assert_eq!(chooser.status, 200);
        // The chooser lists both IdPs by display name.
        assert!(chooser.body.contains("Main IdP") && chooser.body.contains("Second IdP"));
        let link = chooser
            .body
            .split("href=\"")
            .skip(1)
            .map(|s| support::idp::unescape(&s[..s.find('"').unwrap()]))
            .find(|h| h.ends_with(&format!("idp={idp}")))
            .expect("a link for the IdP");
        let at_idp = b.get(&support::idp::join(&chooser.url, &link)).await;
        b.sign_in_at_idp(at_idp, account, trail).await
    }
}

fn upstream_header(page: &Page, name: &str) -> Option<String> {
    page.json()["headers"][name][0].as_str().map(str::to_string)
}

#[tokio::test]
async fn full_login_reaches_the_upstream_with_identity_headers() {
    let w = world().await;
    let b = Browser::new();
    let mut trail = Vec::new();
    let page = w.sign_in(&b, "main", "alice", &mut trail).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // Back where the user started, with the query.
    assert!(page.url.ends_with("/dashboard?tab=1"), "{}", page.url);
    assert_eq!(page.json()["path"], "/dashboard");
    assert_eq!(
        upstream_header(&page, "x-auth-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(
        upstream_header(&page, "x-auth-idp").as_deref(),
        Some("main")
    );
    assert_eq!(
        upstream_header(&page, "x-auth-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        upstream_header(&page, "x-auth-org").as_deref(),
        Some("home-lab")
    );
    assert_eq!(
        upstream_header(&page, "x-auth-roles").as_deref(),
        Some("Admin")
    );
    assert!(upstream_header(&page, "x-auth-assertion").is_some());

    // The login went through PKCE S256, state and nonce.
    let authorize = trail
        .iter()
        .filter_map(|p| p.location())
        .find(|l| l.contains("/auth?"))
        .expect("a redirect to the IdP");
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "scope=openid",
    ] {
        assert!(authorize.contains(part), "{part} missing in {authorize}");
    }
    // The session cookie's flags.
    let cookie = trail
        .iter()
        .flat_map(|p| p.set_cookies())
        .find(|c| c.starts_with("_portcullis="))
        .expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "public_url is http: {cookie}");

    let me = b.get(&w.url("/_portcullis/userinfo")).await;
    let me = me.json();
    assert_eq!(me["subject"], "alice");
    assert_eq!(
        me["memberships"],
        json!([{"org": "home-lab", "roles": ["Admin"]}])
    );

    let metrics = w.gw.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_logins_total{idp="main",outcome="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"portcullis_provisioning_decisions_total{idp="main",decision="created"} 1"#
        )
    );
    // The membership change went to the audit log and the audit target.
    let logs = w.gw.log_with("membership.created").await;
    let audit: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("portcullis::audit"))
        .collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("membership.created") && l.contains("login:main")),
        "{logs}"
    );
}

#[tokio::test]
async fn second_idp_merges_userinfo_and_jit_by_email_domain() {
    let w = world().await;
    let b = Browser::new();
    let page = w.sign_in(&b, "second", "bob", &mut Vec::new()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        upstream_header(&page, "x-auth-idp").as_deref(),
        Some("second")
    );
    assert_eq!(
        upstream_header(&page, "x-auth-roles").as_deref(),
        Some("Member")
    );
    let store = w.store().await;
    let user = store
        .user_by_identity("second", "bob")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.memberships[0].source.as_str(), "jit");
}

#[tokio::test]
async fn a_user_with_no_membership_is_refused_and_not_created() {
    let w = world().await;
    let b = Browser::new();
    let page = w.sign_in(&b, "main", "eve", &mut Vec::new()).await;
    assert_eq!(page.status, 403);
    assert!(
        page.body.contains("not a member of any organization"),
        "{}",
        page.body
    );
    assert!(
        page.set_cookies()
            .iter()
            .all(|c| !c.starts_with("_portcullis="))
    );
    assert_eq!(w.store().await.count_users().await.unwrap(), 0);
    let metrics = w.gw.metrics().await;
    assert!(metrics.contains(r#"portcullis_logins_total{idp="main",outcome="no_membership"} 1"#));
}

#[tokio::test]
async fn two_tabs_each_complete_their_login() {
    let w = world().await;
    let b = Browser::new();
    // Two logins begun before either finishes.
    let start = |rd: &str| w.url(&format!("/_portcullis/login?idp=main&rd={rd}"));
    let tab1 = b.get(&start("%2Fone")).await;
    let tab2 = b.get(&start("%2Ftwo")).await;
    assert_eq!((tab1.status, tab2.status), (302, 302));
    // The second tab finishes first, then the first.
    let done2 = b.sign_in_at_idp(tab2, "alice", &mut Vec::new()).await;
    assert_eq!(done2.status, 200, "{}", done2.body);
    assert_eq!(done2.json()["path"], "/two");
    let done1 = b.sign_in_at_idp(tab1, "alice", &mut Vec::new()).await;
    assert_eq!(done1.status, 200, "{}", done1.body);
    assert_eq!(done1.json()["path"], "/one");
}

#[tokio::test]
async fn logout_ends_the_session_and_logs_out_at_the_idp() {
    let w = world().await;
    let b = Browser::new();
    assert_eq!(
        w.sign_in(&b, "main", "alice", &mut Vec::new()).await.status,
        200
    );
    let out = b.get(&w.url("/_portcullis/logout")).await;
    assert_eq!(out.status, 302);
    assert!(
        out.set_cookies()
            .iter()
            .any(|c| c.starts_with("_portcullis=;") && c.contains("Max-Age=0"))
    );
    let to_idp = out.location().unwrap();
    assert!(to_idp.contains("/session/end"), "{to_idp}");
    assert!(to_idp.contains("id_token_hint="), "{to_idp}");
    let back = format!("post_logout_redirect_uri={}", urlencode(&w.url("/")));
    assert!(to_idp.contains(&back), "{to_idp}");
    // The IdP asks for confirmation, then comes back to the gateway.
    let confirm = b.follow(out, &mut Vec::new()).await;
    let (action, mut fields) = confirm.form().expect("the IdP's logout form");
    fields.push(("logout".into(), "yes".into()));
    let done = b.post_form(&action, &fields).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(done.location().unwrap().starts_with(&w.url("/")));
    // Signed out here: a protected page sends the browser to the login.
    let again = b.get(&w.url("/dashboard")).await;
    assert_eq!(again.status, 302);
    assert!(again.location().unwrap().contains("/_portcullis/login"));
}

#[tokio::test]
async fn backchannel_logout_from_the_idp_ends_the_session() {
    let w = world().await;
    let b = Browser::new();
    assert_eq!(
        w.sign_in(&b, "main", "alice", &mut Vec::new()).await.status,
        200
    );
    assert_eq!(b.get(&w.url("/x")).await.status, 200);
    // Sign out at the IdP itself, not through the gateway.
    let end = b
        .get(&format!("http://localhost:{}/session/end", w._idp.ports[0]))
        .await;
    let confirm = b.follow(end, &mut Vec::new()).await;
    let (action, mut fields) = confirm.form().expect("the IdP's logout form");
    fields.push(("logout".into(), "yes".into()));
    let done = b.post_form(&action, &fields).await;
    assert!(done.status < 400, "{}", done.body);
    // The IdP told the gateway over the back channel before answering.
    let after = b.get(&w.url("/x")).await;
    assert_eq!(after.status, 302, "the session should be over");
    w.gw.log_with("sessions ended by back-channel logout").await;
}

#[tokio::test]
async fn a_replayed_callback_gets_no_session() {
    let w = world().await;
    let b = Browser::new();
    let start = b.get(&w.url("/_portcullis/login?idp=main&rd=%2F")).await;
    let state_cookie = start
        .set_cookies()
        .into_iter()
        .find(|c| c.contains("_login_"))
        .unwrap();
    let mut trail = Vec::new();
    let done = b.sign_in_at_idp(start, "alice", &mut trail).await;
    assert_eq!(done.status, 200);
    let callback = trail
        .iter()
        .find(|p| p.url.contains("/_portcullis/callback"))
        .expect("the callback")
        .url
        .clone();
    // Replayed by someone else, with the login-state cookie copied too:
    // the code was used already.
    let cookie = state_cookie.split(';').next().unwrap().to_string();
    let attacker = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = attacker
        .get(&callback)
        .header("cookie", cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("_portcullis="))
    );
    // Without the cookie: not started here.
    let r = attacker.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no_login_state"));
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
