//! The per-request work the gateway does before choosing an upstream:
//! path normalization, route lookup among many routes, public-path check.

#[path = "../tests/support/yaml.rs"]
mod yaml;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::authz::{self, RouteTable};
use portcullis::config::Config;

fn config_with_routes(n: usize) -> Config {
    let mut yaml = String::from("routes:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: r{i}\n    hosts: [\"app{i}.example.com\", \"*.team{i}.example.com\"]\n    path_prefix: \"/svc{i}\"\n    upstreams: [\"127.0.0.1:{}\"]\n    public_paths: [\"/svc{i}/health\"]\n",
            3000 + i
        ));
    }
    yaml::config(&yaml)
}

fn bench(c: &mut Criterion) {
    let config = config_with_routes(200);
    let table = RouteTable::new(&config.routes);
    c.bench_function("normalize path", |b| {
        b.iter(|| authz::parse_target(std::hint::black_box(b"/svc150/a/./b/../c//d%7Ee?q=1")))
    });
    c.bench_function("route lookup, 200 routes (exact host)", |b| {
        b.iter(|| table.lookup(std::hint::black_box("app150.example.com"), "/svc150/x"))
    });
    c.bench_function("route lookup, 200 routes (wildcard host)", |b| {
        b.iter(|| table.lookup(std::hint::black_box("a.team150.example.com"), "/svc150/x"))
    });
    c.bench_function("full pre-upstream check", |b| {
        b.iter(|| {
            let target = authz::parse_target(b"/svc150/health/live").unwrap();
            let host = authz::normalize_host("App150.example.com:443").unwrap();
            let route = table.lookup(&host, &target.path).unwrap();
            authz::access(route, &target.path)
        })
    });
}

/// Authorization and identity headers for a cached session: the route
/// verdict (cached per session and route), the assertion (reused while
/// valid), stripping client identity headers and setting ours, with two
/// claim headers.
fn authorize_and_headers(c: &mut Criterion) {
    use portcullis::assertion::Signer;
    use portcullis::provision::{Membership, MembershipSource};
    use portcullis::proxy::headers;
    use portcullis::session::Principal;
    use portcullis::store::SessionRecord;

    let yaml = r#"organizations:
  - {id: lab, roles: [{name: Admin}, {name: Member}]}
routes:
  - name: app
    hosts: [app.example.com]
    upstreams: ["127.0.0.1:3000"]
    org: lab
    allow_roles: [Admin]
    allow_if: "contains(groups, 'grafana')"
    claim_headers: {X-Department: department, X-Groups: groups}
"#;
    let config = yaml::config(yaml);
    let route = config.routes[0].clone();
    let principal = Principal::from_record(
        SessionRecord {
            id_hash: "h".into(),
            user_id: "u_0123456789abcdef01234567".into(),
            idp: "authentik".into(),
            subject: "9590c3bf-8b6e-4f5c-a7b2-1f0c2d3e4a5b".into(),
            sid: None,
            id_token: None,
            claims: serde_json::json!({"groups": ["grafana", "admin"], "department": "R&D"}),
            created_at: 0,
            last_seen_at: portcullis::store::now(),
            expires_at: portcullis::store::now() + 3600,
            validated_at: portcullis::store::now(),
            refreshable: false,
            email: Some("user@example.com".into()),
            name: Some("Example User".into()),
            memberships: vec![Membership {
                org: "lab".into(),
                roles: vec!["Admin".into(), "Member".into()],
                source: MembershipSource::Policy,
            }],
        },
        1,
    );
    let signer = Signer::new(&Signer::generate().unwrap()).unwrap();
    let names: Vec<String> = config
        .identity_headers
        .all()
        .iter()
        .map(|h| h.as_str().to_string())
        .collect();
    let mut request = pingora::http::RequestHeader::build("GET", b"/dashboard", None).unwrap();
    for (k, v) in [
        ("host", "app.example.com"),
        ("accept", "text/html"),
        ("x-auth-user-id", "spoofed"),
        ("cookie", "theme=dark"),
    ] {
        request.insert_header(k, v).unwrap();
    }
    c.bench_function("authorize + identity headers, cached session", |b| {
        // The request is copied outside the timing: the gateway works on
        // the one it received.
        b.iter_batched(
            || request.clone(),
            |mut req| {
                let now = portcullis::store::now();
                principal.verdict(1, &route).unwrap();
                let jwt = principal
                    .assertion(
                        &signer,
                        "https://auth.example.com",
                        "app.example.com",
                        Some("lab"),
                        now,
                    )
                    .unwrap();
                headers::strip_identity_headers(&mut req, &names);
                headers::set_identity(
                    &mut req,
                    &config.identity_headers,
                    &route,
                    &principal,
                    Some(&jwt),
                );
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench, authorize_and_headers);
criterion_main!(benches);
