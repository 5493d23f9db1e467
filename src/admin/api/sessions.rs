//! A user's sessions: listing and revoking.

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(list_sessions, revoke_sessions))
}

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
pub(super) async fn list_sessions(
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
pub(super) async fn revoke_sessions(
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
    shared.metrics.count_ended("revoked", hashes.len());
    forget_user(&shared, &id);
    Ok(StatusCode::NO_CONTENT)
}
