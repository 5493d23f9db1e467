//! Advisory class: open redirects through `rd` and logout (the
//! `//evil`, `/\evil`, `/%09/evil`, `https:evil`, userinfo and encoded
//! forms other gateways fell for).

use crate::world::*;

/// Where the login sends the browser afterwards: the `rd` the gateway
/// carries to the public host's login.
fn carried_rd(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let location = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap_or_else(|| panic!("no location in {text}"));
    let url = url::Url::parse(location.trim()).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn rd_never_leaves_the_routed_hosts() {
    let w = world().await;
    let port = w.gw.http.port();
    let home = format!("http://app.test:{port}/");
    for (rd, expected) in [
        ("//evil.com", home.clone()),
        ("/\\evil.com", home.clone()),
        ("/%09/evil.com", home.clone()),
        ("/%2F/evil.com", home.clone()),
        ("https:evil.com", home.clone()),
        ("https:/evil.com", home.clone()),
        ("javascript:alert(1)", home.clone()),
        ("data:text/html,x", home.clone()),
        ("https://evil.com/", home.clone()),
        ("https://app.test@evil.com/", home.clone()),
        ("https://evil.com\\@app.test/", home.clone()),
        ("https://app.test.evil.com/", home.clone()),
        ("http://open.test/x", "http://open.test/x".into()),
        ("https://APP.test./y", "https://APP.test./y".into()),
        (
            "/reports?a=1",
            format!("http://app.test:{port}/reports?a=1"),
        ),
    ] {
        let q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let target = format!("/_portcullis/login?rd={q}");
        let (status, answer) =
            request(&w, &format!("app.test:{port}"), target.as_bytes(), &[]).await;
        assert_eq!(status, 302, "{rd}");
        assert_eq!(carried_rd(&answer), expected, "{rd}");
    }
    // Logout takes no destination from the request at all.
    for q in [
        "rd=//evil.com",
        "post_logout_redirect_uri=https://evil.com",
        "redirect_uri=https://evil.com",
    ] {
        let target = format!("/_portcullis/logout?{q}");
        let (status, answer) =
            request(&w, "app.test", target.as_bytes(), &[w.member.as_bytes()]).await;
        assert_eq!(status, 302, "{q}");
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.contains("\r\nlocation: /\r\n"), "{q}: {text}");
    }
    w.still_up().await;
}
