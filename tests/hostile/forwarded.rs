//! Advisory class: forwarded-header trust (oauth2-proxy CVE-2026-40575: a
//! spoofed or unreadable `X-Forwarded-Uri` judged as some other path).
//! Forward-auth is asked from the trusted proxy address; the judged
//! request must be exactly the one described, or 400.

use crate::world::*;

fn ask(from: [u8; 4], lines: &[&[u8]], w: &World) -> u16 {
    let mut req =
        b"GET /_portcullis/auth HTTP/1.1\r\nHost: auth.test\r\nConnection: close\r\n".to_vec();
    for l in lines {
        req.extend_from_slice(l);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    exchange_from(from, w.gw.http, &req).0
}

#[tokio::test]
async fn forward_auth_judges_exactly_the_described_request_or_refuses() {
    let w = world().await;
    let member = w.member.clone();
    let m = member.as_bytes();
    let get: &[u8] = b"X-Forwarded-Method: GET";
    let app: &[u8] = b"X-Forwarded-Host: app.test";
    let portal: &[u8] = b"X-Forwarded-Host: portal.test";
    let cafe = "X-Forwarded-Uri: /admin/users?q=café".as_bytes();
    let portal_cafe = "X-Forwarded-Uri: /admin/café".as_bytes();
    let rows: Vec<(&str, Vec<&[u8]>, u16)> = vec![
        (
            "member on an Admin path, raw UTF-8 query",
            vec![get, app, cafe, m],
            403,
        ),
        (
            "member on an Admin path",
            vec![get, app, b"X-Forwarded-Uri: /admin/users", m],
            403,
        ),
        (
            "member on a Member path",
            vec![get, app, b"X-Forwarded-Uri: /reports", m],
            200,
        ),
        (
            "member, path in another case",
            vec![get, app, b"X-Forwarded-Uri: /ADMIN/users", m],
            403,
        ),
        (
            "anonymous, raw UTF-8 under a protected prefix of a public host",
            vec![get, portal, portal_cafe],
            401,
        ),
        (
            "anonymous on the public root",
            vec![get, portal, b"X-Forwarded-Uri: /"],
            200,
        ),
        (
            "anonymous, dot segments into the protected prefix",
            vec![get, portal, b"X-Forwarded-Uri: /x/../admin"],
            401,
        ),
        ("missing X-Forwarded-Uri", vec![get, portal, m], 400),
        (
            "repeated X-Forwarded-Uri",
            vec![
                get,
                portal,
                b"X-Forwarded-Uri: /",
                b"X-Forwarded-Uri: /admin",
            ],
            400,
        ),
        (
            "missing X-Forwarded-Host",
            vec![get, b"X-Forwarded-Uri: /admin", m],
            400,
        ),
        (
            "repeated X-Forwarded-Host",
            vec![get, app, portal, b"X-Forwarded-Uri: /"],
            400,
        ),
        (
            "missing X-Forwarded-Method",
            vec![portal, b"X-Forwarded-Uri: /"],
            400,
        ),
        (
            "a dot segment with ;parameters",
            vec![get, portal, b"X-Forwarded-Uri: /x/..;/admin"],
            400,
        ),
        (
            "an encoded slash",
            vec![get, portal, b"X-Forwarded-Uri: /admin%2Fx"],
            400,
        ),
        (
            "not a path",
            vec![get, portal, b"X-Forwarded-Uri: http://portal.test/admin"],
            400,
        ),
        (
            "a host with a path in it",
            vec![
                get,
                b"X-Forwarded-Host: portal.test/admin",
                b"X-Forwarded-Uri: /",
            ],
            400,
        ),
        (
            "a host no route serves",
            vec![get, b"X-Forwarded-Host: evil.test", b"X-Forwarded-Uri: /"],
            404,
        ),
    ];
    for (what, lines, status) in &rows {
        assert_eq!(ask(PROXY, lines, &w), *status, "{what}");
    }
    // The same questions from a peer that is not a trusted proxy.
    assert_eq!(ask([127, 0, 0, 1], &rows[2].1, &w), 403, "untrusted peer");
    w.still_up().await;
}

/// A client's own `X-Forwarded-Uri` on a proxied request changes nothing:
/// the request's real path is judged.
#[tokio::test]
async fn forwarded_headers_from_a_client_are_not_believed() {
    let w = world().await;
    for (lines, status) in [
        (
            vec![
                &b"X-Forwarded-Uri: /api/health"[..],
                b"X-Original-URL: /api/health",
            ],
            401,
        ),
        (vec![&b"X-Forwarded-Host: open.test"[..]], 401),
        (vec![&b"X-Rewrite-URL: /docs"[..]], 401),
    ] {
        let (got, answer) = request(&w, "app.test", b"/admin", &lines).await;
        assert_eq!(got, status, "{lines:?}");
        assert!(
            upstream(&answer).is_none(),
            "{lines:?} reached the upstream"
        );
    }
    let (_, answer) = request(
        &w,
        "open.test",
        b"/",
        &[b"X-Forwarded-Host: app.test", b"X-Forwarded-For: 6.6.6.6"],
    )
    .await;
    let seen = upstream(&answer).unwrap();
    assert_eq!(
        upstream_header(&seen, "x-forwarded-host"),
        vec!["open.test".to_string()]
    );
    assert_eq!(
        upstream_header(&seen, "x-forwarded-for"),
        vec!["127.0.0.1".to_string()]
    );
}
