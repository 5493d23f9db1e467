//! Advisory class: request smuggling shapes sent raw (CL+TE, duplicate or
//! conflicting Content-Length, obfuscated Transfer-Encoding): refused, or
//! read as one request; a smuggled second request is never proxied
//! without its own check.

use crate::world::*;

#[tokio::test]
async fn smuggling_shapes_never_carry_a_request_past_the_policy() {
    let w = world().await;
    let smuggled = "GET /admin HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let rows: Vec<(&str, String)> = vec![
        (
            "CL and TE",
            format!(
                "POST / HTTP/1.1\r\nHost: open.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE and CL",
            format!(
                "POST / HTTP/1.1\r\nHost: open.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two Content-Lengths",
            format!(
                "POST / HTTP/1.1\r\nHost: open.test\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "a Content-Length list",
            format!(
                "POST / HTTP/1.1\r\nHost: open.test\r\nContent-Length: 0, {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "an obfuscated Transfer-Encoding",
            format!(
                "POST / HTTP/1.1\r\nHost: open.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "a Transfer-Encoding list",
            format!(
                "POST / HTTP/1.1\r\nHost: open.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "a negative Content-Length",
            format!("POST / HTTP/1.1\r\nHost: open.test\r\nContent-Length: -1\r\n\r\n{smuggled}"),
        ),
    ];
    for (what, req) in rows {
        let addr = w.gw.http;
        let (_, answer) = tokio::task::spawn_blocking(move || {
            exchange_from([127, 0, 0, 1], addr, req.as_bytes())
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&answer);
        // Whatever was answered, the upstream never saw an anonymous /admin.
        assert!(
            !text.contains("\"path\":\"/admin\""),
            "{what}: the smuggled request reached the upstream\n{text}"
        );
        for status_line in text
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &text[i..(i + 12).min(text.len())])
        {
            assert!(
                !status_line.starts_with("HTTP/1.1 5"),
                "{what}: {status_line}"
            );
        }
    }
    w.still_up().await;
}
