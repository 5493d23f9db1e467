//! Configuration reload.

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(reload))
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
pub(super) async fn reload(
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
