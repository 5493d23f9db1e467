//! Advisory class: email-domain tricks in just-in-time provisioning
//! (CVE-2026-40574 `a@evil.com@company.com`, trailing dot, case,
//! look-alikes, subdomains, unverified or string-typed verification).

use portcullis::provision::{Outcome, jit_from_config, plan};
use serde_json::json;

#[test]
fn only_a_verified_address_exactly_at_the_domain_joins() {
    let config = crate::support::yaml::config(
        r#"identity_providers:
  - {id: corp-idp, issuer: "https://sso.example.com/", client_id: portcullis}
organizations:
  - id: corp
    roles: [{name: Member}]
    jit: {email_domains: [company.com], default_roles: [Member]}
"#,
    );
    for (email, verified, joins) in [
        (json!("a@company.com"), json!(true), true),
        (json!("a@COMPANY.COM"), json!(true), true),
        (json!("a@evil.com@company.com"), json!(true), false),
        (json!("a@company.com@evil.com"), json!(true), false),
        (json!("a@company.com."), json!(true), false),
        (json!("a@sub.company.com"), json!(true), false),
        (json!("a@company.com.evil.com"), json!(true), false),
        (json!("a@evilcompany.com"), json!(true), false),
        (json!("a@c\u{043e}mpany.com"), json!(true), false),
        (json!("a@company.com "), json!(true), false),
        (json!("@company.com"), json!(true), false),
        (json!("company.com"), json!(true), false),
        (json!("a@company.com"), json!(false), false),
        (json!("a@company.com"), json!("true"), false),
        (json!("a@company.com"), json!(1), false),
        (json!("a@company.com"), json!(null), false),
        (json!(["a@company.com"]), json!(true), false),
    ] {
        let claims = json!({"sub": "s", "email": email, "email_verified": verified});
        let p = plan(
            &config,
            &config.identity_providers[0],
            &claims,
            None,
            &jit_from_config(&config),
        )
        .unwrap();
        assert_eq!(
            p.outcome == Outcome::Allowed,
            joins,
            "{email} verified={verified}"
        );
    }
}
