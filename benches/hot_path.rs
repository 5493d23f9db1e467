//! The per-request work the gateway does before choosing an upstream:
//! path normalization, route lookup among many routes, public-path check.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::authz::{self, RouteTable};
use portcullis::config::{Config, Environment};

fn config_with_routes(n: usize) -> Config {
    let mut yaml = String::from(
        "server:\n  listen: \"127.0.0.1:8080\"\n  public_url: \"https://auth.example.com\"\nsession:\n  secret: \"0123456789abcdef0123456789abcdef\"\nroutes:\n",
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: r{i}\n    hosts: [\"app{i}.example.com\", \"*.team{i}.example.com\"]\n    path_prefix: \"/svc{i}\"\n    upstreams: [\"127.0.0.1:{}\"]\n    public_paths: [\"/svc{i}/health\"]\n",
            3000 + i
        ));
    }
    Config::from_yaml(&yaml, Path::new("bench.yaml"), &Environment::system()).expect("valid")
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

criterion_group!(benches, bench);
criterion_main!(benches);
