//! The management API under `/api/`: organizations, just-in-time
//! provisioning (Logto's shapes and status codes), users, memberships,
//! sessions, the provisioning explainer, the audit log and config reload.
//! Every handler is documented with `utoipa::path`; the router and the
//! OpenAPI document are built from the same list (`router`), so neither
//! can have a route the other lacks.

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

/// The API's router and its OpenAPI document, from one list of handlers.
pub fn router() -> (axum::Router<Arc<Shared>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_organizations))
        .routes(routes!(get_organization))
        .routes(routes!(
            list_email_domains,
            add_email_domain,
            replace_email_domains
        ))
        .routes(routes!(delete_email_domain))
        .routes(routes!(
            list_sso_connectors,
            add_sso_connectors,
            replace_sso_connectors
        ))
        .routes(routes!(delete_sso_connector))
        .routes(routes!(list_jit_roles, add_jit_roles, replace_jit_roles))
        .routes(routes!(delete_jit_role))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, delete_user))
        .routes(routes!(list_members))
        .routes(routes!(put_member, delete_member))
        .routes(routes!(list_sessions, revoke_sessions))
        .routes(routes!(explain))
        .routes(routes!(audit_events))
        .routes(routes!(reload))
        .split_for_parts()
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

// ---- organizations ----------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleOut {
    /// The role's name: roles are identified by name.
    id: String,
    name: String,
    description: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationOut {
    id: String,
    name: String,
    roles: Vec<RoleOut>,
}

fn roles_of(org: &Organization) -> Vec<RoleOut> {
    org.roles
        .iter()
        .map(|r| RoleOut {
            id: r.name.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
        })
        .collect()
}

fn org_out(org: &Organization) -> OrganizationOut {
    OrganizationOut {
        id: org.id.clone(),
        name: org.name.clone(),
        roles: roles_of(org),
    }
}

#[utoipa::path(get, path = "/api/organizations", tag = "organizations",
    params(Paging),
    responses((status = 200, body = [OrganizationOut]), (status = 400, body = ErrorBody)))]
async fn list_organizations(
    State(shared): AppState,
    Query(p): Query<Paging>,
) -> ApiResult<Response> {
    let config = shared.runtime.load().config.clone();
    let all = config.organizations.iter().map(|o| org_out(o)).collect();
    Ok(listed::<OrganizationOut>(all, paging(&p)?))
}

#[utoipa::path(get, path = "/api/organizations/{organizationId}", tag = "organizations",
    params(("organizationId" = String, Path)),
    responses((status = 200, body = OrganizationOut), (status = 404, body = ErrorBody)))]
async fn get_organization(
    State(shared): AppState,
    Path(org): Path<String>,
) -> ApiResult<Json<OrganizationOut>> {
    let config = shared.runtime.load().config.clone();
    Ok(Json(org_out(organization(&config, &org)?.as_ref())))
}

// ---- just-in-time provisioning -------------------------------------------

/// The file's entries of a list (always present, read-only here).
fn file_entries(org: &Organization, list: JitList) -> BTreeSet<String> {
    match list {
        JitList::EmailDomains => org
            .jit
            .email_domains
            .iter()
            .map(|d| d.to_lowercase())
            .collect(),
        JitList::SsoConnectors => org.jit.sso_connectors.iter().cloned().collect(),
        JitList::Roles => org.jit.default_roles.iter().cloned().collect(),
    }
}

/// File entries plus API entries, sorted.
async fn effective(shared: &Shared, org: &Organization, list: JitList) -> ApiResult<Vec<String>> {
    let org_id = org.id.clone();
    let api = shared
        .sessions
        .with_store(move |s| async move { s.jit_list(&org_id, list).await })
        .await?;
    let mut all = file_entries(org, list);
    all.extend(api);
    Ok(all.into_iter().collect())
}

/// Checks ids for a list; `Err` names the first that does not exist.
fn check_ids(config: &Config, org: &Organization, list: JitList, ids: &[String]) -> ApiResult<()> {
    for id in ids {
        let known = match list {
            JitList::SsoConnectors => config.identity_provider(id).is_some(),
            JitList::Roles => org.has_role(id),
            JitList::EmailDomains => true,
        };
        if !known {
            let what = match list {
                JitList::SsoConnectors => "identity provider",
                _ => "role of this organization",
            };
            return Err(ApiError::unprocessable(format!("{id:?} is not a {what}")));
        }
    }
    Ok(())
}

/// Validates and lower-cases an email domain.
fn email_domain(raw: &str) -> ApiResult<String> {
    let d = raw.trim().to_lowercase();
    if d.contains("://") || d.contains('@') || !crate::config::valid_domain(&d) {
        return Err(ApiError::bad_request(format!(
            "{raw:?} is not a domain name (a host name with at least one dot, no scheme, no @, at most 128 characters)"
        )));
    }
    Ok(d)
}

async fn replace_list(
    shared: &Shared,
    actor: &Actor,
    org: &Organization,
    list: JitList,
    wanted: Vec<String>,
) -> ApiResult<StatusCode> {
    let fixed = file_entries(org, list);
    let wanted: BTreeSet<String> = wanted.into_iter().collect();
    if let Some(missing) = fixed.iter().find(|f| !wanted.contains(*f)) {
        return Err(ApiError::conflict(format!(
            "{missing:?} is declared in the configuration file and cannot be removed here"
        )));
    }
    let api: Vec<String> = wanted.difference(&fixed).cloned().collect();
    let (org_id, actor) = (org.id.clone(), actor.0.clone());
    shared
        .sessions
        .with_store(move |s| async move { s.jit_replace(&org_id, list, &api, &actor).await })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_entry(
    shared: &Shared,
    actor: &Actor,
    org: &Organization,
    list: JitList,
    value: String,
) -> ApiResult<StatusCode> {
    if file_entries(org, list).contains(&value) {
        return Err(ApiError::conflict(format!(
            "{value:?} is declared in the configuration file and cannot be removed here"
        )));
    }
    let (org_id, actor) = (org.id.clone(), actor.0.clone());
    let removed = shared
        .sessions
        .with_store(move |s| async move { s.jit_delete(&org_id, list, &value, &actor).await })
        .await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("not in the list"))
    }
}

async fn add_ids(
    shared: &Shared,
    actor: &Actor,
    org: &Organization,
    list: JitList,
    ids: Vec<String>,
) -> ApiResult<StatusCode> {
    let config = shared.runtime.load().config.clone();
    check_ids(&config, org, list, &ids)?;
    let fixed = file_entries(org, list);
    let new: Vec<String> = ids.into_iter().filter(|i| !fixed.contains(i)).collect();
    let (org_id, actor) = (org.id.clone(), actor.0.clone());
    shared
        .sessions
        .with_store(move |s| async move { s.jit_add(&org_id, list, &new, &actor).await })
        .await?;
    Ok(StatusCode::CREATED)
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailDomainEntry {
    organization_id: String,
    email_domain: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddEmailDomain {
    email_domain: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplaceEmailDomains {
    email_domains: Vec<String>,
}

#[utoipa::path(get, path = "/api/organizations/{organizationId}/jit/email-domains", tag = "jit",
    params(("organizationId" = String, Path), Paging),
    responses((status = 200, body = [EmailDomainEntry]), (status = 404, body = ErrorBody)))]
async fn list_email_domains(
    State(shared): AppState,
    Path(org): Path<String>,
    Query(p): Query<Paging>,
) -> ApiResult<Response> {
    let org = organization(&shared.runtime.load().config, &org)?;
    let page = paging(&p)?;
    let items = effective(&shared, &org, JitList::EmailDomains)
        .await?
        .into_iter()
        .map(|d| EmailDomainEntry {
            organization_id: org.id.clone(),
            email_domain: d,
        })
        .collect();
    Ok(listed::<EmailDomainEntry>(items, page))
}

#[utoipa::path(post, path = "/api/organizations/{organizationId}/jit/email-domains", tag = "jit",
    params(("organizationId" = String, Path)), request_body = AddEmailDomain,
    responses((status = 201, body = EmailDomainEntry), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_email_domain(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<AddEmailDomain>,
) -> ApiResult<(StatusCode, Json<EmailDomainEntry>)> {
    let org = organization(&shared.runtime.load().config, &org)?;
    let domain = email_domain(&body.email_domain)?;
    if effective(&shared, &org, JitList::EmailDomains)
        .await?
        .contains(&domain)
    {
        return Err(ApiError::unprocessable(format!(
            "{domain:?} is already in the list"
        )));
    }
    let (org_id, a, d) = (org.id.clone(), actor.0.clone(), domain.clone());
    shared
        .sessions
        .with_store(
            move |s| async move { s.jit_add(&org_id, JitList::EmailDomains, &[d], &a).await },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EmailDomainEntry {
            organization_id: org.id.clone(),
            email_domain: domain,
        }),
    ))
}

#[utoipa::path(put, path = "/api/organizations/{organizationId}/jit/email-domains", tag = "jit",
    params(("organizationId" = String, Path)), request_body = ReplaceEmailDomains,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn replace_email_domains(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<ReplaceEmailDomains>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    let domains = body
        .email_domains
        .iter()
        .map(|d| email_domain(d))
        .collect::<ApiResult<Vec<_>>>()?;
    replace_list(&shared, &actor, &org, JitList::EmailDomains, domains).await
}

#[utoipa::path(delete, path = "/api/organizations/{organizationId}/jit/email-domains/{emailDomain}", tag = "jit",
    params(("organizationId" = String, Path), ("emailDomain" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_email_domain(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, domain)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    delete_entry(
        &shared,
        &actor,
        &org,
        JitList::EmailDomains,
        domain.to_lowercase(),
    )
    .await
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SsoConnectorEntry {
    /// The IdP's id.
    id: String,
    display_name: String,
    issuer: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SsoConnectorIds {
    sso_connector_ids: Vec<String>,
}

#[utoipa::path(get, path = "/api/organizations/{organizationId}/jit/sso-connectors", tag = "jit",
    params(("organizationId" = String, Path), Paging),
    responses((status = 200, body = [SsoConnectorEntry]), (status = 404, body = ErrorBody)))]
async fn list_sso_connectors(
    State(shared): AppState,
    Path(org): Path<String>,
    Query(p): Query<Paging>,
) -> ApiResult<Response> {
    let config = shared.runtime.load().config.clone();
    let org = organization(&config, &org)?;
    let page = paging(&p)?;
    let items = effective(&shared, &org, JitList::SsoConnectors)
        .await?
        .into_iter()
        .filter_map(|id| config.identity_provider(&id).cloned())
        .map(|i| SsoConnectorEntry {
            id: i.id.clone(),
            display_name: i.display_name.clone(),
            issuer: i.issuer.clone(),
        })
        .collect();
    Ok(listed::<SsoConnectorEntry>(items, page))
}

#[utoipa::path(post, path = "/api/organizations/{organizationId}/jit/sso-connectors", tag = "jit",
    params(("organizationId" = String, Path)), request_body = SsoConnectorIds,
    responses((status = 201), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_sso_connectors(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<SsoConnectorIds>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    add_ids(
        &shared,
        &actor,
        &org,
        JitList::SsoConnectors,
        body.sso_connector_ids,
    )
    .await
}

#[utoipa::path(put, path = "/api/organizations/{organizationId}/jit/sso-connectors", tag = "jit",
    params(("organizationId" = String, Path)), request_body = SsoConnectorIds,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn replace_sso_connectors(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<SsoConnectorIds>,
) -> ApiResult<StatusCode> {
    let config = shared.runtime.load().config.clone();
    let org = organization(&config, &org)?;
    check_ids(
        &config,
        &org,
        JitList::SsoConnectors,
        &body.sso_connector_ids,
    )?;
    replace_list(
        &shared,
        &actor,
        &org,
        JitList::SsoConnectors,
        body.sso_connector_ids,
    )
    .await
}

#[utoipa::path(delete, path = "/api/organizations/{organizationId}/jit/sso-connectors/{ssoConnectorId}", tag = "jit",
    params(("organizationId" = String, Path), ("ssoConnectorId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_sso_connector(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    delete_entry(&shared, &actor, &org, JitList::SsoConnectors, id).await
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationRoleIds {
    organization_role_ids: Vec<String>,
}

#[utoipa::path(get, path = "/api/organizations/{organizationId}/jit/roles", tag = "jit",
    params(("organizationId" = String, Path), Paging),
    responses((status = 200, body = [RoleOut]), (status = 404, body = ErrorBody)))]
async fn list_jit_roles(
    State(shared): AppState,
    Path(org): Path<String>,
    Query(p): Query<Paging>,
) -> ApiResult<Response> {
    let org = organization(&shared.runtime.load().config, &org)?;
    let page = paging(&p)?;
    let names = effective(&shared, &org, JitList::Roles).await?;
    let items = roles_of(&org)
        .into_iter()
        .filter(|r| names.contains(&r.name))
        .collect();
    Ok(listed::<RoleOut>(items, page))
}

#[utoipa::path(post, path = "/api/organizations/{organizationId}/jit/roles", tag = "jit",
    params(("organizationId" = String, Path)), request_body = OrganizationRoleIds,
    responses((status = 201), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_jit_roles(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<OrganizationRoleIds>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    add_ids(
        &shared,
        &actor,
        &org,
        JitList::Roles,
        body.organization_role_ids,
    )
    .await
}

#[utoipa::path(put, path = "/api/organizations/{organizationId}/jit/roles", tag = "jit",
    params(("organizationId" = String, Path)), request_body = OrganizationRoleIds,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn replace_jit_roles(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<OrganizationRoleIds>,
) -> ApiResult<StatusCode> {
    let config = shared.runtime.load().config.clone();
    let org = organization(&config, &org)?;
    check_ids(&config, &org, JitList::Roles, &body.organization_role_ids)?;
    replace_list(
        &shared,
        &actor,
        &org,
        JitList::Roles,
        body.organization_role_ids,
    )
    .await
}

#[utoipa::path(delete, path = "/api/organizations/{organizationId}/jit/roles/{organizationRoleId}", tag = "jit",
    params(("organizationId" = String, Path), ("organizationRoleId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_jit_role(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, role)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    delete_entry(&shared, &actor, &org, JitList::Roles, role).await
}

// ---- users ----------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityOut {
    idp: String,
    subject: Option<String>,
    email: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipOut {
    organization_id: String,
    roles: Vec<String>,
    /// `manual`, `policy` or `jit`.
    source: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserOut {
    id: String,
    email: Option<String>,
    name: Option<String>,
    /// Unix seconds.
    created_at: i64,
    identities: Vec<IdentityOut>,
    memberships: Vec<MembershipOut>,
}

fn membership_out(m: &Membership) -> MembershipOut {
    MembershipOut {
        organization_id: m.org.clone(),
        roles: m.roles.clone(),
        source: m.source.as_str().to_string(),
    }
}

fn user_out(u: User) -> UserOut {
    UserOut {
        id: u.id,
        email: u.email,
        name: u.name,
        created_at: u.created_at,
        identities: u
            .identities
            .into_iter()
            .map(|i| IdentityOut {
                idp: i.idp,
                subject: i.subject,
                email: i.email,
            })
            .collect(),
        memberships: u.memberships.iter().map(membership_out).collect(),
    }
}

async fn load_user(shared: &Shared, id: &str) -> ApiResult<User> {
    let owned = id.to_string();
    shared
        .sessions
        .with_store(move |s| async move { s.user(&owned).await })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user {id:?}")))
}

#[utoipa::path(get, path = "/api/users", tag = "users", params(Paging),
    responses((status = 200, body = [UserOut]), (status = 400, body = ErrorBody)))]
async fn list_users(State(shared): AppState, Query(p): Query<Paging>) -> ApiResult<Response> {
    let page = paging(&p)?;
    let (offset, limit) = store_bounds(page);
    let (users, total) = shared
        .sessions
        .with_store(
            move |s| async move { Ok((s.users(limit, offset).await?, s.count_users().await?)) },
        )
        .await?;
    let items: Vec<UserOut> = users.into_iter().map(user_out).collect();
    Ok(paged(items, page, total))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMembership {
    organization_id: String,
    roles: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    /// The IdP the user will sign in with.
    idp: String,
    /// The user's identifier at the IdP, when known; else the first login
    /// is matched by verified email.
    subject: Option<String>,
    email: String,
    name: Option<String>,
    #[serde(default)]
    memberships: Vec<NewMembership>,
}

#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserOut), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_user(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Body(body): Body<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserOut>)> {
    let config = shared.runtime.load().config.clone();
    if config.identity_provider(&body.idp).is_none() {
        return Err(ApiError::unprocessable(format!(
            "{:?} is not an identity provider",
            body.idp
        )));
    }
    if crate::provision::email_domain(&body.email).is_none() {
        return Err(ApiError::bad_request("email must be an address with one @"));
    }
    let mut memberships = Vec::new();
    for m in body.memberships {
        let org = config.organization(&m.organization_id).ok_or_else(|| {
            ApiError::unprocessable(format!("no organization {:?}", m.organization_id))
        })?;
        check_ids(&config, org, JitList::Roles, &m.roles)?;
        let mut roles = m.roles;
        roles.sort();
        roles.dedup();
        memberships.push(Membership {
            org: m.organization_id,
            roles,
            source: crate::provision::MembershipSource::Manual,
        });
    }
    let new = NewUser {
        idp: body.idp,
        subject: body.subject.filter(|s| !s.is_empty()),
        email: Some(body.email),
        name: body.name,
        memberships,
    };
    let a = actor.0.clone();
    let user = shared
        .sessions
        .with_store(move |s| async move { s.create_user(&new, &a).await })
        .await?;
    Ok((StatusCode::CREATED, Json(user_out(user))))
}

#[utoipa::path(get, path = "/api/users/{userId}", tag = "users",
    params(("userId" = String, Path)),
    responses((status = 200, body = UserOut), (status = 404, body = ErrorBody)))]
async fn get_user(State(shared): AppState, Path(id): Path<String>) -> ApiResult<Json<UserOut>> {
    Ok(Json(user_out(load_user(&shared, &id).await?)))
}

#[utoipa::path(delete, path = "/api/users/{userId}", tag = "users",
    params(("userId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_user(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let (owned, a) = (id.clone(), actor.0.clone());
    let deleted = shared
        .sessions
        .with_store(move |s| async move { s.delete_user(&owned, &a).await })
        .await?;
    forget_user(&shared, &id);
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no user {id:?}")))
    }
}

// ---- memberships ----------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberOut {
    user_id: String,
    email: Option<String>,
    name: Option<String>,
    roles: Vec<String>,
    /// `manual`, `policy` or `jit`.
    source: String,
}

#[utoipa::path(get, path = "/api/organizations/{organizationId}/users", tag = "memberships",
    params(("organizationId" = String, Path), Paging),
    responses((status = 200, body = [MemberOut]), (status = 404, body = ErrorBody)))]
async fn list_members(
    State(shared): AppState,
    Path(org): Path<String>,
    Query(p): Query<Paging>,
) -> ApiResult<Response> {
    let org = organization(&shared.runtime.load().config, &org)?;
    let page = paging(&p)?;
    let id = org.id.clone();
    let members = shared
        .sessions
        .with_store(move |s| async move { s.org_members(&id).await })
        .await?;
    let items = members
        .into_iter()
        .map(|(u, m)| MemberOut {
            user_id: u.id,
            email: u.email,
            name: u.name,
            roles: m.roles,
            source: m.source.as_str().to_string(),
        })
        .collect();
    Ok(listed::<MemberOut>(items, page))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRoles {
    roles: Vec<String>,
}

#[utoipa::path(put, path = "/api/organizations/{organizationId}/users/{userId}", tag = "memberships",
    params(("organizationId" = String, Path), ("userId" = String, Path)), request_body = PutRoles,
    responses((status = 200, body = MembershipOut), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn put_member(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, user)): Path<(String, String)>,
    Body(body): Body<PutRoles>,
) -> ApiResult<Json<MembershipOut>> {
    let config = shared.runtime.load().config.clone();
    let org = organization(&config, &org)?;
    check_ids(&config, &org, JitList::Roles, &body.roles)?;
    if body.roles.is_empty() {
        return Err(ApiError::unprocessable(
            "a membership needs at least one role; DELETE removes it",
        ));
    }
    let (o, u, a) = (org.id.clone(), user.clone(), actor.0.clone());
    let m = shared
        .sessions
        .with_store(move |s| async move { s.set_membership(&u, &o, &body.roles, &a).await })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user {user:?}")))?;
    forget_user(&shared, &user);
    Ok(Json(membership_out(&m)))
}

#[utoipa::path(delete, path = "/api/organizations/{organizationId}/users/{userId}", tag = "memberships",
    params(("organizationId" = String, Path), ("userId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_member(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    let (o, u, a) = (org.id.clone(), user.clone(), actor.0.clone());
    let removed = shared
        .sessions
        .with_store(move |s| async move { s.remove_membership(&u, &o, &a).await })
        .await?;
    forget_user(&shared, &user);
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such membership"))
    }
}

// ---- sessions -------------------------------------------------------------

/// A session as the management API shows it: never its id, only a prefix
/// of the id's hash to tell sessions apart.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SessionSummary)]
pub struct SessionOut {
    id: String,
    idp: String,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
}

impl From<SessionSummary> for SessionOut {
    fn from(s: SessionSummary) -> SessionOut {
        SessionOut {
            id: s.id,
            idp: s.idp,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
        }
    }
}

#[utoipa::path(get, path = "/api/users/{userId}/sessions", tag = "sessions",
    params(("userId" = String, Path)),
    responses((status = 200, body = [SessionOut]), (status = 404, body = ErrorBody)))]
async fn list_sessions(
    State(shared): AppState,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<SessionOut>>> {
    load_user(&shared, &id).await?;
    let owned = id.clone();
    let sessions = shared
        .sessions
        .with_store(move |s| async move { s.user_sessions(&owned).await })
        .await?;
    Ok(Json(sessions.into_iter().map(SessionOut::from).collect()))
}

#[utoipa::path(delete, path = "/api/users/{userId}/sessions", tag = "sessions",
    params(("userId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_sessions(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    load_user(&shared, &id).await?;
    let (owned, a) = (id.clone(), actor.0.clone());
    let hashes = shared
        .sessions
        .with_store(move |s| async move { s.delete_user_sessions(&owned, &a).await })
        .await?;
    shared.sessions.forget(&hashes).await;
    forget_user(&shared, &id);
    Ok(StatusCode::NO_CONTENT)
}

// ---- explain, audit, reload ---------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExplainRequest {
    idp: String,
    /// The claims as the IdP would send them.
    #[schema(value_type = Object)]
    claims: Value,
    /// Plan as for this existing user (their current memberships).
    existing_user_id: Option<String>,
}

#[utoipa::path(post, path = "/api/provisioning/explain", tag = "provisioning",
    request_body = ExplainRequest,
    responses((status = 200, description = "The provisioning trace, as `portcullis explain --json` prints it", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn explain(
    State(shared): AppState,
    Body(body): Body<ExplainRequest>,
) -> ApiResult<Json<Value>> {
    let config = shared.runtime.load().config.clone();
    let idp = config
        .identity_provider(&body.idp)
        .cloned()
        .ok_or_else(|| {
            ApiError::unprocessable(format!("{:?} is not an identity provider", body.idp))
        })?;
    let existing = match &body.existing_user_id {
        Some(id) => Some(crate::login::provision::existing(
            &load_user(&shared, id).await?,
            &idp.id,
        )),
        None => None,
    };
    let in_force = config.clone();
    let jit = shared
        .sessions
        .with_store(
            move |s| async move { crate::login::provision::jit_in_force(&s, &in_force).await },
        )
        .await?;
    let plan = provision::plan(&config, &idp, &body.claims, existing.as_ref(), &jit)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(serde_json::to_value(&plan).unwrap_or(Value::Null)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    user_id: Option<String>,
    organization_id: Option<String>,
    page: Option<String>,
    #[serde(rename = "page_size")]
    page_size: Option<String>,
}

/// One entry of the audit log: who did what to whom, before and after.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AuditEvent)]
pub struct AuditEventOut {
    id: i64,
    /// Unix seconds.
    at: i64,
    /// `login:<idp>` or `token:<n>` (the admin token's position).
    actor: String,
    action: String,
    user_id: Option<String>,
    organization_id: Option<String>,
    before: Option<Value>,
    after: Option<Value>,
}

impl From<AuditEvent> for AuditEventOut {
    fn from(e: AuditEvent) -> AuditEventOut {
        AuditEventOut {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            user_id: e.user_id,
            organization_id: e.organization_id,
            before: e.before,
            after: e.after,
        }
    }
}

#[utoipa::path(get, path = "/api/audit-events", tag = "audit", params(AuditQuery),
    responses((status = 200, body = [AuditEventOut]), (status = 400, body = ErrorBody)))]
async fn audit_events(State(shared): AppState, Query(q): Query<AuditQuery>) -> ApiResult<Response> {
    let page = paging(&Paging {
        page: q.page.clone(),
        page_size: q.page_size.clone(),
    })?;
    let (offset, limit) = store_bounds(page);
    let filter = AuditFilter {
        user_id: q.user_id,
        org_id: q.organization_id,
        limit,
        offset,
    };
    let (events, total) = shared
        .sessions
        .with_store(move |s| async move {
            Ok((
                s.audit_events(&filter).await?,
                s.count_audit_events(&filter).await?,
            ))
        })
        .await?;
    let events: Vec<AuditEventOut> = events.into_iter().map(AuditEventOut::from).collect();
    Ok(paged(events, page, total))
}

#[derive(Serialize, ToSchema)]
pub struct ReloadOut {
    status: String,
    routes: usize,
    organizations: usize,
    identity_providers: usize,
}

#[utoipa::path(post, path = "/api/config/reload", tag = "config",
    responses((status = 200, body = ReloadOut), (status = 422, body = ErrorBody)))]
async fn reload(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<ReloadOut>> {
    let result = shared.reload().await;
    let (action, after) = match &result {
        Ok(c) => (
            "config.reloaded",
            serde_json::json!({"routes": c.routes.len(), "organizations": c.organizations.len()}),
        ),
        Err(e) => (
            "config.reload_refused",
            serde_json::json!({"error": e.to_string()}),
        ),
    };
    let event = AuditEvent::new(
        crate::store::now(),
        &actor.0,
        action,
        None,
        None,
        None,
        Some(after),
    );
    if let Err(e) = shared
        .sessions
        .with_store(move |s| async move { s.record(&event).await })
        .await
    {
        // The reload itself does not depend on the store.
        tracing::warn!(target: "portcullis::admin", error = %e, "reload not written to the audit log");
    }
    match result {
        Ok(c) => Ok(Json(ReloadOut {
            status: "reloaded".into(),
            routes: c.routes.len(),
            organizations: c.organizations.len(),
            identity_providers: c.identity_providers.len(),
        })),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            e.to_string(),
        )),
    }
}
