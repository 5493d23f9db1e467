//! Start, reload and shutdown of the real binary.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn route_to(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"routes:
  - name: app
    hosts: ["app.test"]
    upstreams: ["{upstream}"]
    public: true
"#
    )
}

async fn answering_upstream(gw: &Gateway) -> String {
    let r = get(gw.http, "app.test", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["upstream"].as_str().unwrap().to_string()
}

async fn wait_for_metric(gw: &Gateway, name: &str, value: f64) {
    let what = format!("{name} reaches {value}");
    eventually(&what, Duration::from_secs(20), || async {
        (metric_value(&gw.metrics().await, name) == Some(value)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_file_and_keeps_the_old_one_for_an_invalid_file() {
    let a = start_echo("a").await;
    let b = start_echo("b").await;
    let gw = Gateway::start(&config_with(&route_to(a))).await;
    assert_eq!(answering_upstream(&gw).await, "a");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_value(&metrics, "portcullis_config_reloads_total"),
        Some(0.0)
    );

    // A keep-alive connection opened before the reload survives it.
    let client = reqwest::Client::new();
    let before = client
        .get(gw.url("/"))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);

    gw.rewrite_config(&config_with(&route_to(b)));
    gw.signal("HUP");
    wait_for_metric(&gw, "portcullis_config_reloads_total", 1.0).await;
    assert_eq!(answering_upstream(&gw).await, "b");
    let after = client
        .get(gw.url("/"))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);

    // Invalid: an undeclared organization. The running config stays.
    let invalid = config_with(&route_to(a)).replace("    public: true\n", "    org: nowhere\n");
    gw.rewrite_config(&invalid);
    gw.signal("HUP");
    wait_for_metric(&gw, "portcullis_config_reload_failures_total", 1.0).await;
    assert_eq!(answering_upstream(&gw).await, "b");
    // The log names the place.
    gw.log_with("routes[0].org").await;

    // Broken YAML is refused the same way.
    gw.rewrite_config("server: [unclosed\n");
    gw.signal("HUP");
    wait_for_metric(&gw, "portcullis_config_reload_failures_total", 2.0).await;
    assert_eq!(answering_upstream(&gw).await, "b");
}

/// An upstream that holds each request for `delay` and tells the test
/// when a request has arrived.
async fn slow_upstream(delay: Duration) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let app = axum::Router::new().fallback(move || {
        let tx = tx.clone();
        async move {
            let _ = tx.send(()).await;
            tokio::time::sleep(delay).await;
            "finished"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let (slow, mut arrived) = slow_upstream(Duration::from_millis(1500)).await;
    let mut gw = Gateway::start(&config_with(&route_to(slow))).await;
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .get(url)
            .header("host", "app.test")
            .send()
            .await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the request reached the upstream");
    gw.signal("TERM");
    let (status, body) = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(status, 200);
    assert_eq!(body, "finished");
    let exit = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits within the grace period");
    assert_eq!(exit.code(), Some(0), "logs:\n{}", gw.logs());
    assert!(
        std::net::TcpStream::connect(gw.http).is_err(),
        "no longer accepting"
    );
}

#[test]
fn exit_codes_for_invalid_config_and_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_portcullis");

    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(&invalid, "server:\n  listen: [oops\n").unwrap();
    let out = Command::new(bin)
        .args(["run", "--config"])
        .arg(&invalid)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid.yaml:"), "{stderr}");
    assert!(
        stderr.contains("invalid.yaml:3:1: YAML syntax error"),
        "{stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = config_with(&route_to("127.0.0.1:9".parse().unwrap()))
        .replace("{http}", &port.to_string())
        .replace("{admin}", "0")
        .replace("{dir}", &dir.path().display().to_string());
    let busy = dir.path().join("busy.yaml");
    std::fs::write(&busy, yaml).unwrap();
    let out = Command::new(bin)
        .args(["run", "--config"])
        .arg(&busy)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("127.0.0.1:{port}")));
}

#[test]
fn check_and_hash_token_commands() {
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
    let out = Command::new(bin)
        .args(["check", "--config", example])
        .env("PORTCULLIS_ADMIN_TOKEN", "an-admin-token-of-some-length")
        .env("PORTCULLIS_SESSION_SECRET", SECRET)
        .env("AUTHENTIK_SECRET", "a")
        .env("KEYCLOAK_SECRET", "k")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The example an operator copies is clean: no warnings.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("warning"), "{stdout}");
    // Without the environment every missing variable is named.
    let out = Command::new(bin)
        .args(["check", "--config", example])
        .env_remove("PORTCULLIS_ADMIN_TOKEN")
        .env_remove("PORTCULLIS_SESSION_SECRET")
        .env_remove("AUTHENTIK_SECRET")
        .env_remove("KEYCLOAK_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for var in [
        "PORTCULLIS_ADMIN_TOKEN",
        "PORTCULLIS_SESSION_SECRET",
        "AUTHENTIK_SECRET",
        "KEYCLOAK_SECRET",
    ] {
        assert!(stderr.contains(var), "{var} not named in:\n{stderr}");
    }

    let mut child = Command::new(bin)
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"test\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );

    let out = Command::new(bin).arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["properties"]["identity_providers"].is_object());
    assert!(schema["$defs"]["RouteSection"]["properties"]["allow_if"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_health_and_metrics() {
    let a = start_echo("a").await;
    let gw = Gateway::start(&config_with(&route_to(a))).await;
    for path in ["/healthz", "/readyz"] {
        let r = reqwest::get(format!("http://{}{path}", gw.admin))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    answering_upstream(&gw).await;
    let _ = get(gw.http, "nowhere.test", "/", &[]).await;
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"portcullis_requests_total{route="app",status="200"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_requests_total{route="",status="404"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_upstream_latency_seconds_count{route="app"} 1"#),
        "{m}"
    );
    // One access-log event per request, without the query.
    let _ = get(gw.http, "app.test", "/logged?token=secret-value", &[]).await;
    eventually(
        "the access line is written",
        Duration::from_secs(5),
        || async { gw.logs().contains("/logged").then_some(()) },
    )
    .await;
    let logs = gw.logs();
    assert!(logs.contains("portcullis::access"), "{logs}");
    assert!(
        !logs.contains("secret-value"),
        "query leaked into the log:\n{logs}"
    );
}

/// `listen: 127.0.0.1:0`: the gateway binds free ports itself, says in
/// its start-up line which, and serves there.
#[tokio::test]
async fn port_zero_listeners_are_reported_and_served() {
    let a = start_echo("a").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_with(&route_to(a))
        .replace("{http}", "0")
        .replace("{admin}", "0")
        .replace("{dir}", &dir.path().display().to_string());
    let path = dir.path().join("zero.yaml");
    std::fs::write(&path, yaml).unwrap();
    let log_path = dir.path().join("zero.log");
    let log = std::fs::File::create(&log_path).unwrap();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Killed(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let field = |line: &str, name: &str| -> Option<std::net::SocketAddr> {
        let rest = line.split(&format!(" {name}=")).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    let (http, admin) = eventually(
        "the start-up line names the bound ports",
        Duration::from_secs(30),
        || async {
            let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
            let line = logs.lines().find(|l| l.contains("portcullis starting"))?;
            Some((field(line, "listen")?, field(line, "admin")?))
        },
    )
    .await;
    assert!(http.port() != 0 && admin.port() != 0, "{http} {admin}");
    let r = get(http, "app.test", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let health = reqwest::get(format!("http://{admin}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
