//! `portcullis demo` as a newcomer uses it: start it, open the URL it
//! prints, sign in at its development IdP as a sample user, reach the
//! echo app with identity headers.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::idp::{Browser, Page};

struct Demo {
    child: std::process::Child,
    url: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Demo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("Open") {
            url = Some(rest.trim().to_string());
            break;
        }
    }
    // Keep reading what it prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    Demo {
        child,
        url: url.expect("the demo prints the URL to open"),
    }
}

async fn wait_up(url: &str) {
    let health = format!("{url}_portcullis/healthz");
    support::eventually(
        "the demo comes up",
        std::time::Duration::from_secs(30),
        || async { reqwest::get(&health).await.ok().map(|_| ()) },
    )
    .await;
}

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
    let h = &page.json()["headers"];
    assert_eq!(h["x-auth-email"][0], "alice@example.com");
    assert_eq!(h["x-auth-org"][0], "home-lab");
    assert_eq!(h["x-auth-roles"][0], "Admin");
    assert_eq!(h["x-department"][0], "Platform");
    assert_eq!(alice.get(&format!("{}admin/", demo.url)).await.status, 200);

    let bob = Browser::new();
    assert_eq!(sign_in(&bob, &demo, "/", "bob").await.status, 200);
    let denied = bob.get(&format!("{}admin/", demo.url)).await;
    assert_eq!(denied.status, 403);
    assert!(denied.body.contains("Admin"));

    let carol = Browser::new();
    let page = sign_in(&carol, &demo, "/partners/", "carol").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.json()["headers"]["x-auth-org"][0], "partners");

    let dave = Browser::new();
    let page = sign_in(&dave, &demo, "/", "dave").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("not a member of any organization"));
}
