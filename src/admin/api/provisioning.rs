//! The provisioning explainer: the trace a login would produce, and the
//! identity providers it can be asked about.

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(explain))
        .routes(routes!(identity_providers))
}

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

/// An identity provider as the configuration names it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProviderOut {
    id: String,
    display_name: String,
    issuer: String,
    auto_provision: bool,
}

#[utoipa::path(get, path = "/api/provisioning/identity-providers", tag = "provisioning",
    responses((status = 200, body = [IdentityProviderOut])))]
pub(super) async fn identity_providers(State(shared): AppState) -> Json<Vec<IdentityProviderOut>> {
    let config = shared.runtime.load().config.clone();
    Json(
        config
            .identity_providers
            .iter()
            .map(|i| IdentityProviderOut {
                id: i.id.clone(),
                display_name: i.display_name.clone(),
                issuer: i.issuer.clone(),
                auto_provision: i.auto_provision,
            })
            .collect(),
    )
}

#[utoipa::path(post, path = "/api/provisioning/explain", tag = "provisioning",
    request_body = ExplainRequest,
    responses((status = 200, description = "The provisioning trace, as `portcullis explain --json` prints it", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn explain(
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
        Some(id) => {
            let user = load_user(&shared, id).await?;
            let idp_id = idp.id.clone();
            Some(
                shared
                    .sessions
                    .with_store(move |s| async move {
                        crate::login::provision::existing(&s, &user, &idp_id).await
                    })
                    .await?,
            )
        }
        None => None,
    };
    let in_force = config.clone();
    let jit = shared
        .sessions
        .with_store(
            move |s| async move { crate::login::provision::jit_in_force(&s, &in_force).await },
        )
        .await?;
    let plan = provision::plan_traced(&config, &idp, &body.claims, existing.as_ref(), &jit)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(serde_json::to_value(&plan).unwrap_or(Value::Null)))
}
