//! Responses the gateway writes itself: error pages (HTML for browsers,
//! JSON for everyone else) and redirects. Never cached.

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

pub use crate::page::{Reply, body_of};

/// Browsers (an `Accept` that names `text/html`) get pages and redirects;
/// API clients get JSON and 401s.
pub fn wants_html(req: &RequestHeader) -> bool {
    req.headers
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
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

/// An empty 200 carrying `headers` (forward-auth's "yes, and this is who").
pub async fn ok_with(
    session: &mut Session,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(headers.len() + 3))?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in headers {
        resp.insert_header(name, value)?;
    }
    resp.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(resp), true).await
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

/// A SCIM answer (`application/scim+json`).
pub async fn scim(
    session: &mut Session,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
) -> Result<()> {
    let body = body.map(|b| (Bytes::from(b), "application/scim+json"));
    write(session, status, &headers, body).await
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

/// Writes an [`Answer`](crate::login::Answer) of the login flows.
pub async fn answer(session: &mut Session, answer: crate::login::Answer) -> Result<()> {
    use crate::login::Answer;
    match answer {
        Answer::Redirect { location, cookies } => {
            let headers = cookies.into_iter().map(|c| ("set-cookie", c)).collect();
            redirect(session, &location, headers).await
        }
        Answer::Reply(reply) => send(session, &reply).await,
        Answer::Html { status, body } => {
            write(
                session,
                status,
                &[],
                Some((Bytes::from(body), "text/html; charset=utf-8")),
            )
            .await
        }
        Answer::Empty { status } => write(session, status, &[], None).await,
    }
}

/// A request that failed after it was admitted (upstream down, a read
/// error): the 502 page for an upstream, 400 for what the client sent,
/// nothing for a client that hung up.
pub(super) async fn failure(
    session: &mut Session,
    e: &Error,
    ctx: &super::RequestCtx,
) -> pingora::proxy::FailToProxy {
    let code = match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    };
    if code > 0 && session.response_written().is_none() {
        let reply = match code {
            502 => {
                let route = ctx.route.as_ref().map(|r| r.name.as_str()).unwrap_or("");
                tracing::warn!(route, upstream = ?ctx.upstream, error = %e, "upstream unavailable");
                Reply::upstream_unavailable()
            }
            400 => Reply::bad_request("The request could not be read."),
            431 => Reply::headers_too_large(super::MAX_REQUEST_HEADER_BYTES),
            code => Reply::new(
                code,
                "gateway_error",
                "Gateway error",
                "The gateway could not complete this request.",
            ),
        };
        if let Err(err) = send(session, &reply).await {
            tracing::debug!(error = %err, "error response could not be written");
        }
    }
    pingora::proxy::FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// What `authz::judge` found, or the answer when it found nothing to
/// judge: 404 for a host no route serves, 400 for a path whose views name
/// two routes.
pub(super) fn judged_or_refusal(
    judged: Result<Option<crate::authz::Judged>, crate::authz::AmbiguousPath>,
) -> std::result::Result<crate::authz::Judged, Box<Reply>> {
    match judged {
        Ok(Some(j)) => Ok(j),
        Ok(None) => Err(Box::new(Reply::unknown_host())),
        Err(e) => Err(Box::new(Reply::bad_request(e.to_string()))),
    }
}
