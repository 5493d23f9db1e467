//! Responses the gateway writes itself: error pages (HTML for browsers,
//! JSON for everyone else) and redirects. Never cached.

use askama::Template;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

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

    pub fn with_link(mut self, href: impl Into<String>, text: impl Into<String>) -> Reply {
        self.link = Some((href.into(), text.into()));
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Browsers (an `Accept` that names `text/html`) get pages and redirects;
/// API clients get JSON and 401s.
pub fn wants_html(req: &RequestHeader) -> bool {
    req.headers
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

fn body_of(reply: &Reply, html: bool) -> (Bytes, &'static str) {
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

async fn write(
    session: &mut Session,
    status: u16,
    headers: &[(&'static str, String)],
    body: Option<(Bytes, &'static str)>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 4))?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in headers {
        resp.append_header(*name, value.as_str())?;
    }
    let len = body.as_ref().map(|(b, _)| b.len()).unwrap_or(0);
    if let Some((_, content_type)) = &body {
        resp.insert_header("content-type", *content_type)?;
    }
    resp.insert_header("content-length", len.to_string())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), body.is_none() || head_only)
        .await?;
    if let Some((bytes, _)) = body
        && !head_only
    {
        session.write_response_body(Some(bytes), true).await?;
    }
    Ok(())
}

/// Writes `reply` as HTML or JSON according to the request's `Accept`.
pub async fn send(session: &mut Session, reply: &Reply) -> Result<()> {
    let html = wants_html(session.req_header());
    let body = body_of(reply, html);
    write(session, reply.status, &reply.headers, Some(body)).await
}

/// A plain-text answer, e.g. `ok` from the health endpoint.
pub async fn text(session: &mut Session, status: u16, body: &'static str) -> Result<()> {
    write(
        session,
        status,
        &[],
        Some((
            Bytes::from_static(body.as_bytes()),
            "text/plain; charset=utf-8",
        )),
    )
    .await
}

/// A JSON answer (the gateway's own endpoints).
pub async fn json(
    session: &mut Session,
    status: u16,
    body: String,
    headers: &[(&'static str, String)],
) -> Result<()> {
    write(
        session,
        status,
        headers,
        Some((Bytes::from(body), "application/json")),
    )
    .await
}

/// 302 to `location`, with extra headers (e.g. `Set-Cookie`).
pub async fn redirect(
    session: &mut Session,
    location: &str,
    mut headers: Vec<(&'static str, String)>,
) -> Result<()> {
    headers.push(("location", location.to_string()));
    write(session, 302, &headers, None).await
}
