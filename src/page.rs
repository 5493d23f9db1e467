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

    /// 400: the request cannot be judged as it is written.
    pub fn bad_request(message: impl Into<String>) -> Reply {
        Reply::new(400, "bad_request", "Bad request", message)
    }

    /// 401 for a protected route without credentials.
    pub fn unauthenticated(message: &str) -> Reply {
        Reply::new(401, "unauthenticated", "Sign-in required", message)
            .with_header("www-authenticate", "Bearer")
    }

    /// 401 for a session whose sign-in is weaker or older than the route
    /// asks (RFC 9470), saying what would do.
    pub fn step_up(su: &crate::config::StepUp) -> Reply {
        let mut challenge = String::from(
            "Bearer error=\"insufficient_user_authentication\", error_description=\"A stronger or more recent sign-in is required\"",
        );
        if !su.acr_values.is_empty() {
            challenge.push_str(&format!(", acr_values=\"{}\"", su.acr_values.join(" ")));
        }
        if let Some(max) = su.max_age {
            challenge.push_str(&format!(", max_age={}", max.as_secs()));
        }
        Reply::new(
            401,
            "insufficient_user_authentication",
            "Stronger sign-in required",
            "This route needs a stronger or more recent sign-in than this session's.",
        )
        .with_header("www-authenticate", challenge)
    }

    /// 401 for a bearer token that was not accepted.
    pub fn bad_bearer() -> Reply {
        Reply::new(
            401,
            "invalid_token",
            "Sign-in required",
            "The bearer token was not accepted.",
        )
        .with_header("www-authenticate", "Bearer error=\"invalid_token\"")
    }

    /// 403 naming the route requirement the user does not meet.
    pub fn denied(denied: &crate::authz::Denied) -> Reply {
        Reply::new(403, denied.code(), "Access denied", denied.message())
    }

    /// 404 for a host no route serves.
    pub fn unknown_host() -> Reply {
        Reply::new(
            404,
            "unknown_host",
            "Not found",
            "No route serves this address.",
        )
    }

    /// 405 for a method an endpoint does not take.
    pub fn method_not_allowed(allow: &'static str) -> Reply {
        Reply::new(
            405,
            "method_not_allowed",
            "Method not allowed",
            "This method is not allowed here.",
        )
        .with_header("allow", allow)
    }

    /// 431: more request header bytes than the gateway reads.
    pub fn headers_too_large(limit: usize) -> Reply {
        Reply::new(
            431,
            "headers_too_large",
            "Request headers too large",
            format!("Request headers may not exceed {limit} bytes."),
        )
    }

    /// 502: the route's upstream did not answer.
    pub fn upstream_unavailable() -> Reply {
        Reply::new(
            502,
            "upstream_unavailable",
            "Application unavailable",
            "The application behind this address did not answer. Try again in a moment.",
        )
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
