//! `portcullis demo` as a newcomer uses it: start it, open the URL it
//! prints, sign in at its development IdP as a sample user, reach the
//! echo app with identity headers.

mod support;

use std::process::Command;

use support::demo::{Demo, start, wait_up};
use support::idp::{Browser, Page};

/// Opens `path`, and signs in at the demo IdP as `user` on its page.
async fn sign_in(b: &Browser, demo: &Demo, path: &str, user: &str) -> Page {
    let first = b
        .get(&format!("{}{}", demo.url, path.trim_start_matches('/')))
        .await;
    let mut trail = Vec::new();
    let picker = b.follow(first, &mut trail).await;
    assert_eq!(picker.status, 200);
    assert!(picker.body.contains("Development IdP"), "{}", picker.body);
    let (action, fields) = picker
        .form_with(&format!("value=\"{user}\""))
        .expect("a form for the user");
    let posted = b.post_form(&action, &fields).await;
    b.follow(posted, &mut trail).await
}

#[tokio::test]
async fn a_newcomer_signs_in_through_the_demo() {
    let demo = start();
    wait_up(&demo.url).await;

    let alice = Browser::new();
    let page = sign_in(&alice, &demo, "/", "alice").await;
    assert_eq!(page.status, 200, "{}", page.body);
    // A browser lands on the app's page of who it is.
    for shown in [
        "<th scope=\"row\">x-auth-email</th><td>alice@example.com</td>",
        "<th scope=\"row\">x-auth-org</th><td>home-lab</td>",
        "<th scope=\"row\">x-auth-roles</th><td>Admin</td>",
        "<th scope=\"row\">x-department</th><td>Platform</td>",
        "class=\"ok\">Signature verified with key",
        "&#34;roles&#34;: [",
        "href=\"/_portcullis/logout\"",
    ] {
        assert!(page.body.contains(shown), "{shown} not in:\n{}", page.body);
    }
    // Other clients still get JSON.
    let json: serde_json::Value = alice
        .client()
        .get(&demo.url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = &json["headers"];
    assert_eq!(h["x-auth-email"][0], "alice@example.com");
    assert_eq!(h["x-auth-roles"][0], "Admin");
    assert_eq!(alice.get(&format!("{}admin/", demo.url)).await.status, 200);

    let bob = Browser::new();
    assert_eq!(sign_in(&bob, &demo, "/", "bob").await.status, 200);
    let denied = bob.get(&format!("{}admin/", demo.url)).await;
    assert_eq!(denied.status, 403);
    assert!(denied.body.contains("Admin"));

    let carol = Browser::new();
    let page = sign_in(&carol, &demo, "/partners/", "carol").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("<th scope=\"row\">x-auth-org</th><td>partners</td>"),
        "{}",
        page.body
    );

    let dave = Browser::new();
    let page = sign_in(&dave, &demo, "/", "dave").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("not a member of any organization"));
}

/// Ctrl-C ends the demo and removes the files it wrote.
#[tokio::test]
async fn ctrl_c_removes_the_demos_files() {
    let mut demo = start();
    wait_up(&demo.url).await;
    let dir = demo.config.parent().unwrap().to_path_buf();
    assert!(demo.config.exists(), "{}", demo.config.display());
    let status = Command::new("kill")
        .arg("-INT")
        .arg(demo.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let child = std::sync::Mutex::new(&mut demo.child);
    let exited = support::eventually(
        "the demo exits on Ctrl-C",
        std::time::Duration::from_secs(20),
        || {
            let status = child.lock().unwrap().try_wait().unwrap();
            async move { status }
        },
    )
    .await;
    assert!(exited.success(), "{exited:?}");
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
