//! Organization memberships: listing members, setting roles, removing.

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(list_members))
        .routes(routes!(put_member, delete_member))
}

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
pub(super) async fn list_members(
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
pub(super) async fn put_member(
    State(shared): AppState,
    Extension(actor): Extension<Actor>,
    Path((org, user)): Path<(String, String)>,
    Body(body): Body<PutRoles>,
) -> ApiResult<Json<MembershipOut>> {
    let config = shared.runtime.load().config.clone();
    let org = organization(&config, &org)?;
    check_roles(&org, &body.roles)?;
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
pub(super) async fn delete_member(
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
