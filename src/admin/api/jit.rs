//! Just-in-time provisioning lists (email domains, SSO connectors, default roles) in Logto's shapes: the file's entries read-only, the API's in the store.

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

/// The file's entries of a list (always present, read-only here).
pub(super) fn file_entries(org: &Organization, list: JitList) -> BTreeSet<String> {
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
pub(super) async fn effective(
    shared: &Shared,
    org: &Organization,
    list: JitList,
) -> ApiResult<Vec<String>> {
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
pub(super) fn check_ids(
    config: &Config,
    org: &Organization,
    list: JitList,
    ids: &[String],
) -> ApiResult<()> {
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
pub(super) fn email_domain(raw: &str) -> ApiResult<String> {
    let d = raw.trim().to_lowercase();
    if d.contains("://") || d.contains('@') || !crate::config::valid_domain(&d) {
        return Err(ApiError::bad_request(format!(
            "{raw:?} is not a domain name (a host name with at least one dot, no scheme, no @, at most 128 characters)"
        )));
    }
    Ok(d)
}

pub(super) async fn replace_list(
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

pub(super) async fn delete_entry(
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

pub(super) async fn add_ids(
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
pub(super) async fn list_email_domains(
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
pub(super) async fn add_email_domain(
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
pub(super) async fn replace_email_domains(
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
pub(super) async fn delete_email_domain(
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
pub(super) async fn list_sso_connectors(
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
pub(super) async fn add_sso_connectors(
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
pub(super) async fn replace_sso_connectors(
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
pub(super) async fn delete_sso_connector(
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
pub(super) async fn list_jit_roles(
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
pub(super) async fn add_jit_roles(
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
pub(super) async fn replace_jit_roles(
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
pub(super) async fn delete_jit_role(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, role)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let org = organization(&shared.runtime.load().config, &org)?;
    delete_entry(&shared, &actor, &org, JitList::Roles, role).await
}
