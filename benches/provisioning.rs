//! One login's provisioning against 10 … 10,000 organizations with a
//! fallback policy: cost should grow linearly with the organization count.

#[path = "../tests/support/yaml.rs"]
mod yaml;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use portcullis::config::Config;
use portcullis::provision::{jit_from_config, plan};
use serde_json::json;

// The allocator the gateway runs with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn config(orgs: usize) -> Config {
    let mut yaml = String::from(
        r#"identity_providers:
  - id: authentik
    issuer: "https://sso.example.com/"
    client_id: portcullis
    provisioning:
      default:
        org: "contains(groups, '{{orgId}}')"
        roles: "contains(groups, 'admin') && 'Admin' || 'Member'"
organizations:
"#,
    );
    for i in 0..orgs {
        yaml.push_str(&format!(
            "  - id: org-{i}\n    roles: [{{name: Admin}}, {{name: Member}}]\n"
        ));
    }
    yaml::config(&yaml)
}

fn bench(c: &mut Criterion) {
    let claims = json!({
        "sub": "9590c3bf", "email": "user@example.com", "email_verified": true,
        "name": "Example User", "groups": ["org-1", "org-5", "admin", "staff", "org-7"]
    });
    let mut group = c.benchmark_group("provision one login");
    for orgs in [10usize, 100, 1_000, 10_000] {
        let config = config(orgs);
        let jit = jit_from_config(&config);
        let idp = config.identity_providers[0].clone();
        group.throughput(Throughput::Elements(orgs as u64));
        group.bench_with_input(BenchmarkId::from_parameter(orgs), &orgs, |b, _| {
            b.iter(|| plan(&config, &idp, &claims, None, &jit).expect("plan"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
