//! Where a login may send the user afterwards (`rd`). Only a path on the
//! same site, or an absolute `http(s)` URL on a host that a route serves;
//! everything else becomes `/`. The open-redirect tricks that other
//! gateways fell for (`//evil`, `/\evil`, `/%09/evil`, `https:evil`,
//! `javascript:`, userinfo, encoded slashes) are tested below.

use super::RouteTable;

/// The safe destination for `rd`: `rd` itself when allowed, else `/`.
pub fn safe_redirect(rd: Option<&str>, routes: &RouteTable) -> String {
    rd.filter(|rd| allowed(rd, routes))
        .map(str::to_string)
        .unwrap_or_else(|| "/".to_string())
}

fn allowed(rd: &str, routes: &RouteTable) -> bool {
    // Longer than any login keeps (the login shortens what it keeps to
    // the route's first page); past this, not even worth reading.
    if rd.is_empty() || rd.len() > 16 * 1024 {
        return false;
    }
    // Browsers drop tabs and newlines inside URLs and treat backslashes
    // as slashes: any of those, raw or encoded, is refused outright.
    let decoded = percent_encoding::percent_decode_str(rd).decode_utf8_lossy();
    for text in [rd, decoded.as_ref()] {
        if text
            .chars()
            .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
        {
            return false;
        }
    }
    if rd.starts_with('/') {
        // A path: never scheme-relative, in either form.
        return !rd.starts_with("//") && !decoded.starts_with("//");
    }
    let Ok(url) = url::Url::parse(rd) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return false;
    }
    // The URL must be written out in full (`https://host/...`), not in a
    // form the parser repairs, such as `https:evil` or `https:/evil`.
    let lower = rd.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return false;
    }
    url.host_str()
        .and_then(super::normalize_host)
        .is_some_and(|h| routes.knows_host(&h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Environment};

    #[test]
    fn only_local_paths_and_routed_hosts() {
        let yaml = r#"server: {listen: "127.0.0.1:1", public_url: "https://auth.example.com"}
session: {secret: "0123456789abcdef0123456789abcdef"}
routes:
  - {name: a, hosts: [app.example.com, "*.apps.example.com"], upstreams: ["127.0.0.1:1"]}
"#;
        let c = Config::from_yaml(yaml, std::path::Path::new("t.yaml"), &Environment::system())
            .unwrap();
        let routes = RouteTable::new(&c.routes);
        let good = [
            "/",
            "/dashboard?x=1#frag",
            "/a/b/../c",
            "https://app.example.com/x",
            "http://APP.example.com:8443/x?y",
            "https://team.apps.example.com/",
        ];
        for rd in good {
            assert_eq!(safe_redirect(Some(rd), &routes), rd, "{rd} should be kept");
        }
        let bad = [
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "/%09/evil.com",
            "/%2F/evil.com",
            "/%2f%2fevil.com",
            "/%5Cevil.com",
            "/\t/evil.com",
            "/%0d%0aSet-Cookie:x=1",
            " /x",
            "https:evil.com",
            "https:/evil.com",
            "https:/\\evil.com",
            "http:\\\\evil.com",
            "javascript:alert(1)",
            "JavaScript:alert(1)//",
            "data:text/html,<script>alert(1)</script>",
            "https://evil.com",
            "https://evil.com/https://app.example.com",
            "https://app.example.com@evil.com/",
            "https://app.example.com.evil.com/",
            "https://evil.com\\@app.example.com/",
            "https://evil.com%2F@app.example.com/",
            "https://user:pw@app.example.com/",
            "ftp://app.example.com/",
            "app.example.com/x",
            "evil.com",
            "",
        ];
        for rd in bad {
            assert_eq!(
                safe_redirect(Some(rd), &routes),
                "/",
                "{rd:?} must be refused"
            );
        }
        assert_eq!(safe_redirect(None, &routes), "/");
    }
}
