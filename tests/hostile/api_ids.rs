//! Advisory class: management API ids in the body versus the URL (Pangolin
//! CVE-2026-3209: a body naming another organization or user was obeyed).
//! Only the URL names what changes; a body that names ids is refused.

use crate::support::*;
use crate::world::*;

#[tokio::test]
async fn ids_in_a_body_never_redirect_a_change() {
    let w = world().await;
    let api = |method: reqwest::Method, path: String, body: serde_json::Value| {
        let url = format!("http://{}{}", w.gw.admin, path);
        async move {
            reqwest::Client::new()
                .request(method, url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let alice = w.alice.clone();
    let rows = [
        (
            reqwest::Method::PUT,
            format!("/api/organizations/corp/users/{alice}"),
            serde_json::json!({"roles": ["Admin"], "organizationId": "other"}),
            400,
        ),
        (
            reqwest::Method::PUT,
            format!("/api/organizations/corp/users/{alice}"),
            serde_json::json!({"roles": ["Admin"], "userId": "someone-else"}),
            400,
        ),
        (
            reqwest::Method::POST,
            "/api/organizations/corp/jit/email-domains".into(),
            serde_json::json!({"emailDomain": "x.example", "organizationId": "other"}),
            400,
        ),
        (
            reqwest::Method::PUT,
            "/api/organizations/corp/jit/roles".into(),
            serde_json::json!({"organizationRoleIds": ["Member"], "organizationId": "other"}),
            400,
        ),
        (
            reqwest::Method::POST,
            "/api/users".into(),
            serde_json::json!({"idp": "corp-idp", "email": "new@company.com", "id": "chosen-id", "memberships": []}),
            400,
        ),
    ];
    for (method, path, body, status) in rows {
        assert_eq!(
            api(method.clone(), path.clone(), body.clone()).await,
            status,
            "{method} {path} {body}"
        );
    }
    // Nothing changed anywhere.
    let user = w.store.user(&w.alice).await.unwrap().unwrap();
    assert_eq!(user.memberships.len(), 1);
    assert_eq!(user.memberships[0].roles, vec!["Member".to_string()]);
    let other = w
        .store
        .jit_list("other", portcullis::store::JitList::EmailDomains)
        .await
        .unwrap();
    assert!(other.is_empty(), "{other:?}");
}
