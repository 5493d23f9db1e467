//! The management API under `/api/`: organizations, just-in-time
//! provisioning (Logto's shapes and status codes), users, memberships,
//! sessions, the provisioning explainer, the audit log and config reload.
//! One file per OpenAPI tag. Every handler is documented with
//! `utoipa::path`; each file registers its handlers, and the router and the
//! OpenAPI document are built from those lists (`router`), so neither can
//! have a route the other lacks.

mod audit;
mod config;
mod jit;
mod memberships;
mod organizations;
mod provisioning;
mod sessions;
mod users;

// Each tag's helpers and types, for the others.
#[allow(unused_imports)]
use self::{
    audit::*, config::*, jit::*, memberships::*, organizations::*, provisioning::*, sessions::*,
    users::*,
};

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Body, ErrorBody};
use crate::config::{Config, Organization};
use crate::provision::{self, Membership};
use crate::state::Shared;
use crate::store::{AuditEvent, AuditFilter, JitList, NewUser, SessionSummary, User};

type ApiResult<T> = Result<T, ApiError>;
type AppState = State<Arc<Shared>>;
type ApiRouter = OpenApiRouter<Arc<Shared>>;

/// Who made a call: `token:<n>`, the admin token's position in the file.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis management API",
        description = "Users, organization memberships and just-in-time provisioning of a Portcullis gateway. Every call needs `Authorization: Bearer <admin token>`."
    ),
    modifiers(&BearerAuth),
    security(("admin_token" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's router and its OpenAPI document, from one list of handlers
/// (each tag's file registers its own).
pub fn router() -> (axum::Router<Arc<Shared>>, utoipa::openapi::OpenApi) {
    let r = OpenApiRouter::with_openapi(ApiDoc::openapi());
    let r = organizations::routes(r);
    let r = jit::routes(r);
    let r = users::routes(r);
    let r = memberships::routes(r);
    let r = sessions::routes(r);
    let r = provisioning::routes(r);
    let r = audit::routes(r);
    let r = config::routes(r);
    r.split_for_parts()
}

// ---- shared helpers ---------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page number, from 1. Pagination applies only when `page` or
    /// `page_size` is given.
    page: Option<String>,
    /// Items per page: 1 to 100, default 20.
    page_size: Option<String>,
}

/// `Some((offset, limit))` when pagination was asked for.
fn paging(p: &Paging) -> ApiResult<Option<(usize, usize)>> {
    if p.page.is_none() && p.page_size.is_none() {
        return Ok(None);
    }
    let number = |v: &Option<String>, default: usize, what: &str| -> ApiResult<usize> {
        match v {
            None => Ok(default),
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("{what} must be a positive integer"))),
        }
    };
    let page = number(&p.page, 1, "page")?;
    let size = number(&p.page_size, 20, "page_size")?;
    if page == 0 {
        return Err(ApiError::bad_request("page starts at 1"));
    }
    if !(1..=100).contains(&size) {
        return Err(ApiError::bad_request("page_size must be between 1 and 100"));
    }
    Ok(Some(((page - 1).saturating_mul(size), size)))
}

/// `(offset, limit)` for a store query: the page asked for, or everything.
fn store_bounds(page: Option<(usize, usize)>) -> (i64, i64) {
    page.map(|(o, l)| (o as i64, l as i64))
        .unwrap_or((0, i64::MAX))
}

/// A page the store already cut, with `Total-Number` when paginated.
fn paged<T: Serialize>(items: Vec<T>, page: Option<(usize, usize)>, total: i64) -> Response {
    let mut resp = Json(items).into_response();
    if page.is_some() {
        resp.headers_mut()
            .insert("total-number", HeaderValue::from(total));
    }
    resp
}

/// Logto's `Link` header on a paginated answer (`first`, `prev`, `next`,
/// `last`), built from the request's own path and query with `page`
/// replaced: every list gets it from the `Total-Number` it answered.
pub(super) async fn link_header(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = req.uri().clone();
    let mut resp = next.run(req).await;
    let total = resp
        .headers()
        .get("total-number")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(total) = total
        && let Some(link) = links(uri.path(), uri.query().unwrap_or(""), total)
        && let Ok(value) = HeaderValue::from_str(&link)
    {
        resp.headers_mut().insert("link", value);
    }
    resp
}

/// The `Link` value for a page of `total` items; `None` when the query
/// asks for no page (or an unreadable one: the handler refused it).
fn links(path: &str, query: &str, total: usize) -> Option<String> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let page: usize = get("page").map_or(Ok(1), str::parse).ok()?;
    let size: usize = get("page_size").map_or(Ok(20), str::parse).ok()?;
    if page == 0 || size == 0 {
        return None;
    }
    let last = total.div_ceil(size).max(1);
    let url = |n: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs.iter().filter(|(k, _)| k != "page") {
            q.append_pair(k, v);
        }
        q.append_pair("page", &n.to_string());
        format!("<{path}?{}>", q.finish())
    };
    let mut out = vec![format!("{}; rel=\"first\"", url(1))];
    if page > 1 {
        out.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        out.push(format!("{}; rel=\"next\"", url(page + 1)));
    }
    out.push(format!("{}; rel=\"last\"", url(last)));
    Some(out.join(", "))
}

/// A list answer, cut to a page when asked, with `Total-Number`.
fn listed<T: Serialize>(items: Vec<T>, page: Option<(usize, usize)>) -> Response {
    let total = items.len() as i64;
    let (offset, limit) = page.unwrap_or((0, usize::MAX));
    let items: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    paged(items, page, total)
}

fn organization(config: &Config, id: &str) -> ApiResult<Arc<Organization>> {
    config
        .organization(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no organization {id:?}")))
}

fn forget_user(shared: &Shared, user_id: &str) {
    shared.sessions.forget_user(user_id);
}

#[cfg(test)]
mod tests {
    use super::links;

    #[test]
    fn links_name_the_neighbouring_pages() {
        let cases = [
            (
                "page=1&page_size=2",
                5,
                r#"</api/users?page_size=2&page=1>; rel="first", </api/users?page_size=2&page=2>; rel="next", </api/users?page_size=2&page=3>; rel="last""#,
            ),
            (
                "page=2&page_size=2&search=a%40b",
                5,
                r#"</api/users?page_size=2&search=a%40b&page=1>; rel="first", </api/users?page_size=2&search=a%40b&page=1>; rel="prev", </api/users?page_size=2&search=a%40b&page=3>; rel="next", </api/users?page_size=2&search=a%40b&page=3>; rel="last""#,
            ),
            (
                "page=3&page_size=2",
                5,
                r#"</api/users?page_size=2&page=1>; rel="first", </api/users?page_size=2&page=2>; rel="prev", </api/users?page_size=2&page=3>; rel="last""#,
            ),
            (
                "page_size=10",
                0,
                r#"</api/users?page_size=10&page=1>; rel="first", </api/users?page_size=10&page=1>; rel="last""#,
            ),
        ];
        for (query, total, want) in cases {
            assert_eq!(
                links("/api/users", query, total).as_deref(),
                Some(want),
                "{query}"
            );
        }
        assert_eq!(links("/api/users", "page=x", 3), None);
    }
}
