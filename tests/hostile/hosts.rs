//! Advisory class: host case and trailing dot (Authelia CVE-2026-48794),
//! and ambiguous hosts. A host is judged as the route it names whatever
//! its spelling, or refused.

use crate::world::*;

#[tokio::test]
async fn a_protected_host_in_any_spelling_stays_protected() {
    let w = world().await;
    for (host, status) in [
        ("APP.TEST", 401),
        ("app.test.", 401),
        ("App.Test.:8080", 401),
        ("app.test:65535", 401),
        ("app.test..", 400),
        ("app.test..", 400),
        ("app.test@open.test", 400),
        ("open.test/app.test", 400),
        ("evil.test", 404),
    ] {
        let (got, answer) = request(&w, host, b"/admin", &[]).await;
        assert_eq!(got, status, "{host}");
        assert!(upstream(&answer).is_none(), "{host} reached the upstream");
    }
    // Two Host headers, or an absolute target naming another host.
    let (got, _) = request(&w, "open.test", b"/admin", &[b"Host: app.test"]).await;
    assert_eq!(got, 400, "two Host headers");
    let (got, answer) = request(&w, "open.test", b"http://app.test/admin", &[]).await;
    assert_eq!(got, 400, "absolute-form target naming another host");
    assert!(upstream(&answer).is_none());
    // Browsers never send absolute-form to an origin; such a request is
    // refused whole rather than judged on either of its two hosts.
    let (got, answer) = request(&w, "app.test", b"http://APP.test/admin", &[]).await;
    assert_eq!(got, 400, "absolute-form target naming the same host");
    assert!(upstream(&answer).is_none());
    w.still_up().await;
}
