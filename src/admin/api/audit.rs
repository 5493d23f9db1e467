//! The audit log, filtered by user and organization.

use super::*;

pub(super) fn routes(r: ApiRouter) -> ApiRouter {
    r.routes(routes!(audit_events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    user_id: Option<String>,
    organization_id: Option<String>,
    /// `desc`: newest first; `asc` (the default): oldest first.
    order: Option<String>,
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
    /// `login:<idp>`, `token:<n>` (the admin token's position) or
    /// `scim:<idp>` (that IdP's directory).
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
pub(super) async fn audit_events(
    State(shared): AppState,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let page = paging(&Paging {
        page: q.page.clone(),
        page_size: q.page_size.clone(),
    })?;
    let (offset, limit) = store_bounds(page);
    let newest_first = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order must be asc or desc, not {other:?}"
            )));
        }
    };
    let filter = AuditFilter {
        user_id: q.user_id,
        org_id: q.organization_id,
        limit,
        offset,
        newest_first,
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
