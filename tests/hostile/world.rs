//! One gateway for the request tables: protected, Admin-only, public and
//! public-path routes, claim headers, a trusted proxy (127.0.0.2, for
//! forward-auth), and sessions for a Member with a verified email and for
//! one whose email is not verified.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use portcullis::config::StoreKind;
use portcullis::provision::{Membership, MembershipSource};
use portcullis::store::{NewUser, Store};
use serde_json::{Value, json};

use crate::support::*;

pub struct World {
    pub gw: Gateway,
    pub store: Store,
    pub alice: String,
    /// `Cookie:` line of alice's session (Member, verified email).
    pub member: String,
    /// `Cookie:` line of eve's session (Member, email not verified).
    pub unverified: String,
}

/// The address forward-auth trusts; requests from 127.0.0.1 are not.
pub const PROXY: [u8; 4] = [127, 0, 0, 2];

pub async fn world() -> World {
    let upstream = start_echo("app").await;
    let template = config_with(&format!(
        r#"identity_providers:
  - id: corp-idp
    issuer: "https://sso.example.com/"
    client_id: portcullis
organizations:
  - id: corp
    roles: [{{name: Admin}}, {{name: Member}}]
    jit: {{email_domains: [company.com], default_roles: [Member]}}
  - id: other
    roles: [{{name: Member}}]
routes:
  - name: app
    hosts: ["app.test"]
    upstreams: ["{upstream}"]
    org: corp
    public_paths: ["/api/health", "/static/"]
    claim_headers:
      X-Department: "department"
  - name: admin
    hosts: ["app.test"]
    path_prefix: "/admin"
    upstreams: ["{upstream}"]
    org: corp
    allow_roles: [Admin]
  - name: docs
    hosts: ["app.test"]
    path_prefix: "/docs"
    upstreams: ["{upstream}"]
    public: true
  - name: open
    hosts: ["open.test"]
    upstreams: ["{upstream}"]
    public: true
  - name: portal
    hosts: ["portal.test"]
    upstreams: ["{upstream}"]
    public: true
  - name: portal-admin
    hosts: ["portal.test"]
    path_prefix: "/admin"
    upstreams: ["{upstream}"]
    org: corp
"#
    ))
    .replace(
        "  grace_period: 5s\n",
        "  grace_period: 5s\n  trusted_proxies: [\"127.0.0.2/32\"]\n",
    );
    let gw = Gateway::start(&template).await;
    let url = format!("sqlite://{}/portcullis.db", gw.dir.path().display());
    let store = Store::open(&url, StoreKind::Sqlite).await.unwrap();
    let user = |sub: &str, email: &str| NewUser {
        idp: "corp-idp".into(),
        subject: Some(sub.into()),
        email: Some(email.into()),
        name: Some(sub.into()),
        memberships: vec![Membership {
            org: "corp".into(),
            roles: vec!["Member".into()],
            source: MembershipSource::Manual,
        }],
    };
    let alice = store
        .create_user(&user("alice", "alice@company.com"), "token:0")
        .await
        .unwrap()
        .id;
    let eve = store
        .create_user(&user("eve", "eve@company.com"), "token:0")
        .await
        .unwrap()
        .id;
    let (member, _) = session_cookie(
        &store,
        &alice,
        "corp-idp",
        "alice",
        json!({"sub": "alice", "email": "alice@company.com", "email_verified": true}),
        3600,
    )
    .await;
    let (unverified, _) = session_cookie(
        &store,
        &eve,
        "corp-idp",
        "eve",
        json!({"sub": "eve", "email": "eve@company.com", "email_verified": false, "department": "Sales"}),
        3600,
    )
    .await;
    World {
        gw,
        store,
        alice,
        member,
        unverified,
    }
}

/// A raw HTTP exchange from `from` (a loopback address): the status and
/// the whole answer as bytes.
pub fn exchange_from(from: [u8; 4], to: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let status = buf
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, buf)
}

/// A GET of `target` on `host` from 127.0.0.1 with raw header lines.
pub async fn request(w: &World, host: &str, target: &[u8], lines: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(format!(" HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n").as_bytes());
    for l in lines {
        req.extend_from_slice(l);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let addr = w.gw.http;
    tokio::task::spawn_blocking(move || exchange_from([127, 0, 0, 1], addr, &req))
        .await
        .unwrap()
}

/// What the echo upstream saw, when the request reached it.
pub fn upstream(answer: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(answer);
    let (_, body) = text.split_once("\r\n\r\n")?;
    let v: Value = serde_json::from_str(body).ok()?;
    v.get("headers").is_some().then_some(v)
}

/// The values of one header the upstream received.
pub fn upstream_header(seen: &Value, name: &str) -> Vec<String> {
    seen["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl World {
    /// The gateway still answers: nothing in the table took it down.
    pub async fn still_up(&self) {
        let r = get(self.gw.http, "app.test", "/_portcullis/healthz", &[]).await;
        assert_eq!(r.status, 200, "the gateway stopped answering");
    }
}
