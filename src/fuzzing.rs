//! Properties the fuzz targets (`fuzz/`, `./dev fuzz`) check on hostile
//! input, kept in the library so that the suite replays every saved corpus
//! on the stable toolchain (`tests/fuzz_corpora.rs`) with the same checks.
//! Each function takes raw bytes, must never panic on its own, and panics
//! only when an invariant breaks.

use std::sync::{Arc, OnceLock};

use crate::authz::{self, Access, RouteTable};
use crate::config::{Config, Environment};

/// A property check over one input.
pub type Check = fn(&[u8]);

/// The names of the targets, as the corpus folders are named.
pub const TARGETS: &[(&str, Check)] = &[
    ("path", path),
    ("decision", decision),
    ("redirect", redirect),
    ("cookie_header", cookie_header),
    ("login_state", login_state),
    ("forwarded", forwarded),
    ("config", config),
];

const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";

/// A gateway config with public routes, public paths and protected
/// prefixes of several cases, for the decision targets.
fn world() -> &'static (Arc<Config>, RouteTable) {
    static WORLD: OnceLock<(Arc<Config>, RouteTable)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let yaml = format!(
            r#"
server: {{listen: "127.0.0.1:1", public_url: "https://auth.example.com"}}
session: {{secret: "{SECRET}"}}
organizations:
  - id: corp
    roles: [{{name: Admin}}, {{name: Member}}]
routes:
  - name: app
    hosts: ["app.example.com"]
    upstreams: ["127.0.0.1:2"]
    org: corp
    public_paths: ["/api/health", "/static/"]
  - name: admin
    hosts: ["app.example.com"]
    path_prefix: "/admin"
    upstreams: ["127.0.0.1:3"]
    org: corp
    allow_roles: [Admin]
  - name: docs
    hosts: ["*.example.com"]
    path_prefix: "/docs"
    upstreams: ["127.0.0.1:4"]
    public: true
"#
        );
        let config = Config::from_yaml(&yaml, std::path::Path::new("fuzz.yaml"), &no_outside())
            .unwrap_or_else(|e| panic!("the fuzz world's config is valid: {e}"));
        let table = RouteTable::new(&config.routes);
        (Arc::new(config), table)
    })
}

/// No environment variables and no DNS: only literal addresses resolve.
fn no_outside() -> Environment<'static> {
    Environment {
        var: &|_| None,
        resolve: &|addr| {
            addr.parse::<std::net::SocketAddr>()
                .map(|a| vec![a])
                .map_err(|_| std::io::Error::other("no DNS while fuzzing"))
        },
    }
}

/// A normalized path is its own normal form, absolute, without dot or
/// empty segments; the servlet view has no `;`.
pub fn path(data: &[u8]) {
    let Ok(t) = authz::parse_target(data) else {
        return;
    };
    assert!(t.path.starts_with('/'), "{:?}", t.path);
    let again = authz::parse_target(t.path.as_bytes()).expect("a normalized path parses");
    assert_eq!(again.path, t.path, "normalizing twice changed it");
    for segment in t.path.split('/').skip(1) {
        assert!(
            segment != "." && segment != "..",
            "dot segment in {:?}",
            t.path
        );
    }
    assert!(!t.path.contains("//"), "empty segment in {:?}", t.path);
    if let Some(s) = &t.servlet_path {
        assert!(!s.contains(';') && s.starts_with('/'), "{s:?}");
    }
}

/// A request judged public lies, in every view of its path, under a
/// public prefix of a public route or under one of its route's
/// `public_paths`, compared case-sensitively.
pub fn decision(data: &[u8]) {
    let (_, table) = world();
    let (host, target) = match data.iter().position(|&b| b == b' ') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"app.example.com"[..], data),
    };
    let Some(host) = std::str::from_utf8(host)
        .ok()
        .and_then(authz::normalize_host)
    else {
        return;
    };
    let Ok(target) = authz::parse_target(target) else {
        return;
    };
    let Ok(Some(judged)) = authz::judge(table, &host, &target) else {
        return;
    };
    if judged.access == Access::Public {
        let route = &judged.route;
        for view in std::iter::once(&target.path).chain(target.servlet_path.as_ref()) {
            let public = (route.public && authz::under_prefix(view, &route.path_prefix))
                || route
                    .public_paths
                    .iter()
                    .any(|p| authz::under_prefix(view, p));
            assert!(public, "{view:?} judged public on route {}", route.name);
        }
    }
    if host == "app.example.com"
        && crate::request::path::under_prefix_ignoring_case(&target.path, "/admin")
    {
        assert_eq!(
            judged.route.name, "admin",
            "{:?} escaped the admin route",
            target.path
        );
    }
}

/// `rd` is `/`, a same-site path, or an absolute http(s) URL on a routed
/// host.
pub fn redirect(data: &[u8]) {
    let (_, table) = world();
    let Ok(rd) = std::str::from_utf8(data) else {
        return;
    };
    let out = authz::safe_redirect(Some(rd), table);
    if out.starts_with('/') {
        assert!(!out.starts_with("//") && !out.contains('\\'), "{out:?}");
        return;
    }
    let url = url::Url::parse(&out).expect("an allowed absolute rd parses");
    assert!(matches!(url.scheme(), "http" | "https"), "{out:?}");
    let host = url
        .host_str()
        .and_then(authz::normalize_host)
        .expect("a host");
    assert!(table.knows_host(&host), "{out:?} leaves the routed hosts");
}

/// The session cookie is found however the other cookies look, and what
/// goes upstream never carries it.
pub fn cookie_header(data: &[u8]) {
    let name = "_portcullis";
    let _ = crate::session::cookie::find(Some(data), name);
    let id = crate::session::cookie::SessionId([7; 32]).encode();
    let mut header = data.to_vec();
    header.extend_from_slice(format!("; {name}={id}").as_bytes());
    assert!(
        matches!(
            crate::session::cookie::find(Some(&header), name),
            crate::session::cookie::Found::Id(_)
        ) || crate::session::cookie::values(&header, name)
            .any(|v| crate::session::cookie::SessionId::decode(v).is_some()),
        "the session cookie is hidden by {data:?}"
    );
    if let Some(kept) = crate::proxy::headers::without_cookie(&header, name) {
        assert!(
            crate::session::cookie::values(&kept, name).next().is_none(),
            "the session cookie went upstream"
        );
    }
}

/// A login-state cookie that the gateway did not seal never opens.
pub fn login_state(data: &[u8]) {
    let (config, _) = world();
    let name = "_portcullis_login_0011223344556677";
    let mut header = format!("{name}=").into_bytes();
    header.extend_from_slice(data);
    if let Some(sealed) = crate::session::login_state::read(&header, name) {
        let opened =
            crate::session::login_state::open(&config.session.secret, name, &sealed, 1_000);
        assert!(opened.is_err(), "forged login state opened");
    }
    let _ = crate::session::login_state::clear_cookies(config, name, data);
}

/// Forward-auth's reader: lines `name: value` become headers; whatever
/// it accepts is an absolute normalized path on a host name.
pub fn forwarded(data: &[u8]) {
    let mut headers = http::HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(line[..i].trim_ascii()),
            http::HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(n, v);
    }
    if let Ok(f) = crate::request::forwarded::read(&headers) {
        assert!(f.target.path.starts_with('/'));
        assert_eq!(
            authz::normalize_host(&f.host).as_deref(),
            Some(f.host.as_str())
        );
        path(f.target.path.as_bytes());
    }
}

/// The loader never panics, whatever the file says.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The loader reads TLS files the config names: keep it off devices.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    let _ = Config::from_yaml(text, std::path::Path::new("fuzz.yaml"), &no_outside());
}
