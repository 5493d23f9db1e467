//! The provisioning explainer: the trace a login would produce, and the
//! identity providers it can be asked about; the preview of a policy
//! change over every stored user (`portcullis plan`).

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(explain))
        .routes(routes!(plan))
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

/// Users a plan answer lists at most (the totals count them all).
const PLAN_USERS_LISTED: usize = 1_000;

/// `POST /api/provisioning/plan`: what the configuration in the body
/// would do to every stored user's memberships at their next login.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanOut {
    /// The users whose memberships would change or who have notes, in
    /// user id order, as `portcullis plan --json` prints them.
    #[schema(value_type = Vec<Object>)]
    users: Vec<crate::provision::preview::UserPreview>,
    /// More users would change than are listed here.
    truncated: bool,
    #[schema(value_type = Object)]
    totals: crate::provision::preview::PreviewTotals,
}

/// One problem of a configuration that does not validate.
#[derive(Serialize, ToSchema)]
pub struct ConfigProblemOut {
    /// YAML path, e.g. `organizations[1].roles`; empty for the file.
    path: String,
    message: String,
}

#[derive(Serialize, ToSchema)]
pub struct InvalidConfigOut {
    code: String,
    message: String,
    errors: Vec<ConfigProblemOut>,
}

#[utoipa::path(post, path = "/api/provisioning/plan", tag = "provisioning",
    request_body(content = String, content_type = "application/yaml",
        description = "A complete configuration file, as `portcullis plan --config` reads it"),
    responses((status = 200, description = "The preview, as `portcullis plan --json` prints it", body = PlanOut),
        (status = 415, body = ErrorBody), (status = 422, body = InvalidConfigOut),
        (status = 503, body = ErrorBody)))]
pub(super) async fn plan(
    State(shared): AppState,
    headers: axum::http::HeaderMap,
    body: String,
) -> Result<Json<PlanOut>, Response> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.contains("yaml") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body is a YAML configuration: send it as application/yaml",
        )
        .into_response());
    }
    // The loader checks the files a configuration names (TLS): off the
    // admin runtime's threads.
    let loaded = tokio::task::spawn_blocking(move || {
        Config::from_yaml(
            &body,
            std::path::Path::new("request body"),
            &crate::config::Environment::system(),
        )
    })
    .await
    .map_err(|e| {
        ApiError::bad_request(format!("the configuration was not read: {e}")).into_response()
    })?;
    let config = match loaded {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let errors = e
                .problems()
                .into_iter()
                .map(|p| ConfigProblemOut {
                    path: p.path,
                    message: p.message,
                })
                .collect();
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(InvalidConfigOut {
                    code: "invalid_config".into(),
                    message: e.to_string(),
                    errors,
                }),
            )
                .into_response());
        }
    };
    let out = shared
        .sessions
        .with_store(move |s| async move {
            let mut users = Vec::new();
            let mut truncated = false;
            let totals = crate::preview::plan_store(
                &s,
                &config,
                |u| {
                    if u.is_quiet() {
                        return;
                    }
                    if users.len() < PLAN_USERS_LISTED {
                        users.push(u.clone());
                    } else {
                        truncated = true;
                    }
                },
                |_, _| {},
            )
            .await?;
            Ok(PlanOut {
                users,
                truncated,
                totals,
            })
        })
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    Ok(Json(out))
}
