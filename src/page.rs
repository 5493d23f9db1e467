//! Pages and error answers the gateway writes itself, as plain data and
//! rendered HTML (askama templates, escaped) or JSON. No Pingora here:
//! `proxy::respond` writes them out.

use askama::Template;
use bytes::Bytes;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
    link: Option<(&'a str, &'a str)>,
}

/// An answer written by the gateway instead of the upstream.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Machine-readable, for the JSON body.
    pub code: &'static str,
    pub title: &'static str,
    pub message: String,
    /// (href, text) of a button on the HTML page.
    pub link: Option<(String, String)>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn new(
        status: u16,
        code: &'static str,
        title: &'static str,
        message: impl Into<String>,
    ) -> Reply {
        Reply {
            status,
            code,
            title,
            message: message.into(),
            link: None,
            headers: Vec::new(),
        }
    }

    /// 503: the store cannot be reached; `what` says what did not happen.
    pub fn store_unavailable(what: &str) -> Reply {
        Reply::new(
            503,
            "store_unavailable",
            "Temporarily unavailable",
            format!("{what} Try again in a moment."),
        )
        .with_header("retry-after", "5")
    }

    pub fn with_link(mut self, href: impl Into<String>, text: impl Into<String>) -> Reply {
        self.link = Some((href.into(), text.into()));
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// The body of `reply`: an HTML page for browsers, else JSON
/// `{"code", "message"}`.
pub fn body_of(reply: &Reply, html: bool) -> (Bytes, &'static str) {
    if html {
        let page = ErrorPage {
            status: reply.status,
            title: reply.title,
            message: &reply.message,
            link: reply.link.as_ref().map(|(h, t)| (h.as_str(), t.as_str())),
        };
        match page.render() {
            Ok(text) => return (Bytes::from(text), "text/html; charset=utf-8"),
            Err(e) => tracing::error!(error = %e, "error page did not render"),
        }
    }
    let json = serde_json::json!({ "code": reply.code, "message": reply.message });
    (Bytes::from(json.to_string()), "application/json")
}

#[derive(Template)]
#[template(path = "chooser.html")]
struct Chooser<'a> {
    choices: &'a [(String, String)],
}

/// The IdP chooser: (login link, display name) for each IdP.
pub fn chooser(choices: &[(String, String)]) -> String {
    Chooser { choices }.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "chooser page did not render");
        String::from("<!doctype html><title>Sign in</title>")
    })
}
