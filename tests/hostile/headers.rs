//! Advisory class: identity- and claim-header smuggling (client-sent
//! `X-Auth-*` or claim-header names reaching the app: case, `_` for `-`,
//! duplicates, a `Connection:`-nominated name, obs-fold continuation).

use crate::world::*;

struct Row {
    what: &'static str,
    host: &'static str,
    path: &'static str,
    session: bool,
    lines: &'static [&'static [u8]],
    status: u16,
    /// Header (lower-case) and the forged value that must not arrive.
    forged: &'static [(&'static str, &'static str)],
}

#[tokio::test]
async fn client_sent_identity_and_claim_headers_never_reach_the_upstream() {
    let w = world().await;
    let rows = [
        Row {
            what: "claim header on a public route",
            host: "open.test",
            path: "/",
            session: false,
            lines: &[b"X-Department: Forged"],
            status: 200,
            forged: &[("x-department", "Forged")],
        },
        Row {
            what: "claim header with _ on a public route",
            host: "open.test",
            path: "/",
            session: false,
            lines: &[b"X_Department: Forged"],
            status: 200,
            forged: &[("x-department", "Forged"), ("x_department", "Forged")],
        },
        Row {
            what: "claim header on a public path",
            host: "app.test",
            path: "/api/health",
            session: false,
            lines: &[b"x-DEPARTMENT: Forged"],
            status: 200,
            forged: &[("x-department", "Forged")],
        },
        Row {
            what: "claim header for a user whose claims lack it",
            host: "app.test",
            path: "/",
            session: true,
            lines: &[b"X-Department: Forged"],
            status: 200,
            forged: &[("x-department", "Forged")],
        },
        Row {
            what: "identity headers in every spelling",
            host: "app.test",
            path: "/",
            session: true,
            lines: &[
                b"X-Auth-User-Id: root",
                b"X_Auth_Roles: Admin",
                b"x-AUTH-email: boss@company.com",
                b"X-Auth-Org: other",
                b"X-Auth-Whatever: 1",
            ],
            status: 200,
            forged: &[
                ("x-auth-user-id", "root"),
                ("x-auth-roles", "Admin"),
                ("x-auth-email", "boss@company.com"),
                ("x-auth-org", "other"),
                ("x-auth-whatever", "1"),
            ],
        },
        Row {
            what: "duplicate identity headers",
            host: "app.test",
            path: "/",
            session: true,
            lines: &[b"X-Auth-User-Id: root", b"X-Auth-User-Id: admin"],
            status: 200,
            forged: &[("x-auth-user-id", "root"), ("x-auth-user-id", "admin")],
        },
        Row {
            what: "identity header nominated hop-by-hop",
            host: "app.test",
            path: "/",
            session: true,
            lines: &[b"Connection: X-Auth-User-Id", b"X-Auth-User-Id: root"],
            status: 200,
            forged: &[("x-auth-user-id", "root")],
        },
        Row {
            what: "identity header on a public route",
            host: "open.test",
            path: "/",
            session: false,
            lines: &[
                b"X-Auth-Email: boss@company.com",
                b"X-Auth-Assertion: eyJ.forged.x",
            ],
            status: 200,
            forged: &[
                ("x-auth-email", "boss@company.com"),
                ("x-auth-assertion", "eyJ.forged.x"),
            ],
        },
        Row {
            what: "obs-fold continuation of an identity header",
            host: "open.test",
            path: "/",
            session: false,
            lines: &[b"X-Auth-Email: boss@company.com", b" X-Auth-Roles: Admin"],
            status: 400,
            forged: &[("x-auth-email", "boss@company.com")],
        },
    ];
    for row in rows {
        let mut lines: Vec<&[u8]> = row.lines.to_vec();
        if row.session {
            lines.push(w.member.as_bytes());
        }
        let (status, answer) = request(&w, row.host, row.path.as_bytes(), &lines).await;
        assert_eq!(status, row.status, "{}", row.what);
        if let Some(seen) = upstream(&answer) {
            for (name, value) in row.forged {
                assert!(
                    !upstream_header(&seen, name).iter().any(|v| v == value),
                    "{}: {name}: {value} reached the upstream",
                    row.what
                );
            }
            if row.session {
                assert_eq!(
                    upstream_header(&seen, "x-auth-user-id"),
                    vec![w.alice.clone()],
                    "{}",
                    row.what
                );
            }
        }
    }
    w.still_up().await;
}

/// An email the IdP did not verify is never presented as the user's.
#[tokio::test]
async fn unverified_emails_are_not_sent_as_the_users() {
    let w = world().await;
    let (status, answer) = request(&w, "app.test", b"/", &[w.unverified.as_bytes()]).await;
    assert_eq!(status, 200);
    let seen = upstream(&answer).unwrap();
    assert!(upstream_header(&seen, "x-auth-email").is_empty());
    // Claim headers still come from the claims.
    assert_eq!(
        upstream_header(&seen, "x-department"),
        vec!["Sales".to_string()]
    );
    let jwt = upstream_header(&seen, "x-auth-assertion").remove(0);
    let claims = portcullis::oidc::verify::unverified_payload(&jwt).unwrap();
    assert!(claims.get("email").is_none(), "{claims}");
    assert_eq!(claims["email_verified"], false);

    let (_, answer) = request(&w, "app.test", b"/", &[w.member.as_bytes()]).await;
    let seen = upstream(&answer).unwrap();
    assert_eq!(
        upstream_header(&seen, "x-auth-email"),
        vec!["alice@company.com".to_string()]
    );
    let jwt = upstream_header(&seen, "x-auth-assertion").remove(0);
    let claims = portcullis::oidc::verify::unverified_payload(&jwt).unwrap();
    assert_eq!(
        (claims["email"].as_str(), &claims["email_verified"]),
        (Some("alice@company.com"), &serde_json::json!(true))
    );
}
