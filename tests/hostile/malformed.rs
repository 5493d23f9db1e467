//! Advisory class: oversized and malformed cookies and headers (a
//! non-ASCII cookie hiding the session, bad session cookies, header floods,
//! bytes not allowed in HTTP): 400 or 431, never a pass, never a crash.

use crate::world::*;

#[tokio::test]
async fn a_non_ascii_cookie_hides_nothing() {
    let w = world().await;
    let id = w.member.trim_start_matches("Cookie: ").to_string();
    let cookie = format!("Cookie: theme=café; {id}; lang=\u{fc}");
    // On a protected route the user is who the session says.
    let (status, answer) = request(&w, "app.test", b"/", &[cookie.as_bytes()]).await;
    assert_eq!(status, 200);
    let seen = upstream(&answer).unwrap();
    assert_eq!(
        upstream_header(&seen, "x-auth-user-id"),
        vec![w.alice.clone()]
    );
    // On a public route the session cookie still stays behind, the rest
    // goes on as it came.
    let (status, answer) = request(&w, "open.test", b"/", &[cookie.as_bytes()]).await;
    assert_eq!(status, 200);
    let seen = upstream(&answer).unwrap();
    let cookies = upstream_header(&seen, "cookie").join("; ");
    assert!(!cookies.contains("_portcullis"), "{cookies}");
    assert!(cookies.contains("theme=caf"), "{cookies}");
    // Raw bytes that are not UTF-8 at all.
    let mut raw = b"Cookie: x=\xff\xfe; ".to_vec();
    raw.extend_from_slice(id.as_bytes());
    let (status, answer) = request(&w, "app.test", b"/", &[&raw]).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream_header(&upstream(&answer).unwrap(), "x-auth-user-id"),
        vec![w.alice.clone()]
    );
}

#[tokio::test]
async fn malformed_and_oversized_headers_are_refused() {
    let w = world().await;
    let big_cookie = format!("Cookie: a={}", "x".repeat(40 * 1024));
    let many: Vec<String> = (0..300)
        .map(|i| format!("X-Filler-{i}: {}", "y".repeat(120)))
        .collect();
    let long_target = format!("/{}", "a".repeat(40 * 1024));
    /// (what, target, header lines, the statuses that refuse it)
    type Row<'a> = (&'a str, &'a [u8], Vec<Vec<u8>>, &'a [u16]);
    let rows: Vec<Row> = vec![
        (
            "a malformed session cookie",
            b"/",
            vec![b"Cookie: _portcullis=../../etc/passwd".to_vec()],
            &[400],
        ),
        (
            "a session cookie of the wrong length",
            b"/",
            vec![b"Cookie: _portcullis=AAAA".to_vec()],
            &[400],
        ),
        (
            "an unknown well-formed session",
            b"/",
            vec![format!("Cookie: _portcullis={}", "A".repeat(43)).into_bytes()],
            &[401],
        ),
        (
            "a 40 KB cookie",
            b"/",
            vec![big_cookie.into_bytes()],
            &[431],
        ),
        (
            "300 headers of 120 bytes",
            b"/",
            many.iter().map(|h| h.clone().into_bytes()).collect(),
            &[400, 431],
        ),
        (
            "a 40 KB request target",
            long_target.as_bytes(),
            vec![],
            &[400, 414, 431],
        ),
        (
            "a control byte in a header value",
            b"/",
            vec![b"X-Thing: a\x01b".to_vec()],
            &[400],
        ),
        (
            "a header without a colon",
            b"/",
            vec![b"Garbage line".to_vec()],
            &[400],
        ),
        (
            "a space before the colon",
            b"/",
            vec![b"X-Auth-User-Id : root".to_vec()],
            &[400],
        ),
        (
            "NUL in a header value",
            b"/",
            vec![b"X-Thing: a\0b".to_vec()],
            &[400],
        ),
        ("bad percent-encoding", b"/a%zz", vec![], &[400]),
        (
            "bad percent-encoding in a session cookie",
            b"/",
            vec![b"Cookie: _portcullis=%zz".to_vec()],
            &[400],
        ),
    ];
    for (what, target, lines, statuses) in &rows {
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let (status, answer) = request(&w, "app.test", target, &refs).await;
        assert!(statuses.contains(&status), "{what}: got {status}");
        assert!(upstream(&answer).is_none(), "{what} reached the upstream");
    }
    w.still_up().await;
}
