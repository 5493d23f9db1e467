//! Configuration validation, one case per kind of error, each asserting
//! that the message names the right place in the file.

use std::net::SocketAddr;
use std::path::Path;

use portcullis::config::{Config, ConfigError, Environment, PolicySource};

const BASE: &str = r#"
server:
  listen: "127.0.0.1:8080"
  public_url: "https://auth.example.com"
  trusted_proxies: ["10.0.0.0/8", "192.0.2.1"]
admin:
  listen: "127.0.0.1:9090"
  tokens: ["${ADMIN_TOKEN}", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
session:
  secret: "${SESSION_SECRET}"
  lifetime: 12h
  idle_timeout: 1h
identity_providers:
  - id: authentik
    issuer: "https://sso.example.com/application/o/portcullis/"
    client_id: portcullis
    client_secret: "${AUTHENTIK_SECRET}"
    provisioning:
      default:
        org: "contains(groups, '{{orgId}}')"
        roles: "contains(groups, 'admin') && 'Admin' || 'Member'"
      organizations:
        home-lab:
          org: "contains(groups, 'home-lab')"
  - id: keycloak
    issuer: "https://kc.example.com/realms/x"
    client_id: portcullis
organizations:
  - id: home-lab
    roles:
      - name: Admin
      - name: Member
    jit:
      email_domains: [Example.COM]
      sso_connectors: [authentik]
      default_roles: [Member]
  - id: lab-two
    roles:
      - name: Admin
      - name: Member
routes:
  - name: grafana
    hosts: ["grafana.example.com", "*.apps.example.com"]
    upstreams: ["localhost:3000", "127.0.0.1:3001"]
    org: home-lab
    allow_roles: [Admin]
    allow_if: "contains(groups, 'grafana')"
    claim_headers:
      X-Department: department
"#;

fn env_var(name: &str) -> Option<String> {
    match name {
        "ADMIN_TOKEN" => Some("an-admin-token-long-enough".into()),
        "SESSION_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
        "AUTHENTIK_SECRET" => Some("s3cret".into()),
        _ => None,
    }
}

/// Knows `localhost` and literal addresses only: tests never ask DNS.
fn resolve(addr: &str) -> std::io::Result<Vec<SocketAddr>> {
    match addr.rsplit_once(':') {
        Some(("localhost", port)) => Ok(vec![SocketAddr::from((
            [127, 0, 0, 1],
            port.parse().unwrap_or(0),
        ))]),
        _ => Err(std::io::Error::other("Name or service not known")),
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(
        text,
        Path::new("portcullis.yaml"),
        &Environment {
            var: &env_var,
            resolve: &resolve,
        },
    )
}

fn edit(from: &str, to: &str) -> String {
    assert!(
        BASE.contains(from),
        "test case edits text that is not in BASE: {from}"
    );
    BASE.replacen(from, to, 1)
}

/// `text` must be rejected with a problem at `path` whose message contains `fragment`.
fn check(text: &str, path: &str, fragment: &str) {
    match load(text) {
        Ok(_) => panic!("accepted, expected {path}: {fragment}"),
        Err(e) => {
            let problems = e.problems();
            assert!(
                problems
                    .iter()
                    .any(|p| p.path == path && p.message.contains(fragment)),
                "expected {path}: …{fragment}…, got:\n{e}"
            );
            assert!(e.to_string().starts_with("portcullis.yaml:"), "{e}");
        }
    }
}

#[test]
fn base_is_valid_and_compiled() {
    let c = load(BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.identity_providers.len(), 2);
    assert_eq!(c.organizations[0].jit.email_domains, vec!["example.com"]);
    assert_eq!(
        c.routes[0].upstreams[0].addr,
        "127.0.0.1:3000".parse().unwrap()
    );
    // One policy per org: home-lab's own org expression, lab-two's fallback
    // with {{orgId}} substituted; roles fall back field by field.
    let authentik = &c.identity_providers[0];
    assert_eq!(authentik.policies.len(), 2);
    let home = &authentik.policies[0];
    assert_eq!(home.source, PolicySource::Organization);
    let (org_expr, from) = home.org_expr.as_ref().unwrap();
    assert_eq!(
        (org_expr.text.as_str(), *from),
        ("contains(groups, 'home-lab')", PolicySource::Organization)
    );
    assert_eq!(home.roles_expr.as_ref().unwrap().1, PolicySource::Fallback);
    let two = &authentik.policies[1];
    assert_eq!(two.source, PolicySource::Fallback);
    assert_eq!(
        two.org_expr.as_ref().unwrap().0.text,
        "contains(groups, 'lab-two')"
    );
    // No provisioning block: no org evaluated.
    assert!(c.identity_providers[1].policies.is_empty());
}

#[test]
fn each_error_names_its_place() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            edit(
                "    org: home-lab\n    allow_roles",
                "    path_prefix: \"/admin;x\"\n    org: home-lab\n    allow_roles",
            ),
            "routes[0].path_prefix",
            "must not contain ;",
        ),
        (
            edit(
                "    org: home-lab\n    allow_roles",
                "    path_prefix: \"/a/../admin\"\n    org: home-lab\n    allow_roles",
            ),
            "routes[0].path_prefix",
            "is not a normalized path; write \"/admin\"",
        ),
        (
            edit(
                "    org: home-lab\n    allow_roles",
                "    public_paths: [\"/api//health\"]\n    org: home-lab\n    allow_roles",
            ),
            "routes[0].public_paths[0]",
            "is not a normalized path",
        ),
        (
            edit("${AUTHENTIK_SECRET}", "${NOT_SET_ANYWHERE}"),
            "identity_providers[0].client_secret",
            "environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            edit(
                "  listen: \"127.0.0.1:8080\"",
                "  lissten: \"127.0.0.1:8080\"",
            ),
            "server.lissten",
            "unknown field `lissten`",
        ),
        (
            edit(
                "    client_id: portcullis\n    client_secret",
                "    client_id: portcullis\n    colour: blue\n    client_secret",
            ),
            "identity_providers[0].colour",
            "unknown field `colour`",
        ),
        (
            edit("  - id: lab-two", "  - id: home-lab"),
            "organizations[1].id",
            "duplicate organization id",
        ),
        (
            edit("  - id: keycloak", "  - id: authentik"),
            "identity_providers[1].id",
            "duplicate identity provider id",
        ),
        (
            edit("  - id: lab-two", "  - id: Lab Two"),
            "organizations[1].id",
            "must match [a-z0-9][a-z0-9._-]{0,63}",
        ),
        (
            edit("  - id: keycloak", "  - id: -keycloak"),
            "identity_providers[1].id",
            "must match",
        ),
        (
            edit(
                "    org: home-lab\n    allow_roles",
                "    org: nowhere\n    allow_roles",
            ),
            "routes[0].org",
            "organization \"nowhere\" is not declared",
        ),
        (
            edit(
                "    allow_roles: [Admin]",
                "    allow_roles: [Admin, Owner]",
            ),
            "routes[0].allow_roles[1]",
            "role \"Owner\" is not declared in organization \"home-lab\"",
        ),
        (
            edit("    org: home-lab\n    allow_roles", "    allow_roles"),
            "routes[0].allow_roles",
            "needs `org`",
        ),
        (
            edit(
                "        home-lab:\n          org:",
                "        no-such-org:\n          org:",
            ),
            "identity_providers[0].provisioning.organizations.no-such-org",
            "is not declared under organizations",
        ),
        (
            edit(
                "      sso_connectors: [authentik]",
                "      sso_connectors: [authentik, okta]",
            ),
            "organizations[0].jit.sso_connectors[1]",
            "\"okta\" is not the id of an identity provider",
        ),
        (
            edit(
                "      default_roles: [Member]",
                "      default_roles: [Guest]",
            ),
            "organizations[0].jit.default_roles[0]",
            "role \"Guest\" is not declared",
        ),
        (
            edit(
                "      email_domains: [Example.COM]",
                "      email_domains: [\"user@example.com\"]",
            ),
            "organizations[0].jit.email_domains[0]",
            "is not a domain name",
        ),
        (
            edit("  lifetime: 12h", "  lifetime: twelve hours"),
            "session.lifetime",
            "invalid duration",
        ),
        (
            edit("  idle_timeout: 1h", "  idle_timeout: 0s"),
            "session.idle_timeout",
            "longer than zero",
        ),
        (
            edit(
                "  trusted_proxies: [\"10.0.0.0/8\", \"192.0.2.1\"]",
                "  trusted_proxies: [\"10.0.0.0/8\", \"not-an-ip\"]",
            ),
            "server.trusted_proxies[1]",
            "is not an IP address or CIDR",
        ),
        (
            edit(
                "  listen: \"127.0.0.1:8080\"\n",
                "  listen: \"127.0.0.1:8080\"\n  tls:\n    listen: \"127.0.0.1:8443\"\n    cert: /nonexistent/tls.crt\n    key: /nonexistent/tls.key\n",
            ),
            "server.tls.cert",
            "/nonexistent/tls.crt: cannot read",
        ),
        (
            edit("\"localhost:3000\"", "\"no-such-host.invalid:3000\""),
            "routes[0].upstreams[0]",
            "is not a host:port that resolves",
        ),
        (
            edit("\"localhost:3000\"", "\"localhost\""),
            "routes[0].upstreams[0]",
            "must be host:port",
        ),
        (
            edit(
                "        roles: \"contains(groups, 'admin') && 'Admin' || 'Member'\"",
                "        roles: \"contains(groups, 'admin' && \"",
            ),
            "identity_providers[0].provisioning.default.roles",
            "invalid JMESPath expression",
        ),
        (
            edit(
                "    allow_if: \"contains(groups, 'grafana')\"",
                "    allow_if: \"[[\"",
            ),
            "routes[0].allow_if",
            "invalid JMESPath expression",
        ),
        (
            edit(
                "      X-Department: department",
                "      \"Bad Header\": department",
            ),
            "routes[0].claim_headers.Bad Header",
            "not a valid HTTP header name",
        ),
        (
            edit("  secret: \"${SESSION_SECRET}\"", "  secret: \"short\""),
            "session.secret",
            "at least 32 bytes",
        ),
        (
            edit(
                "    org: home-lab\n    allow_roles",
                "    step_up: {}\n    org: home-lab\n    allow_roles",
            ),
            "routes[0].step_up",
            "needs acr_values, max_age or both",
        ),
        (
            edit(
                "    org: home-lab\n    allow_roles",
                "    step_up: {acr_values: [\"a b\"], max_age: soon}\n    org: home-lab\n    allow_roles",
            ),
            "routes[0].step_up.acr_values[0]",
            "is not an acr value",
        ),
        (
            edit(
                "    org: home-lab\n    allow_roles",
                "    step_up: {max_age: soon}\n    org: home-lab\n    allow_roles",
            ),
            "routes[0].step_up.max_age",
            "invalid duration",
        ),
        (
            edit(
                "  idle_timeout: 1h",
                "  idle_timeout: 1h\n  refresh_interval: often",
            ),
            "session.refresh_interval",
            "invalid duration",
        ),
        (
            edit(
                "  public_url: \"https://auth.example.com\"",
                "  public_url: \"ftp://auth.example.com\"",
            ),
            "server.public_url",
            "absolute http:// or https:// URL",
        ),
        (
            edit(
                "    hosts: [\"grafana.example.com\", \"*.apps.example.com\"]",
                "    hosts: [\"grafana.example.com\", \"apps.*.example.com\"]",
            ),
            "routes[0].hosts[1]",
            "is not a host name or *.domain pattern",
        ),
        (
            edit(
                "    upstreams: [\"localhost:3000\", \"127.0.0.1:3001\"]",
                "    upstreams: []",
            ),
            "routes[0].upstreams",
            "needs at least one upstream",
        ),
        (
            format!("{BASE}identity_headers:\n  email: X-Auth-User-Id\n"),
            "identity_headers.email",
            "also the header of identity_headers.user_id",
        ),
        (
            edit(
                "    claim_headers:",
                "    public: \"yes please\"\n    claim_headers:",
            ),
            "routes[0].public",
            "invalid type",
        ),
        (
            edit(
                "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "sha256:xyz",
            ),
            "admin.tokens[1]",
            "64 hex digits",
        ),
        (
            format!("{BASE}log:\n  format: xml\n"),
            "log.format",
            "unknown variant `xml`",
        ),
        (
            format!("{BASE}store:\n  url: \"mysql://db\"\n"),
            "store.url",
            "sqlite:// or postgres://",
        ),
        (
            format!("{BASE}scim:\n  - idp: okta\n    tokens: [t0123456789abcdef]\n"),
            "scim[0].idp",
            "no identity provider \"okta\"",
        ),
        (
            format!(
                "{BASE}scim:\n  - idp: keycloak\n    tokens: [a0123456789abcdef]\n  - idp: keycloak\n    tokens: [b0123456789abcdef]\n"
            ),
            "scim[1].idp",
            "already has a SCIM feed",
        ),
        (
            format!("{BASE}scim:\n  - idp: keycloak\n    tokens: []\n"),
            "scim[0].tokens",
            "at least one token",
        ),
        (
            format!("{BASE}scim:\n  - idp: keycloak\n    tokens: [\"sha256:12\"]\n"),
            "scim[0].tokens[0]",
            "64 hex digits",
        ),
        (
            format!(
                "{BASE}scim:\n  - idp: keycloak\n    tokens: [a0123456789abcdef]\n    match: \"oid ==\"\n"
            ),
            "scim[0].match",
            "",
        ),
        (
            format!(
                "{BASE}scim:\n  - idp: keycloak\n    tokens: [a0123456789abcdef]\n    secret: x\n"
            ),
            "scim[0].secret",
            "unknown field `secret`",
        ),
    ];
    for (text, path, fragment) in &cases {
        check(text, path, fragment);
    }
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let text = edit("  lifetime: 12h", "  lifetime: forever")
        .replacen(
            "    org: home-lab\n    allow_roles",
            "    org: nowhere\n    allow_roles",
            1,
        )
        .replacen(
            "      default_roles: [Member]",
            "      default_roles: [Guest]",
            1,
        );
    let problems = load(&text).unwrap_err().problems();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "session.lifetime",
        "routes[0].org",
        "organizations[0].jit.default_roles[0]",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let text =
        "server:\n  listen: \"127.0.0.1:8080\"\n  public_url: [unclosed\nsession:\n  secret: x\n";
    match load(text) {
        Err(ConfigError::Syntax { line, column, .. }) => {
            assert_eq!(line, 4, "line");
            assert!(column >= 1);
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn dollar_dollar_escapes_and_warnings() {
    let text = BASE.replacen(
        "client_id: portcullis\n    client_secret",
        "client_id: \"$${literal}\"\n    client_secret",
        1,
    );
    let c = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.identity_providers[0].client_id, "${literal}");
    // keycloak has no policy and no JIT connector, but home-lab has an
    // email domain, so JIT can still place its users: no warning there.
    assert!(
        !c.warnings
            .iter()
            .any(|w| w.path.starts_with("identity_providers[1]")),
        "{:?}",
        c.warnings
    );
    let plain_http = edit(
        "https://kc.example.com/realms/x",
        "http://kc.example.com/realms/x",
    );
    let c = load(&plain_http).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.path == "identity_providers[1].issuer")
    );
}

#[test]
fn check_warns_about_identifiers_other_than_sub() {
    let c = load(&edit(
        "    client_secret: \"${AUTHENTIK_SECRET}\"",
        "    client_secret: \"${AUTHENTIK_SECRET}\"\n    identifier: email",
    ))
    .unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.path == "identity_providers[0].identifier"
                && w.message.contains("not the IdP's sub")),
        "{:?}",
        c.warnings
    );
    let c = load(BASE).unwrap();
    assert!(!c.warnings.iter().any(|w| w.path.ends_with(".identifier")));
}

#[test]
fn check_warns_about_role_names_the_org_does_not_declare() {
    let text = edit(
        "        roles: \"contains(groups, 'admin') && 'Admin' || 'Member'\"",
        "        roles: \"contains(groups, 'admin') && 'Admn' || ['Member', 'Guest']\"",
    );
    let c = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let at = |role: &str| {
        c.warnings.iter().any(|w| {
            w.path == "identity_providers[0].provisioning.default.roles"
                && w.message
                    .contains(&format!("role \"{role}\" is not declared"))
        })
    };
    assert!(at("Admn"), "{:?}", c.warnings);
    assert!(at("Guest"), "{:?}", c.warnings);
    // 'admin' is a group name compared inside contains(), not a role.
    assert!(!at("admin"), "{:?}", c.warnings);
    assert!(!at("Member"), "{:?}", c.warnings);
}

/// The session cookie is set on public_url's host (and cookie_domain):
/// a protected route elsewhere would never see it, and check says so.
#[test]
fn routes_the_session_cookie_cannot_reach_are_warned_about() {
    let at = |c: &Config, path: &str| c.warnings.iter().any(|w| w.path == path);
    // auth.example.com without cookie_domain: neither route host is reached.
    let c = load(BASE).unwrap();
    assert!(at(&c, "routes[0].hosts[0]"), "{:?}", c.warnings);
    assert!(at(&c, "routes[0].hosts[1]"), "{:?}", c.warnings);
    // With cookie_domain example.com both are.
    let shared = edit(
        "  lifetime: 12h\n",
        "  lifetime: 12h\n  cookie_domain: \".example.com\"\n",
    );
    let c = load(&shared).unwrap();
    assert!(
        !at(&c, "routes[0].hosts[0]") && !at(&c, "routes[0].hosts[1]"),
        "{:?}",
        c.warnings
    );
    // The public_url host itself needs nothing.
    let same = edit(
        "\"grafana.example.com\", \"*.apps.example.com\"",
        "\"auth.example.com\"",
    );
    let c = load(&same).unwrap();
    assert!(!at(&c, "routes[0].hosts[0]"), "{:?}", c.warnings);
}
