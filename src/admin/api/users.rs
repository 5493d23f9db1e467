//! Users: pre-provisioning, listing, reading, deleting.

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(list_users, create_user))
        .routes(routes!(get_user, delete_user))
}

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
    /// `false` while the IdP's directory (SCIM) has the user inactive or
    /// deleted: their logins are refused.
    active: bool,
    identities: Vec<IdentityOut>,
    memberships: Vec<MembershipOut>,
}

pub(super) fn membership_out(m: &Membership) -> MembershipOut {
    MembershipOut {
        organization_id: m.org.clone(),
        roles: m.roles.clone(),
        source: m.source.as_str().to_string(),
    }
}

pub(super) fn user_out(u: User) -> UserOut {
    UserOut {
        id: u.id,
        email: u.email,
        name: u.name,
        created_at: u.created_at,
        active: u.active,
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

pub(super) async fn load_user(shared: &Shared, id: &str) -> ApiResult<User> {
    let owned = id.to_string();
    shared
        .sessions
        .with_store(move |s| async move { s.user(&owned).await })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user {id:?}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Only users whose email contains this (any case).
    search: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
}

#[utoipa::path(get, path = "/api/users", tag = "users", params(UserQuery),
    responses((status = 200, body = [UserOut]), (status = 400, body = ErrorBody)))]
pub(super) async fn list_users(
    State(shared): AppState,
    Query(q): Query<UserQuery>,
) -> ApiResult<Response> {
    let page = paging(&Paging {
        page: q.page,
        page_size: q.page_size,
    })?;
    let (offset, limit) = store_bounds(page);
    let search = q.search.filter(|s| !s.trim().is_empty());
    let (users, total) = shared
        .sessions
        .with_store(move |s| async move {
            let search = search.as_deref();
            Ok((
                s.users(search, limit, offset).await?,
                s.count_users_matching(search).await?,
            ))
        })
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
pub(super) async fn create_user(
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
        check_roles(org, &m.roles)?;
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
pub(super) async fn get_user(
    State(shared): AppState,
    Path(id): Path<String>,
) -> ApiResult<Json<UserOut>> {
    Ok(Json(user_out(load_user(&shared, &id).await?)))
}

#[utoipa::path(delete, path = "/api/users/{userId}", tag = "users",
    params(("userId" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_user(
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
