//! A real OpenID provider (`oidc-provider` from npm, in tests/idp) and a
//! scripted browser that logs in through it: cookies kept, redirects
//! followed one by one, the IdP's login and consent forms filled in.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub struct Idp {
    child: Child,
    pub ports: Vec<u16>,
}

impl Idp {
    /// Starts the providers described by `providers` (see
    /// tests/idp/server.mjs), one on each of `sockets` (bound by the
    /// caller, whose ports the providers' issuers name), and waits until
    /// they serve.
    pub fn start(providers: Value, sockets: &[std::net::TcpListener]) -> Idp {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run the tests with `./dev test` (it runs npm ci in tests/idp)"
        );
        let mut providers = providers;
        let list = providers.as_array_mut().expect("a list of providers");
        assert_eq!(list.len(), sockets.len(), "one socket per provider");
        for (i, (p, s)) in list.iter_mut().zip(sockets).enumerate() {
            p["port"] = json!(s.local_addr().unwrap().port());
            p["fd"] = json!(3 + i);
        }
        let spec = json!({ "providers": providers });
        // `localhost` is 127.0.0.1 here, where the gateway listens.
        let mut command = Command::new("node");
        command
            .arg("--dns-result-order=ipv4first")
            .arg(dir.join("server.mjs"))
            .arg(spec.to_string())
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        super::pass_sockets(&mut command, sockets);
        let mut child = command.spawn().expect("node starts");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // Keep reading what it prints (oidc-provider's notices): a closed
        // pipe would kill it at its next line.
        std::thread::spawn(move || {
            for l in reader.lines().map_while(Result::ok) {
                eprintln!("idp: {l}");
            }
        });
        if !line.starts_with("ready") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the IdP did not start: {line:?}");
        }
        let ports = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().unwrap())
            .collect();
        Idp { child, ports }
    }

    /// The provider on `port`'s test controls (tests/idp/server.mjs).
    async fn control(&self, method: reqwest::Method, port: u16, path: &str, body: Option<Value>) {
        let url = format!("http://127.0.0.1:{port}/__test/accounts/{path}");
        let mut req = reqwest::Client::new().request(method, &url);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 204, "{url}");
    }

    /// The account's claims from now on, at the provider on `port`.
    pub async fn set_account(&self, port: u16, account: &str, claims: Value) {
        self.control(reqwest::Method::PUT, port, account, Some(claims))
            .await
    }

    /// Removes the account, as when a user is disabled at the IdP.
    pub async fn remove_account(&self, port: u16, account: &str) {
        self.control(reqwest::Method::DELETE, port, account, None)
            .await
    }

    /// Revokes every grant of the account (its refresh tokens die).
    pub async fn revoke_grants(&self, port: u16, account: &str) {
        self.control(
            reqwest::Method::POST,
            port,
            &format!("{account}/revoke"),
            None,
        )
        .await
    }

    /// Stops the providers. (The caller closes the sockets it holds, so
    /// that connections are refused rather than queued.)
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `identity_providers` entry for the test IdP's client `portcullis`
/// at `idp_port` (ID token claims only), every organization a member by
/// its name in `groups`, with the role `roles` (a JMESPath expression).
pub fn main_idp_yaml(idp_port: u16, roles: &str) -> String {
    format!(
        r#"  - id: main
    display_name: "Main IdP"
    issuer: "http://localhost:{idp_port}"
    client_id: portcullis
    client_secret: main-secret
    scopes: [openid, email, profile, groups]
    claims: id_token
    provisioning:
      default:
        org: "contains(groups, '{{{{orgId}}}}')"
        roles: "{roles}"
"#
    )
}

/// An oidc-provider client entry for the gateway on `gateway_port`,
/// allowed refresh tokens (which it gets when it asks for
/// `offline_access`).
pub fn client(id: &str, secret: &str, gateway_port: u16) -> Value {
    json!({
        "client_id": id,
        "client_secret": secret,
        "redirect_uris": [format!("http://localhost:{gateway_port}/_portcullis/callback")],
        "post_logout_redirect_uris": [format!("http://localhost:{gateway_port}/")],
        "backchannel_logout_uri": format!("http://localhost:{gateway_port}/_portcullis/backchannel-logout"),
        "backchannel_logout_session_required": true,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    })
}

#[derive(Debug)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    /// How long the request took, to the end of the body.
    pub took: Duration,
}

impl Page {
    pub fn location(&self) -> Option<String> {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }

    /// The first HTML form: its absolute action and its hidden fields.
    pub fn form(&self) -> Option<(String, Vec<(String, String)>)> {
        self.forms().into_iter().next()
    }

    /// The first form whose HTML contains `needle`.
    pub fn form_with(&self, needle: &str) -> Option<(String, Vec<(String, String)>)> {
        self.body
            .split("<form")
            .skip(1)
            .find(|f| f[..f.find("</form>").unwrap_or(f.len())].contains(needle))
            .and_then(|f| self.parse_form(f))
    }

    pub fn forms(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.body
            .split("<form")
            .skip(1)
            .filter_map(|f| self.parse_form(f))
            .collect()
    }

    fn parse_form(&self, form: &str) -> Option<(String, Vec<(String, String)>)> {
        let end = form.find("</form>").unwrap_or(form.len());
        let form = &form[..end];
        let action = attr(form, "action")?;
        let mut fields = Vec::new();
        let mut rest = form;
        while let Some(i) = rest.find("<input") {
            rest = &rest[i + 6..];
            let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
            if let (Some(name), Some(value)) = (attr(tag, "name"), attr(tag, "value")) {
                fields.push((name, value));
            }
        }
        Some((join(&self.url, &action), fields))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}) from {}: {}", self.url, self.body))
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let i = tag.find(&key)? + key.len();
    let j = tag[i..].find('"')? + i;
    Some(unescape(&tag[i..j]))
}

/// Undoes HTML escaping of an attribute value.
pub fn unescape(s: &str) -> String {
    s.replace("&#38;", "&")
        .replace("&#x26;", "&")
        .replace("&amp;", "&")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
}

/// Resolves `href` against `base`.
pub fn join(base: &str, href: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(href))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| href.to_string())
}

/// A browser: a cookie jar, `Accept: text/html`, no automatic redirects.
pub struct Browser {
    client: reqwest::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Self::resolving(&[])
    }

    /// A browser that finds `hosts` at the given loopback addresses (as a
    /// hosts file would), whatever port the URL names.
    pub fn resolving(hosts: &[(&str, std::net::SocketAddr)]) -> Browser {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("accept", "text/html,application/xhtml+xml".parse().unwrap());
        let mut builder = reqwest::Client::builder();
        for (host, addr) in hosts {
            builder = builder.resolve(host, *addr);
        }
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        Browser {
            jar: jar.clone(),
            client: builder
                .cookie_provider(jar)
                .redirect(reqwest::redirect::Policy::none())
                .default_headers(headers)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    async fn page(url: &str, resp: reqwest::Response, started: std::time::Instant) -> Page {
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp.text().await.unwrap_or_default();
        Page {
            url: url.to_string(),
            status,
            headers,
            body,
            took: started.elapsed(),
        }
    }

    /// The `Cookie:` header line this browser sends to `url`, for clients
    /// that are not it (a WebSocket).
    pub fn cookie_line(&self, url: &str) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let value = self.jar.cookies(&url.parse().ok()?)?;
        Some(format!("Cookie: {}", value.to_str().ok()?))
    }

    /// The HTTP client with this browser's cookies, for requests a browser
    /// would not make (other `Accept` headers).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn get(&self, url: &str) -> Page {
        let started = std::time::Instant::now();
        let resp = self.client.get(url).send().await.unwrap();
        Self::page(url, resp, started).await
    }

    pub async fn post_form(&self, url: &str, fields: &[(String, String)]) -> Page {
        let started = std::time::Instant::now();
        let resp = self.client.post(url).form(fields).send().await.unwrap();
        Self::page(url, resp, started).await
    }

    /// Follows redirects from `page` until one that is not a redirect.
    /// Every page on the way is kept.
    pub async fn follow(&self, mut page: Page, trail: &mut Vec<Page>) -> Page {
        for _ in 0..20 {
            let Some(next) = page
                .location()
                .filter(|_| (300..400).contains(&page.status))
            else {
                return page;
            };
            let next = join(&page.url, &next);
            let fresh = self.get(&next).await;
            trail.push(std::mem::replace(&mut page, fresh));
        }
        panic!("redirect loop at {}", page.url);
    }

    /// From a page of the IdP's login flow, signs in as `account` and
    /// consents, then follows redirects until the first page that is not
    /// the IdP's (the gateway's answer to the callback, and beyond).
    pub async fn sign_in_at_idp(&self, page: Page, account: &str, trail: &mut Vec<Page>) -> Page {
        self.sign_in_at_idp_with(page, account, "any", trail).await
    }

    /// [`Browser::sign_in_at_idp`] typing `password` (the test IdP signs
    /// in with acr `mfa` for the password "mfa", else `pwd`).
    pub async fn sign_in_at_idp_with(
        &self,
        page: Page,
        account: &str,
        password: &str,
        trail: &mut Vec<Page>,
    ) -> Page {
        let mut page = self.follow(page, trail).await;
        for _ in 0..4 {
            let Some((action, mut fields)) = page.form() else {
                return page;
            };
            if page.body.contains("name=\"login\"") {
                fields.retain(|(k, _)| k != "login" && k != "password");
                fields.push(("login".into(), account.into()));
                fields.push(("password".into(), password.into()));
            }
            let posted = self.post_form(&action, &fields).await;
            page = self.follow(posted, trail).await;
        }
        page
    }
}
