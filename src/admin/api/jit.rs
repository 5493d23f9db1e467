//! Just-in-time provisioning lists (email domains, SSO connectors, default
//! roles) in Logto's shapes: the file's entries read-only, the API's in the
//! store. One implementation serves the three lists ([`Kind`] says what
//! differs: how a value is read, which values exist, how an entry is
//! shown); the handlers below only name the list and their OpenAPI shapes.

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(
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
}

/// What differs between the three lists.
pub(super) trait Kind {
    const LIST: JitList;
    /// An entry as the API lists it.
    type Entry: Serialize;

    /// The file's entries (always present, read-only here).
    fn file_entries(org: &Organization) -> BTreeSet<String>;

    /// A value from a request body, checked and in its stored form.
    fn read(config: &Config, org: &Organization, raw: &str) -> ApiResult<String>;

    /// A value from a request path (a DELETE): in its stored form, not
    /// checked (an unknown value is simply not in the list).
    fn key(raw: String) -> String {
        raw
    }

    /// The listed entries for the effective values (sorted).
    fn entries(config: &Config, org: &Organization, values: Vec<String>) -> Vec<Self::Entry>;
}

pub(super) struct EmailDomains;
pub(super) struct SsoConnectors;
pub(super) struct Roles;

impl Kind for EmailDomains {
    const LIST: JitList = JitList::EmailDomains;
    type Entry = EmailDomainEntry;

    fn file_entries(org: &Organization) -> BTreeSet<String> {
        org.jit
            .email_domains
            .iter()
            .map(|d| d.to_lowercase())
            .collect()
    }

    fn read(_: &Config, _: &Organization, raw: &str) -> ApiResult<String> {
        let d = raw.trim().to_lowercase();
        if d.contains("://") || d.contains('@') || !crate::config::valid_domain(&d) {
            return Err(ApiError::bad_request(format!(
                "{raw:?} is not a domain name (a host name with at least one dot, no scheme, no @, at most 128 characters)"
            )));
        }
        Ok(d)
    }

    fn key(raw: String) -> String {
        raw.to_lowercase()
    }

    fn entries(_: &Config, org: &Organization, values: Vec<String>) -> Vec<EmailDomainEntry> {
        values
            .into_iter()
            .map(|d| EmailDomainEntry {
                organization_id: org.id.clone(),
                email_domain: d,
            })
            .collect()
    }
}

impl Kind for SsoConnectors {
    const LIST: JitList = JitList::SsoConnectors;
    type Entry = SsoConnectorEntry;

    fn file_entries(org: &Organization) -> BTreeSet<String> {
        org.jit.sso_connectors.iter().cloned().collect()
    }

    fn read(config: &Config, _: &Organization, raw: &str) -> ApiResult<String> {
        match config.identity_provider(raw) {
            Some(_) => Ok(raw.to_string()),
            None => Err(ApiError::unprocessable(format!(
                "{raw:?} is not an identity provider"
            ))),
        }
    }

    fn entries(config: &Config, _: &Organization, values: Vec<String>) -> Vec<SsoConnectorEntry> {
        values
            .iter()
            .filter_map(|id| config.identity_provider(id))
            .map(|i| SsoConnectorEntry {
                id: i.id.clone(),
                display_name: i.display_name.clone(),
                issuer: i.issuer.clone(),
            })
            .collect()
    }
}

impl Kind for Roles {
    const LIST: JitList = JitList::Roles;
    type Entry = RoleOut;

    fn file_entries(org: &Organization) -> BTreeSet<String> {
        org.jit.default_roles.iter().cloned().collect()
    }

    fn read(_: &Config, org: &Organization, raw: &str) -> ApiResult<String> {
        check_roles(org, std::slice::from_ref(&raw.to_string()))?;
        Ok(raw.to_string())
    }

    fn entries(_: &Config, org: &Organization, values: Vec<String>) -> Vec<RoleOut> {
        roles_of(org)
            .into_iter()
            .filter(|r| values.contains(&r.name))
            .collect()
    }
}

/// Checks that every name is a role of `org`; `Err` names the first that
/// is not (memberships and pre-provisioned users use it too).
pub(super) fn check_roles(org: &Organization, names: &[String]) -> ApiResult<()> {
    match names.iter().find(|n| !org.has_role(n)) {
        Some(name) => Err(ApiError::unprocessable(format!(
            "{name:?} is not a role of this organization"
        ))),
        None => Ok(()),
    }
}

/// File entries plus API entries, sorted.
async fn effective<K: Kind>(shared: &Shared, org: &Organization) -> ApiResult<Vec<String>> {
    let org_id = org.id.clone();
    let api = shared
        .sessions
        .with_store(move |s| async move { s.jit_list(&org_id, K::LIST).await })
        .await?;
    let mut all = K::file_entries(org);
    all.extend(api);
    Ok(all.into_iter().collect())
}

fn read_all<K: Kind>(
    config: &Config,
    org: &Organization,
    raw: &[String],
) -> ApiResult<Vec<String>> {
    raw.iter().map(|r| K::read(config, org, r)).collect()
}

/// `GET`: the effective list, paged.
async fn list<K: Kind>(shared: &Shared, org: &str, p: &Paging) -> ApiResult<Response> {
    let config = shared.runtime.load().config.clone();
    let org = organization(&config, org)?;
    let page = paging(p)?;
    let values = effective::<K>(shared, &org).await?;
    Ok(listed(K::entries(&config, &org, values), page))
}

/// `POST`: adds values (those the file already has are left to it);
/// returns the values that were new to the list.
async fn add<K: Kind>(
    shared: &Shared,
    actor: &Actor,
    org: &Organization,
    raw: &[String],
) -> ApiResult<Vec<String>> {
    let config = shared.runtime.load().config.clone();
    let values = read_all::<K>(&config, org, raw)?;
    let fixed = K::file_entries(org);
    let new: Vec<String> = values.into_iter().filter(|v| !fixed.contains(v)).collect();
    let (org_id, actor) = (org.id.clone(), actor.0.clone());
    Ok(shared
        .sessions
        .with_store(move |s| async move { s.jit_add(&org_id, K::LIST, &new, &actor).await })
        .await?)
}

/// `PUT`: the list becomes `raw`; the file's entries must stay in it.
async fn replace<K: Kind>(
    shared: &Shared,
    actor: &Actor,
    org: &str,
    raw: &[String],
) -> ApiResult<StatusCode> {
    let config = shared.runtime.load().config.clone();
    let org = organization(&config, org)?;
    let wanted: BTreeSet<String> = read_all::<K>(&config, &org, raw)?.into_iter().collect();
    let fixed = K::file_entries(&org);
    if let Some(missing) = fixed.iter().find(|f| !wanted.contains(*f)) {
        return Err(declared_in_file(missing));
    }
    let api: Vec<String> = wanted.difference(&fixed).cloned().collect();
    let (org_id, actor) = (org.id.clone(), actor.0.clone());
    shared
        .sessions
        .with_store(move |s| async move { s.jit_replace(&org_id, K::LIST, &api, &actor).await })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE`: removes one API entry; the file's cannot be removed here.
async fn delete<K: Kind>(
    shared: &Shared,
    actor: &Actor,
    org: &str,
    raw: String,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, org)?;
    let value = K::key(raw);
    if K::file_entries(&org).contains(&value) {
        return Err(declared_in_file(&value));
    }
    let (org_id, actor) = (org.id.clone(), actor.0.clone());
    let removed = shared
        .sessions
        .with_store(move |s| async move { s.jit_delete(&org_id, K::LIST, &value, &actor).await })
        .await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("not in the list"))
    }
}

fn declared_in_file(value: &str) -> ApiError {
    ApiError::conflict(format!(
        "{value:?} is declared in the configuration file and cannot be removed here"
    ))
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
pub(super) async fn list_email_domains(
    State(shared): AppState,
    Path(org): Path<String>,
    Query(p): Query<Paging>,
) -> ApiResult<Response> {
    list::<EmailDomains>(&shared, &org, &p).await
}

#[utoipa::path(post, path = "/api/organizations/{organizationId}/jit/email-domains", tag = "jit",
    params(("organizationId" = String, Path)), request_body = AddEmailDomain,
    responses((status = 201, body = EmailDomainEntry), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn add_email_domain(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<AddEmailDomain>,
) -> ApiResult<(StatusCode, Json<EmailDomainEntry>)> {
    let config = shared.runtime.load().config.clone();
    let org = organization(&config, &org)?;
    // A domain already listed, by the file or the API, is a 422.
    let domain = EmailDomains::read(&config, &org, &body.email_domain)?;
    if effective::<EmailDomains>(&shared, &org)
        .await?
        .contains(&domain)
    {
        return Err(ApiError::unprocessable(format!(
            "{domain:?} is already in the list"
        )));
    }
    add::<EmailDomains>(&shared, &actor, &org, std::slice::from_ref(&domain)).await?;
    let entry = EmailDomains::entries(&config, &org, vec![domain]).remove(0);
    Ok((StatusCode::CREATED, Json(entry)))
}

#[utoipa::path(put, path = "/api/organizations/{organizationId}/jit/email-domains", tag = "jit",
    params(("organizationId" = String, Path)), request_body = ReplaceEmailDomains,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn replace_email_domains(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<ReplaceEmailDomains>,
) -> ApiResult<StatusCode> {
    replace::<EmailDomains>(&shared, &actor, &org, &body.email_domains).await
}

#[utoipa::path(delete, path = "/api/organizations/{organizationId}/jit/email-domains/{emailDomain}", tag = "jit",
    params(("organizationId" = String, Path), ("emailDomain" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_email_domain(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, domain)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete::<EmailDomains>(&shared, &actor, &org, domain).await
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
pub(super) async fn list_sso_connectors(
    State(shared): AppState,
    Path(org): Path<String>,
    Query(p): Query<Paging>,
) -> ApiResult<Response> {
    list::<SsoConnectors>(&shared, &org, &p).await
}

#[utoipa::path(post, path = "/api/organizations/{organizationId}/jit/sso-connectors", tag = "jit",
    params(("organizationId" = String, Path)), request_body = SsoConnectorIds,
    responses((status = 201), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn add_sso_connectors(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<SsoConnectorIds>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    add::<SsoConnectors>(&shared, &actor, &org, &body.sso_connector_ids).await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(put, path = "/api/organizations/{organizationId}/jit/sso-connectors", tag = "jit",
    params(("organizationId" = String, Path)), request_body = SsoConnectorIds,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn replace_sso_connectors(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<SsoConnectorIds>,
) -> ApiResult<StatusCode> {
    replace::<SsoConnectors>(&shared, &actor, &org, &body.sso_connector_ids).await
}

#[utoipa::path(delete, path = "/api/organizations/{organizationId}/jit/sso-connectors/{ssoConnectorId}", tag = "jit",
    params(("organizationId" = String, Path), ("ssoConnectorId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_sso_connector(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete::<SsoConnectors>(&shared, &actor, &org, id).await
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationRoleIds {
    organization_role_ids: Vec<String>,
}

#[utoipa::path(get, path = "/api/organizations/{organizationId}/jit/roles", tag = "jit",
    params(("organizationId" = String, Path), Paging),
    responses((status = 200, body = [RoleOut]), (status = 404, body = ErrorBody)))]
pub(super) async fn list_jit_roles(
    State(shared): AppState,
    Path(org): Path<String>,
    Query(p): Query<Paging>,
) -> ApiResult<Response> {
    list::<Roles>(&shared, &org, &p).await
}

#[utoipa::path(post, path = "/api/organizations/{organizationId}/jit/roles", tag = "jit",
    params(("organizationId" = String, Path)), request_body = OrganizationRoleIds,
    responses((status = 201), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn add_jit_roles(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<OrganizationRoleIds>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    add::<Roles>(&shared, &actor, &org, &body.organization_role_ids).await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(put, path = "/api/organizations/{organizationId}/jit/roles", tag = "jit",
    params(("organizationId" = String, Path)), request_body = OrganizationRoleIds,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn replace_jit_roles(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path(org): Path<String>,
    Body(body): Body<OrganizationRoleIds>,
) -> ApiResult<StatusCode> {
    replace::<Roles>(&shared, &actor, &org, &body.organization_role_ids).await
}

#[utoipa::path(delete, path = "/api/organizations/{organizationId}/jit/roles/{organizationRoleId}", tag = "jit",
    params(("organizationId" = String, Path), ("organizationRoleId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_jit_role(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, role)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete::<Roles>(&shared, &actor, &org, role).await
}
