//! Request headers on their way upstream: client-sent identity headers are
//! removed before anything is set, and `X-Forwarded-*` are rewritten.

use std::net::IpAddr;

use ipnet::IpNet;
use pingora::http::RequestHeader;

use crate::config::{IdentityHeaders, Route};
use crate::session::Principal;

/// Whether a client-sent header name would pass for an identity header:
/// compared lower-case with `_` read as `-`, against the configured names
/// and the whole `x-auth-` family.
pub fn is_identity_header(name: &str, identity_names: &[String]) -> bool {
    // On the hot path: compared byte by byte, without allocating.
    let norm = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    let same = |a: &[u8], b: &[u8]| a.iter().zip(b).all(|(x, y)| norm(*x) == *y);
    let name = name.as_bytes();
    (name.len() >= 7 && same(&name[..7], b"x-auth-"))
        || identity_names
            .iter()
            .any(|n| n.len() == name.len() && same(name, n.as_bytes()))
}

/// Removes every identity-looking header; returns how many names went.
pub fn strip_identity_headers(req: &mut RequestHeader, identity_names: &[String]) -> usize {
    let doomed: Vec<String> = req
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| is_identity_header(k, identity_names))
        .map(str::to_string)
        .collect();
    for name in &doomed {
        while req.remove_header(name.as_str()).is_some() {}
    }
    doomed.len()
}

pub fn is_trusted(peer: Option<IpAddr>, trusted: &[IpNet]) -> bool {
    peer.is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)))
}

/// All values of a header as bytes, joined with `; ` (the cookie
/// separator). Bytes, not text: one value with a non-ASCII byte must not
/// make the others vanish (a `theme=café` cookie hiding the session).
pub fn joined_bytes(req: &RequestHeader, name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in req.headers.get_all(name).iter() {
        let buf = out.get_or_insert_with(Vec::new);
        if !buf.is_empty() {
            buf.extend_from_slice(b"; ");
        }
        buf.extend_from_slice(v.as_bytes());
    }
    out
}

/// All values of a header joined with `separator`, if any is valid text.
pub fn joined(req: &RequestHeader, name: &str, separator: &str) -> Option<String> {
    let values: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(separator))
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host`. A peer in
/// `trusted_proxies` has its own values kept (and `For` appended to);
/// anyone else has them replaced, and `Forwarded`/`X-Real-IP` removed.
pub fn set_forwarded(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    trusted: bool,
    proto: &str,
    host: &str,
) {
    let peer_text = peer.map(|p| p.to_string()).unwrap_or_default();
    let xff = match (trusted, joined(req, "x-forwarded-for", ", ")) {
        (true, Some(existing)) if !peer_text.is_empty() => format!("{existing}, {peer_text}"),
        (true, Some(existing)) => existing,
        _ => peer_text,
    };
    let xfp = match (trusted, joined(req, "x-forwarded-proto", ", ")) {
        (true, Some(existing)) => existing,
        _ => proto.to_string(),
    };
    let xfh = match (trusted, joined(req, "x-forwarded-host", ", ")) {
        (true, Some(existing)) => existing,
        _ => host.to_string(),
    };
    if !trusted {
        req.remove_header("forwarded");
        req.remove_header("x-real-ip");
    }
    for (name, value) in [
        ("x-forwarded-for", xff),
        ("x-forwarded-proto", xfp),
        ("x-forwarded-host", xfh),
    ] {
        req.remove_header(name);
        if !value.is_empty() {
            set_header(req, name, &value);
        }
    }
}

/// The request as it goes upstream: client identity headers removed,
/// `X-Forwarded-*` set, the session cookie removed unless the route passes
/// it, the identity headers of an authenticated request set, and the path
/// the policy judged.
pub(super) fn prepare_upstream(
    upstream: &mut RequestHeader,
    ctx: &super::RequestCtx,
    assertion: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    let config = &ctx.runtime.config;
    strip_identity_headers(upstream, &ctx.runtime.identity_header_names);
    let trusted = is_trusted(ctx.peer, &config.server.trusted_proxies);
    let proto = if ctx.tls { "https" } else { "http" };
    set_forwarded(upstream, ctx.peer, trusted, proto, &ctx.authority);
    if let Some(route) = &ctx.route
        && !route.pass_cookie
    {
        strip_cookie(upstream, &config.session.cookie_name);
    }
    if let (Some(route), Some(p)) = (&ctx.route, &ctx.principal) {
        set_identity(upstream, &config.identity_headers, route, p, assertion);
    }
    if let Some(target) = &ctx.target {
        // The upstream sees the same path that the policy judged.
        let uri = target.path_and_query().parse::<http::Uri>().map_err(|_| {
            pingora::Error::explain(
                pingora::ErrorType::InternalError,
                "normalized path is not a URI",
            )
        })?;
        upstream.set_uri(uri);
    }
    Ok(())
}

/// Sets a header if the value can be sent; a value with CR, LF or other
/// bytes not allowed in a header is left out and logged.
pub fn set_header(req: &mut RequestHeader, name: &str, value: &str) -> bool {
    match http::HeaderValue::from_str(value) {
        Ok(v) if !value.contains(['\r', '\n']) => {
            let _ = req.insert_header(name.to_string(), v);
            true
        }
        _ => {
            tracing::warn!(header = name, "header value not allowed in HTTP; left out");
            false
        }
    }
}

/// Sets the identity headers for `principal` on `route` (after
/// [`strip_identity_headers`]): user id, subject, IdP, email, name, the
/// route's organization and the user's roles in it (sorted, comma
/// separated), the assertion, and the route's `claim_headers`. A value that
/// cannot travel in a header is left out and logged.
pub fn set_identity(
    req: &mut RequestHeader,
    names: &IdentityHeaders,
    route: &Route,
    principal: &Principal,
    assertion: Option<&http::HeaderValue>,
) {
    for (name, value) in identity_headers(names, route, principal, assertion) {
        let _ = req.insert_header(name, value);
    }
}

/// The identity headers for `principal` on `route`, as name and value;
/// what [`set_identity`] sets upstream and forward-auth answers with.
pub fn identity_headers(
    names: &IdentityHeaders,
    route: &Route,
    principal: &Principal,
    assertion: Option<&http::HeaderValue>,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::with_capacity(8 + route.claim_headers.len());
    let mut push = |name: &http::HeaderName, value: &str| match http::HeaderValue::from_str(value) {
        Ok(v) => out.push((name.clone(), v)),
        Err(_) => tracing::warn!(
            header = name.as_str(),
            "header value not allowed in HTTP; left out"
        ),
    };
    push(&names.user_id, &principal.user_id);
    push(&names.subject, &principal.subject);
    push(&names.idp, &principal.idp);
    // Only an address the IdP verified is presented as the user's.
    if let Some(email) = principal.verified_email() {
        push(&names.email, email);
    }
    if let Some(name) = &principal.name {
        push(&names.name, name);
    }
    if let Some(org) = &route.org {
        push(&names.org, org);
        // Stored roles are sorted already.
        push(&names.roles, &principal.roles_in(org).join(","));
    }
    for (name, expr) in &route.claim_headers {
        let Ok(value) = expr.search(principal.claims_data()) else {
            continue;
        };
        let text = if let Some(s) = value.as_string() {
            Some(s.clone())
        } else if let Some(items) = value.as_array() {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_string().cloned().or_else(|| scalar(i)))
                .collect();
            parts.map(|p| p.join(","))
        } else {
            scalar(&value)
        };
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            push(name, &text);
        }
    }
    // Checked once, when it was signed: shared, not copied.
    if let Some(jwt) = assertion {
        out.push((names.assertion.clone(), jwt.clone()));
    }
    out
}

/// Numbers and booleans as text; `None` for null, objects, arrays.
fn scalar(v: &jmespath::Variable) -> Option<String> {
    match v {
        jmespath::Variable::Number(n) => Some(n.to_string()),
        jmespath::Variable::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Removes the gateway's own session cookie from the `Cookie` header(s),
/// reading them as bytes so that no other cookie's bytes can hide it; the
/// other cookies go on as they came.
pub fn strip_cookie(req: &mut RequestHeader, cookie_name: &str) {
    let Some(all) = joined_bytes(req, "cookie") else {
        return;
    };
    req.remove_header("cookie");
    if let Some(kept) = without_cookie(&all, cookie_name) {
        match http::HeaderValue::from_bytes(&kept) {
            Ok(v) => {
                let _ = req.insert_header("cookie", v);
            }
            Err(_) => tracing::warn!("cookie header not allowed in HTTP; left out"),
        }
    }
}

/// A `Cookie` header's bytes without any cookie named `cookie_name`;
/// `None` when nothing is left.
pub fn without_cookie(all: &[u8], cookie_name: &str) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = all
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
        .filter(|c| crate::session::cookie::name_of(c) != cookie_name.as_bytes())
        .collect();
    (!kept.is_empty()).then(|| kept.join(&b"; "[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["x-auth-user-id", "x-remote-user", "x-auth-email"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn identity_header_variants() {
        for (name, expected) in [
            ("X-Auth-Email", true),
            ("x-auth-email", true),
            ("X_Auth_Email", true),
            ("x-AUTH-email", true),
            ("X-Auth-Anything-Else", true),
            ("x_auth_", true),
            ("X-Remote-User", true),
            ("X_Remote_User", true),
            ("X-Authorization", false),
            ("Authorization", false),
            ("X-Forwarded-For", false),
            ("X-Auth", false),
        ] {
            assert_eq!(is_identity_header(name, &names()), expected, "{name}");
        }
    }

    #[test]
    fn strip_removes_every_variant_and_duplicates() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in [
            ("X-Auth-Email", "a@evil"),
            ("X_Auth_Email", "b@evil"),
            ("x-auth-email", "c@evil"),
            ("X-Remote-User", "root"),
            ("Accept", "*/*"),
        ] {
            req.append_header(n.to_string(), v).unwrap();
        }
        strip_identity_headers(&mut req, &names());
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn forwarded_from_untrusted_peer_is_replaced() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-For", "6.6.6.6").unwrap();
        req.append_header("X-Forwarded-Proto", "https").unwrap();
        req.append_header("Forwarded", "for=6.6.6.6").unwrap();
        let peer = Some("127.0.0.1".parse().unwrap());
        set_forwarded(&mut req, peer, false, "http", "app.test");
        assert_eq!(req.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(req.headers["x-forwarded-proto"], "http");
        assert_eq!(req.headers["x-forwarded-host"], "app.test");
        assert!(req.headers.get("forwarded").is_none());
    }

    #[test]
    fn forwarded_from_trusted_peer_is_appended() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-For", "203.0.113.9").unwrap();
        req.append_header("X-Forwarded-For", "10.0.0.1").unwrap();
        let peer = Some("127.0.0.1".parse().unwrap());
        set_forwarded(&mut req, peer, true, "http", "app.test");
        assert_eq!(
            req.headers["x-forwarded-for"],
            "203.0.113.9, 10.0.0.1, 127.0.0.1"
        );
    }

    #[test]
    fn header_values_with_crlf_are_left_out() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert!(!set_header(&mut req, "x-auth-name", "a\r\nX-Evil: 1"));
        assert!(!set_header(&mut req, "x-auth-name", "nul\0"));
        assert!(req.headers.get("x-auth-name").is_none());
        assert!(set_header(&mut req, "x-auth-name", "Zoë")); // UTF-8 is opaque bytes, allowed
    }

    #[test]
    fn session_cookie_is_removed_beside_non_ascii_cookies() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header(
            "Cookie",
            http::HeaderValue::from_bytes(
                "theme=café; _portcullis=secret; _portcullis =x".as_bytes(),
            )
            .unwrap(),
        )
        .unwrap();
        strip_cookie(&mut req, "_portcullis");
        assert_eq!(req.headers["cookie"].as_bytes(), "theme=café".as_bytes());
    }

    #[test]
    fn session_cookie_is_removed_others_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Cookie", "a=1; _portcullis=secret")
            .unwrap();
        req.append_header("Cookie", "b=2").unwrap();
        strip_cookie(&mut req, "_portcullis");
        assert_eq!(req.headers["cookie"], "a=1; b=2");
    }
}
