//! Request-path normalization. Routing and every policy look at the
//! normalized path only, and the normalized path is what goes upstream, so
//! the gateway and the app never disagree about which path was asked for.

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    #[error("the path contains a backslash or an encoded one (%5C)")]
    Backslash,
    #[error("the path contains NUL or a control character")]
    ControlCharacter,
    #[error("the path has malformed percent-encoding")]
    BadPercentEncoding,
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    #[error(
        "the path has a dot segment with ;parameters (\"..;\"), which servers resolve differently"
    )]
    DotSegmentParameter,
}

/// The parts of a request target that the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Normalized: unreserved characters percent-decoded, other escapes in
    /// upper-case hex, `.`/`..` resolved, repeated `/` collapsed.
    pub path: String,
    /// The query as received, without the `?`.
    pub query: Option<String>,
    /// The path as a Java servlet container serves it: every segment's
    /// `;parameters` removed (`/admin;x/users` is `/admin/users`). Only
    /// when the path has a `;`; the policy judges both views.
    pub servlet_path: Option<String>,
}

impl Target {
    /// Path and query as they go upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a raw request target (origin-form, or absolute-form whose scheme
/// and authority are dropped) into a normalized path and the raw query.
pub fn parse_target(raw: &[u8]) -> Result<Target, PathError> {
    let mut raw = raw;
    for scheme in [&b"http://"[..], &b"https://"[..]] {
        if raw.len() >= scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &raw[scheme.len()..];
            let end = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?' || b == b'#')
                .unwrap_or(rest.len());
            raw = &rest[end..];
            if raw.is_empty() {
                raw = b"/";
            }
        }
    }
    // A fragment is never sent by browsers; if a client sends one, it is
    // not part of the path or the query.
    if let Some(i) = raw.iter().position(|&b| b == b'#') {
        raw = &raw[..i];
    }
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let query = match query {
        Some(q) => {
            if q.iter().any(|&b| b < 0x20 || b == 0x7f) {
                return Err(PathError::ControlCharacter);
            }
            Some(String::from_utf8_lossy(q).into_owned())
        }
        None => None,
    };
    let path = normalize_path(path)?;
    let servlet_path = path.contains(';').then(|| without_parameters(&path));
    Ok(Target {
        path,
        query,
        servlet_path,
    })
}

/// A normalized path with each segment's `;parameters` removed. Dot
/// segments with parameters were refused by [`normalize_path`], so removing
/// them cannot make a new `..` appear.
fn without_parameters(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        out.push('/');
        out.push_str(segment.split(';').next().unwrap_or(""));
    }
    // `/a;x/;y` would leave an empty segment: collapse as the path was.
    while let Some(i) = out.find("//") {
        out.remove(i);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Normalizes an absolute path (no query).
pub fn normalize_path(path: &[u8]) -> Result<String, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // First pass: validate and decode unreserved characters.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (Some(h), Some(l)) = (
                    path.get(i + 1).copied().and_then(hex_value),
                    path.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let v = h * 16 + l;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    v if is_unreserved(v) => decoded.push(v as char),
                    v => decoded.push_str(&format!("%{v:02X}")),
                }
                i += 3;
                continue;
            }
            0x80..=0xff => decoded.push_str(&format!("%{b:02X}")),
            _ => decoded.push(b as char),
        }
        i += 1;
    }
    // Second pass: resolve dot segments and collapse empty ones.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        // Tomcat and Jetty read `..;x` as `..`: never let such a segment
        // mean one thing here and another there.
        if let Some((stem, _)) = segment.split_once(';')
            && (stem == "." || stem == "..")
        {
            return Err(PathError::DotSegmentParameter);
        }
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Whether `path` (normalized) lies under `prefix`, on segment boundaries:
/// `/api` covers `/api` and `/api/x`, not `/apiary`.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    if let Some(stem) = prefix.strip_suffix('/') {
        return path.starts_with(prefix) || path == stem;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// [`under_prefix`] for protected prefixes, as generous as any server
/// behind may be: ASCII letters compare without case (`/ADMIN/users` is
/// `/admin/users` to a case-insensitive server) and `;` ends a segment
/// like `/` (`/admin;jsessionid=1` is `/admin` to a servlet container).
pub fn under_prefix_ignoring_case(path: &str, prefix: &str) -> bool {
    let (p, x) = (path.as_bytes(), prefix.as_bytes());
    if x == b"/" {
        return true;
    }
    let starts = |s: &[u8]| p.len() >= s.len() && p[..s.len()].eq_ignore_ascii_case(s);
    if let Some(stem) = x.strip_suffix(b"/") {
        return starts(x) || p.eq_ignore_ascii_case(stem);
    }
    starts(x) && (p.len() == x.len() || matches!(p[x.len()], b'/' | b';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<&str, PathError>) {
        let got = parse_target(raw.as_bytes()).map(|t| t.path);
        assert_eq!(
            got.as_deref().map_err(|e| *e),
            expected,
            "normalizing {raw:?}"
        );
    }

    #[test]
    fn normalization_table() {
        use PathError::*;
        check("/", Ok("/"));
        check("/a/b", Ok("/a/b"));
        check("/a/b/", Ok("/a/b/"));
        check("//a///b", Ok("/a/b"));
        check("/a/./b", Ok("/a/b"));
        check("/a/../b", Ok("/b"));
        check("/../../etc/passwd", Ok("/etc/passwd"));
        check("/a/..", Ok("/"));
        check("/admin/..", Ok("/"));
        check("/public/../admin", Ok("/admin"));
        check("/public/%2e%2e/admin", Ok("/admin"));
        check("/public/%2E%2E/admin", Ok("/admin"));
        check("/public/.%2e/admin", Ok("/admin"));
        check("/%61dmin", Ok("/admin"));
        check("/a%20b", Ok("/a%20b"));
        check("/a%3fb", Ok("/a%3Fb"));
        check("/x?y=/../z", Ok("/x"));
        check("/x#frag", Ok("/x"));
        check("http://evil.example/a/../b?q", Ok("/b"));
        check("HTTP://h", Ok("/"));
        check("/a%2Fb", Err(EncodedSlash));
        check("/a%2fb", Err(EncodedSlash));
        check("/a%5Cb", Err(Backslash));
        check("/a%5cb", Err(Backslash));
        check("/a\\b", Err(Backslash));
        check("/a%00b", Err(ControlCharacter));
        check("/a\0b", Err(ControlCharacter));
        check("/a%0d%0aX-Auth-Email:%20x", Err(ControlCharacter));
        check("/a\tb", Err(ControlCharacter));
        check("/a%7f", Err(ControlCharacter));
        check("/a%zz", Err(BadPercentEncoding));
        check("/a%4", Err(BadPercentEncoding));
        check("/a%", Err(BadPercentEncoding));
        // Path parameters: a dot segment with them is refused outright.
        check("/api/health/..;/..;/admin", Err(DotSegmentParameter));
        check("/public/..;x/admin", Err(DotSegmentParameter));
        check("/public/.;x/admin", Err(DotSegmentParameter));
        check("/public/%2e%2e;/admin", Err(DotSegmentParameter));
        check("/admin;x/users", Ok("/admin;x/users"));
        check("*", Err(NotAbsolute));
        check("a/b", Err(NotAbsolute));
    }

    #[test]
    fn query_is_kept_raw_but_never_matched() {
        let t = parse_target(b"/x/../y?a=1&b=%2F").unwrap();
        assert_eq!(t.path, "/y");
        assert_eq!(t.query.as_deref(), Some("a=1&b=%2F"));
        assert_eq!(t.path_and_query(), "/y?a=1&b=%2F");
        assert_eq!(parse_target(b"/x?a\r\nb"), Err(PathError::ControlCharacter));
    }

    #[test]
    fn servlet_view_drops_parameters_table() {
        for (raw, expected) in [
            ("/admin;x/users", Some("/admin/users")),
            ("/admin;jsessionid=1", Some("/admin")),
            ("/a;x/;y/b", Some("/a/b")),
            ("/;x", Some("/")),
            ("/a/b", None),
            ("/a?x=;y", None),
            ("/a%3Bx/b", None),
        ] {
            let t = parse_target(raw.as_bytes()).unwrap();
            assert_eq!(t.servlet_path.as_deref(), expected, "{raw}");
        }
    }

    #[test]
    fn prefix_table() {
        for (path, prefix, expected) in [
            ("/anything", "/", true),
            ("/api", "/api", true),
            ("/api/", "/api", true),
            ("/api/x", "/api", true),
            ("/apiary", "/api", false),
            ("/api/x", "/api/", true),
            ("/api", "/api/", true),
            ("/apix", "/api/", false),
            ("/api/health", "/api/health", true),
            ("/api/healthz", "/api/health", false),
            ("/", "/api", false),
        ] {
            assert_eq!(
                under_prefix(path, prefix),
                expected,
                "{path} under {prefix}"
            );
            assert_eq!(
                under_prefix_ignoring_case(path, prefix),
                expected,
                "{path} under {prefix}, ignoring case"
            );
            assert_eq!(
                under_prefix_ignoring_case(&path.to_ascii_uppercase(), prefix),
                expected,
                "{} under {prefix}, ignoring case",
                path.to_ascii_uppercase()
            );
        }
    }
}
