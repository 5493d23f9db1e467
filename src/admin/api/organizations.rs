//! Organizations and their roles, as the file declares them.

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(list_organizations))
        .routes(routes!(get_organization))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleOut {
    /// The role's name: roles are identified by name.
    id: String,
    pub(super) name: String,
    description: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationOut {
    id: String,
    name: String,
    roles: Vec<RoleOut>,
}

pub(super) fn roles_of(org: &Organization) -> Vec<RoleOut> {
    org.roles
        .iter()
        .map(|r| RoleOut {
            id: r.name.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
        })
        .collect()
}

pub(super) fn org_out(org: &Organization) -> OrganizationOut {
    OrganizationOut {
        id: org.id.clone(),
        name: org.name.clone(),
        roles: roles_of(org),
    }
}

#[utoipa::path(get, path = "/api/organizations", tag = "organizations",
    params(Paging),
    responses((status = 200, body = [OrganizationOut]), (status = 400, body = ErrorBody)))]
pub(super) async fn list_organizations(
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
pub(super) async fn get_organization(
    State(shared): AppState,
    Path(org): Path<String>,
) -> ApiResult<Json<OrganizationOut>> {
    let config = shared.runtime.load().config.clone();
    Ok(Json(org_out(organization(&config, &org)?.as_ref())))
}
