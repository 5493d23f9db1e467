//! Advisory classes: skip-auth by query or fragment (GHSA-7rh7-c77v-6434,
//! CVE-2026-41059), and path tricks against `public_paths` and protected
//! prefixes (dot segments raw and encoded, `;` parameters, `//`, `%2F`,
//! `%5C`, NUL, overlong UTF-8, case).

use crate::world::*;

/// (target, with a Member session, status, the path the upstream must see
/// when it is reached)
type Row = (&'static [u8], bool, u16, Option<&'static str>);

#[tokio::test]
async fn query_and_fragment_never_open_a_protected_path() {
    let w = world().await;
    let rows: &[Row] = &[
        (b"/admin?x=/api/health", false, 401, None),
        (b"/admin?/api/health", false, 401, None),
        (b"/admin#/api/health", false, 401, None),
        (b"/admin?%2F..%2Fapi%2Fhealth", false, 401, None),
        (b"/reports?rd=/api/health", false, 401, None),
        (b"/api/health?next=/admin", false, 200, Some("/api/health")),
        (b"/api/health#/../admin", false, 200, Some("/api/health")),
    ];
    check(&w, rows).await;
}

#[tokio::test]
async fn path_tricks_never_reach_a_protected_path_under_a_weaker_policy() {
    let w = world().await;
    let rows: &[Row] = &[
        // Dot segments, raw and encoded.
        (b"/api/health/../../admin", false, 401, None),
        (b"/api/health/%2e%2e/%2E%2E/admin", false, 401, None),
        (b"/static/.%2e/admin", false, 401, None),
        (b"//api/health/../../admin", false, 401, None),
        (b"/api//health", false, 200, Some("/api/health")),
        // `;` parameters, as Tomcat and Jetty read them.
        (b"/api/health/..;/..;/admin", false, 400, None),
        (b"/api/health/..;x/admin", false, 400, None),
        (b"/static/.;/admin", false, 400, None),
        (b"/api/health;x", false, 401, None),
        (b"/admin;x/users", true, 403, None),
        (b"/admin;jsessionid=1", true, 403, None),
        (
            b"/reports;jsessionid=1",
            true,
            200,
            Some("/reports;jsessionid=1"),
        ),
        // Encoded slash, backslash, NUL, control characters.
        (b"/static/..%2fadmin", false, 400, None),
        (b"/static/%5c../admin", false, 400, None),
        (b"/static\\..\\admin", false, 400, None),
        (b"/static/%00/../admin", false, 400, None),
        (b"/static/%0d%0aX-Auth-Email:%20x", false, 400, None),
        // Overlong UTF-8 dots stay opaque bytes under the public prefix.
        (
            b"/static/%c0%ae%c0%ae/admin",
            false,
            200,
            Some("/static/%C0%AE%C0%AE/admin"),
        ),
        // Raw non-ASCII bytes in the request line: refused by the parser.
        (b"/static/\xc0\xae\xc0\xae/admin", false, 400, None),
        // Case: a protected prefix matches in any case, a public one only
        // as written.
        (b"/ADMIN/users", true, 403, None),
        (b"/Admin", true, 403, None),
        (b"/API/HEALTH", false, 401, None),
        (b"/Static/x", false, 401, None),
        (b"/DOCS/x", false, 401, None),
        (b"/docs/x", false, 200, Some("/docs/x")),
        (b"/%61dmin", true, 403, None),
    ];
    check(&w, rows).await;
}

async fn check(w: &World, rows: &[Row]) {
    for (target, session, status, seen_path) in rows {
        let lines: Vec<&[u8]> = if *session {
            vec![w.member.as_bytes()]
        } else {
            vec![]
        };
        let (got, answer) = request(w, "app.test", target, &lines).await;
        let what = String::from_utf8_lossy(target);
        assert_eq!(got, *status, "{what}");
        let seen = upstream(&answer);
        match seen_path {
            Some(p) => assert_eq!(
                seen.as_ref().and_then(|s| s["path"].as_str()),
                Some(*p),
                "{what}"
            ),
            None => assert!(seen.is_none(), "{what} reached the upstream"),
        }
    }
    w.still_up().await;
}
