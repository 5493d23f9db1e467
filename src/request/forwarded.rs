//! The original request as a proxy in front describes it to forward-auth
//! (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`). Read as bytes, each
//! header exactly once: a missing, repeated or unreadable one is an error
//! (400), never a default that would judge some other path. Pure.

use http::HeaderMap;

use super::host::normalize_host;
use super::path::{Target, parse_target};

/// The request forward-auth is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedRequest {
    pub method: http::Method,
    /// `http` or `https`; `https` when the proxy does not say.
    pub scheme: &'static str,
    /// Normalized, for routing.
    pub host: String,
    /// As the proxy wrote it (validated), for URLs back to it.
    pub authority: String,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is sent more than once")]
    Repeated(&'static str),
    #[error("{0} cannot be read: {1}")]
    Unreadable(&'static str, String),
}

/// The one value of header `name`.
fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a [u8], ForwardedError> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (None, _) => Err(ForwardedError::Missing(name)),
        (Some(_), Some(_)) => Err(ForwardedError::Repeated(name)),
        (Some(v), None) => Ok(v.as_bytes()),
    }
}

pub fn read(headers: &HeaderMap) -> Result<ForwardedRequest, ForwardedError> {
    const METHOD: &str = "x-forwarded-method";
    const HOST: &str = "x-forwarded-host";
    const URI: &str = "x-forwarded-uri";
    const PROTO: &str = "x-forwarded-proto";
    let unreadable = |name, why: &str| ForwardedError::Unreadable(name, why.to_string());

    let method = http::Method::from_bytes(single(headers, METHOD)?)
        .map_err(|_| unreadable(METHOD, "not an HTTP method"))?;
    let raw_host = std::str::from_utf8(single(headers, HOST)?)
        .ok()
        .filter(|h| h.is_ascii())
        .ok_or_else(|| unreadable(HOST, "not ASCII"))?;
    let host = normalize_host(raw_host).ok_or_else(|| unreadable(HOST, "not a host name"))?;
    let uri = single(headers, URI)?;
    if uri.first() != Some(&b'/') {
        return Err(unreadable(URI, "not an absolute path"));
    }
    let target = parse_target(uri).map_err(|e| unreadable(URI, &e.to_string()))?;
    let scheme = match single(headers, PROTO) {
        Err(ForwardedError::Missing(_)) => "https",
        Err(e) => return Err(e),
        Ok(p) if p.eq_ignore_ascii_case(b"https") => "https",
        Ok(p) if p.eq_ignore_ascii_case(b"http") => "http",
        Ok(_) => return Err(unreadable(PROTO, "neither http nor https")),
    };
    Ok(ForwardedRequest {
        method,
        scheme,
        host,
        authority: raw_host.trim().to_string(),
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    const M: (&str, &[u8]) = ("x-forwarded-method", b"GET");
    const H: (&str, &[u8]) = ("x-forwarded-host", b"App.Example.com");

    /// Guards against oauth2-proxy CVE-2026-40575 (a spoofed or unreadable
    /// X-Forwarded-Uri judged as some other path).
    #[test]
    fn forwarded_request_table() {
        use ForwardedError::*;
        type Case<'a> = (Vec<(&'a str, &'a [u8])>, Result<&'a str, ForwardedError>);
        let cases: Vec<Case> = vec![
            (
                vec![M, H, ("x-forwarded-uri", b"/admin/users?q=1")],
                Ok("/admin/users"),
            ),
            // nginx forwards $request_uri's raw UTF-8 bytes.
            (
                vec![M, H, ("x-forwarded-uri", "/admin/users?q=café".as_bytes())],
                Ok("/admin/users"),
            ),
            (
                vec![M, H, ("x-forwarded-uri", "/café/x".as_bytes())],
                Ok("/caf%C3%A9/x"),
            ),
            (
                vec![M, H, ("x-forwarded-uri", b"/public/../admin")],
                Ok("/admin"),
            ),
            (vec![M, H], Err(Missing("x-forwarded-uri"))),
            (
                vec![M, H, ("x-forwarded-uri", b"/a"), ("x-forwarded-uri", b"/b")],
                Err(Repeated("x-forwarded-uri")),
            ),
            (
                vec![H, ("x-forwarded-uri", b"/a")],
                Err(Missing("x-forwarded-method")),
            ),
            (
                vec![M, ("x-forwarded-uri", b"/a")],
                Err(Missing("x-forwarded-host")),
            ),
            (
                vec![M, H, H, ("x-forwarded-uri", b"/a")],
                Err(Repeated("x-forwarded-host")),
            ),
            (
                vec![
                    M,
                    ("x-forwarded-host", "exämple.com".as_bytes()),
                    ("x-forwarded-uri", b"/a"),
                ],
                Err(Unreadable("x-forwarded-host", "not ASCII".into())),
            ),
            (
                vec![M, H, ("x-forwarded-uri", b"admin")],
                Err(Unreadable("x-forwarded-uri", "not an absolute path".into())),
            ),
            (
                vec![M, H, ("x-forwarded-uri", b"http://evil/admin")],
                Err(Unreadable("x-forwarded-uri", "not an absolute path".into())),
            ),
            (
                vec![M, H, ("x-forwarded-uri", b"")],
                Err(Unreadable("x-forwarded-uri", "not an absolute path".into())),
            ),
            (
                vec![M, H, ("x-forwarded-uri", b"/a%2Fb")],
                Err(Unreadable(
                    "x-forwarded-uri",
                    "the path contains an encoded slash (%2F)".into(),
                )),
            ),
            (
                vec![
                    M,
                    H,
                    ("x-forwarded-uri", b"/a"),
                    ("x-forwarded-proto", b"gopher"),
                ],
                Err(Unreadable(
                    "x-forwarded-proto",
                    "neither http nor https".into(),
                )),
            ),
            (
                vec![
                    ("x-forwarded-method", b"G E T"),
                    H,
                    ("x-forwarded-uri", b"/a"),
                ],
                Err(Unreadable(
                    "x-forwarded-method",
                    "not an HTTP method".into(),
                )),
            ),
        ];
        for (pairs, expected) in cases {
            let got = read(&headers(&pairs)).map(|f| f.target.path);
            assert_eq!(got.as_deref().map_err(Clone::clone), expected, "{pairs:?}");
        }
        let ok = read(&headers(&[
            M,
            H,
            ("x-forwarded-uri", b"/a"),
            ("x-forwarded-proto", b"HTTP"),
        ]))
        .unwrap();
        assert_eq!(
            (ok.scheme, ok.host.as_str(), ok.authority.as_str()),
            ("http", "app.example.com", "App.Example.com")
        );
    }
}
