//! The SCIM 2.0 service provider (RFC 7643, RFC 7644; SPEC 4b): one per
//! `scim` entry, at `{public_url}/_portcullis/scim/v2/{idp}/`, for the
//! IdP's directory to push users and groups. Authenticated by that entry's
//! tokens only. The proxy hands a request over as a [`ScimRequest`] and
//! writes back the [`ScimResponse`]; everything in between is here and in
//! the store (`store/scim.rs`), which re-provisions the users a change
//! concerns in the same transaction.

pub mod filter;
pub mod patch;
pub mod schemas;

use http::Method;
use scim_v2::filter::Filter;
use serde_json::{Map, Value, json};

use crate::config::{BearerToken, Config, IdentityProvider, ScimFeed};
use crate::provision::{self, ProvisionError, directory};
use crate::store::{
    Linking, Planner, Replan, ScimKind, ScimLookup, ScimRecord, ScimWriteError, ScimWritten, Store,
    StoreError,
};
use schemas::{CORE_GROUP, CORE_USER, ENTERPRISE_USER, ERROR, LIST_RESPONSE, MAX_RESULTS};

/// Largest request body read (a group push with thousands of members fits).
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest filter parsed.
const MAX_FILTER: usize = 4096;
/// Page size when the client names none.
const DEFAULT_COUNT: usize = 100;

/// A SCIM error (RFC 7644 3.12), answered in the SCIM error schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    pub fn invalid_syntax(d: impl Into<String>) -> Self {
        Self::new(400, Some("invalidSyntax"), d)
    }
    pub fn invalid_value(d: impl Into<String>) -> Self {
        Self::new(400, Some("invalidValue"), d)
    }
    pub fn invalid_path(d: impl Into<String>) -> Self {
        Self::new(400, Some("invalidPath"), d)
    }
    pub fn invalid_filter(d: impl Into<String>) -> Self {
        Self::new(400, Some("invalidFilter"), d)
    }
    pub fn no_target(d: impl Into<String>) -> Self {
        Self::new(400, Some("noTarget"), d)
    }
    pub fn mutability(d: impl Into<String>) -> Self {
        Self::new(400, Some("mutability"), d)
    }
    pub fn too_many(d: impl Into<String>) -> Self {
        Self::new(400, Some("tooMany"), d)
    }
    fn not_found(d: impl Into<String>) -> Self {
        Self::new(404, None, d)
    }
    /// The detail prefixed with where in the request it went wrong.
    pub fn at(mut self, place: String) -> Self {
        self.detail = format!("{place}: {}", self.detail);
        self
    }

    fn body(&self) -> Value {
        let mut b =
            json!({"schemas": [ERROR], "status": self.status.to_string(), "detail": self.detail});
        if let Some(t) = self.scim_type {
            b["scimType"] = t.into();
        }
        b
    }
}

/// What the proxy read of a request under the feed's base path.
pub struct ScimRequest<'a> {
    pub method: &'a Method,
    /// The path below `/_portcullis/scim/v2/{idp}/`, e.g. `Users/u_1`.
    pub rest: &'a str,
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub if_match: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// `None`: larger than [`MAX_BODY`] or unreadable.
    pub body: Option<&'a [u8]>,
}

/// The answer, and what the caller must drop from this replica's caches.
#[derive(Debug)]
pub struct ScimResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
    /// Hashed ids of the sessions the change ended.
    pub ended_sessions: Vec<String>,
    /// Users whose memberships or state changed.
    pub users: Vec<String>,
}

impl ScimResponse {
    fn json(status: u16, body: &Value) -> Self {
        ScimResponse {
            status,
            headers: Vec::new(),
            body: Some(body.to_string()),
            ended_sessions: Vec::new(),
            users: Vec::new(),
        }
    }

    fn error(e: &ScimError) -> Self {
        let mut r = Self::json(e.status, &e.body());
        if e.status == 401 {
            r.headers.push(("www-authenticate", "Bearer".into()));
        }
        r
    }
}

/// The base URL of a feed's endpoints, as the directory reaches them.
pub fn base_url(config: &Config, idp: &str) -> String {
    format!(
        "{}{}{idp}",
        config.server.public_url.as_str().trim_end_matches('/'),
        crate::paths::SCIM_PREFIX
    )
}

/// Answers one SCIM request for the feed of `idp`.
pub async fn handle(
    store: &Store,
    config: &Config,
    idp: &str,
    req: ScimRequest<'_>,
) -> ScimResponse {
    let (Some(feed), Some(provider)) = (config.scim_feed(idp), config.identity_provider(idp))
    else {
        return ScimResponse::error(&ScimError::not_found("no SCIM feed here"));
    };
    if BearerToken::matching(&feed.tokens, req.authorization).is_none() {
        return ScimResponse::error(&ScimError::new(
            401,
            None,
            "a valid bearer token of this SCIM feed is required",
        ));
    }
    let ctx = Ctx {
        store,
        config,
        feed,
        idp: provider,
        base: base_url(config, idp),
    };
    match ctx.route(&req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(target: "portcullis::scim", idp, status = e.status, detail = %e.detail, "SCIM request failed");
            } else {
                tracing::info!(target: "portcullis::scim", idp, status = e.status, detail = %e.detail, "SCIM request refused");
            }
            ScimResponse::error(&e)
        }
    }
}

struct Ctx<'a> {
    store: &'a Store,
    config: &'a Config,
    feed: &'a ScimFeed,
    idp: &'a IdentityProvider,
    base: String,
}

fn store_error(e: StoreError) -> ScimError {
    if e.is_unavailable() || matches!(e, StoreError::Contention) {
        ScimError::new(503, None, "the store is unavailable; try again")
    } else {
        tracing::error!(target: "portcullis::scim", error = %e, "store error");
        ScimError::new(500, None, "internal error")
    }
}

fn write_error(e: ScimWriteError<ScimError>) -> ScimError {
    match e {
        ScimWriteError::NotFound => ScimError::not_found("no such resource"),
        ScimWriteError::Stale(v) => ScimError::new(
            412,
            None,
            format!("the resource changed since version W/\"{v}\""),
        ),
        ScimWriteError::Uniqueness(d) => ScimError::new(409, Some("uniqueness"), d),
        ScimWriteError::Invalid(d) => ScimError::invalid_value(d),
        ScimWriteError::Refused(e) => e,
        ScimWriteError::Store(e) => store_error(e),
    }
}

/// `W/"3"` or `"3"`: version 3; `*`: any.
fn parse_if_match(v: Option<&str>) -> Result<Option<i64>, ScimError> {
    let Some(v) = v.map(str::trim) else {
        return Ok(None);
    };
    if v == "*" {
        return Ok(None);
    }
    v.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| {
            ScimError::new(
                412,
                None,
                format!("If-Match {v:?} names no version of this resource"),
            )
        })
}

fn rfc3339(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Ctx<'_> {
    async fn route(&self, req: &ScimRequest<'_>) -> Result<ScimResponse, ScimError> {
        let segments: Vec<&str> = req.rest.trim_end_matches('/').split('/').collect();
        let m = req.method;
        let get = *m == Method::GET || *m == Method::HEAD;
        match segments.as_slice() {
            ["ServiceProviderConfig"] if get => Ok(ScimResponse::json(
                200,
                &schemas::service_provider_config(&self.base),
            )),
            ["ResourceTypes"] if get => Ok(list_of(schemas::resource_types(&self.base))),
            ["ResourceTypes", id] if get => one_of(schemas::resource_types(&self.base), id),
            ["Schemas"] if get => Ok(list_of(schemas::schemas(&self.base))),
            ["Schemas", id] if get => one_of(schemas::schemas(&self.base), id),
            ["ServiceProviderConfig"] | ["ResourceTypes", ..] | ["Schemas", ..] => {
                Err(ScimError::new(405, None, "read-only"))
            }
            [kind @ ("Users" | "Groups")] => {
                let kind = kind_of(kind);
                if get {
                    self.list(&[kind], req.query).await
                } else if *m == Method::POST {
                    self.create(kind, req).await
                } else {
                    Err(ScimError::new(405, None, "GET or POST"))
                }
            }
            [kind @ ("Users" | "Groups"), ".search"] if *m == Method::POST => {
                self.list(&[kind_of(kind)], Some(&search_query(&json_body(req)?)?))
                    .await
            }
            [".search"] if *m == Method::POST => {
                let query = search_query(&json_body(req)?)?;
                self.list(&[ScimKind::User, ScimKind::Group], Some(&query))
                    .await
            }
            [kind @ ("Users" | "Groups"), id] => {
                let kind = kind_of(kind);
                match m.as_str() {
                    "GET" | "HEAD" => self.get(kind, id, req.query).await,
                    "PUT" | "PATCH" => self.replace(kind, id, req).await,
                    "DELETE" => self.delete(kind, id, req).await,
                    _ => Err(ScimError::new(405, None, "GET, PUT, PATCH or DELETE")),
                }
            }
            _ => Err(ScimError::not_found(format!("no endpoint {:?}", req.rest))),
        }
    }

    fn location(&self, kind: ScimKind, id: &str) -> String {
        format!("{}/{}/{id}", self.base, endpoint_of(kind))
    }

    /// The resource as answered: schemas, `meta`, references.
    fn render(&self, kind: ScimKind, rec: &ScimRecord) -> Value {
        let mut r = rec.resource.clone();
        let Some(o) = r.as_object_mut() else {
            return r;
        };
        let (core, resource_type, list_key, target) = match kind {
            ScimKind::User => (CORE_USER, "User", "groups", ScimKind::Group),
            ScimKind::Group => (CORE_GROUP, "Group", "members", ScimKind::User),
        };
        let mut names = vec![Value::from(core)];
        if kind == ScimKind::User && o.contains_key(ENTERPRISE_USER) {
            names.push(ENTERPRISE_USER.into());
        }
        o.insert("schemas".into(), Value::Array(names));
        if let Some(Value::Array(items)) = o.get_mut(list_key) {
            for i in items.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(id) = i.get("value").and_then(Value::as_str) {
                    let loc = self.location(target, id);
                    i.insert("$ref".into(), loc.into());
                }
                let ty = if kind == ScimKind::User {
                    "direct"
                } else {
                    "User"
                };
                i.insert("type".into(), ty.into());
            }
        }
        o.insert(
            "meta".into(),
            json!({
                "resourceType": resource_type,
                "created": rfc3339(rec.created_at),
                "lastModified": rfc3339(rec.updated_at),
                "location": self.location(kind, &rec.id),
                "version": etag(rec.version),
            }),
        );
        r
    }

    fn answer(
        &self,
        status: u16,
        kind: ScimKind,
        rec: &ScimRecord,
        query: Option<&str>,
    ) -> Result<ScimResponse, ScimError> {
        let projection = Projection::parse(query)?;
        let body = projection.apply(self.render(kind, rec));
        let mut r = ScimResponse::json(status, &body);
        r.headers.push(("etag", etag(rec.version)));
        if status == 201 {
            r.headers.push(("location", self.location(kind, &rec.id)));
        }
        Ok(r)
    }

    async fn get(
        &self,
        kind: ScimKind,
        id: &str,
        query: Option<&str>,
    ) -> Result<ScimResponse, ScimError> {
        let rec = self
            .store
            .scim_get(&self.feed.idp, kind, id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ScimError::not_found(format!("no {} {id:?}", endpoint_of(kind))))?;
        self.answer(200, kind, &rec, query)
    }

    /// A list of one resource type, or (`POST /.search` at the root) of
    /// every type, filtered, paged and projected.
    async fn list(
        &self,
        kinds: &[ScimKind],
        query: Option<&str>,
    ) -> Result<ScimResponse, ScimError> {
        let params = Params::parse(query);
        let filter = match params.get("filter") {
            None => None,
            Some(f) if f.len() > MAX_FILTER => {
                return Err(ScimError::invalid_filter(format!(
                    "a filter is at most {MAX_FILTER} characters"
                )));
            }
            Some(f) => Some(
                f.parse::<Filter>()
                    .map_err(|e| ScimError::invalid_filter(format!("filter {f:?}: {e}")))?,
            ),
        };
        let start = match params.get("startIndex") {
            None => 1,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| ScimError::invalid_value("startIndex must be an integer"))?
                .max(1) as usize,
        };
        let count = match params.get("count") {
            None => DEFAULT_COUNT,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| ScimError::invalid_value("count must be an integer"))?
                .clamp(0, MAX_RESULTS as i64) as usize,
        };
        let projection = Projection::parse(query)?;
        let mut matching: Vec<Value> = Vec::new();
        for &kind in kinds {
            let lookup = filter
                .as_ref()
                .and_then(filter::indexed_eq)
                .and_then(|(attr, value)| lookup_for(kind, &attr, value));
            let records = self
                .store
                .scim_list(&self.feed.idp, kind, lookup.as_ref())
                .await
                .map_err(store_error)?;
            matching.extend(
                records
                    .iter()
                    .map(|r| self.render(kind, r))
                    .filter(|r| filter.as_ref().is_none_or(|f| filter::matches(r, f))),
            );
        }
        let total = matching.len();
        let page: Vec<Value> = matching
            .into_iter()
            .skip(start - 1)
            .take(count)
            .map(|r| projection.apply(r))
            .collect();
        Ok(ScimResponse::json(
            200,
            &json!({
                "schemas": [LIST_RESPONSE],
                "totalResults": total,
                "startIndex": start,
                "itemsPerPage": page.len(),
                "Resources": page,
            }),
        ))
    }

    fn planner(
        &self,
    ) -> impl Fn(Replan<'_>) -> Result<provision::Plan, ProvisionError> + Send + Sync + '_ {
        let file_jit = provision::jit_from_config(self.config);
        move |r: Replan<'_>| {
            let jit = provision::merge_jit(self.config, &file_jit, r.jit);
            match (r.existing, r.entry) {
                (Some(e), _) => {
                    let none = Value::Object(Map::new());
                    provision::plan(
                        self.config,
                        self.idp,
                        r.stored_claims.unwrap_or(&none),
                        Some(e),
                        &jit,
                    )
                }
                (None, Some(entry)) => {
                    let claims = directory::claims_for(self.idp, None, entry);
                    provision::plan(self.config, self.idp, &claims, None, &jit)
                }
                (None, None) => Err(ProvisionError::ClaimsNotObject),
            }
        }
    }

    fn linking(&self) -> Linking {
        let m = self.feed.match_claim.text.as_str();
        Linking {
            match_is_identifier: m == self.idp.identifier.text,
            match_is_sub: m == "sub",
        }
    }

    fn written(
        &self,
        status: u16,
        kind: ScimKind,
        w: ScimWritten,
        query: Option<&str>,
    ) -> Result<ScimResponse, ScimError> {
        let mut r = match &w.record {
            Some(rec) => self.answer(status, kind, rec, query)?,
            None => ScimResponse {
                status: 204,
                headers: Vec::new(),
                body: None,
                ended_sessions: Vec::new(),
                users: Vec::new(),
            },
        };
        tracing::info!(
            target: "portcullis::scim",
            idp = %self.feed.idp,
            resource = endpoint_of(kind),
            id = w.record.as_ref().map(|r| r.id.as_str()).unwrap_or("-"),
            users = w.users.len(), sessions_ended = w.ended_sessions.len(),
            audit_events = w.audit.len(),
            "SCIM change applied"
        );
        r.ended_sessions = w.ended_sessions;
        r.users = w.users;
        Ok(r)
    }

    async fn create(
        &self,
        kind: ScimKind,
        req: &ScimRequest<'_>,
    ) -> Result<ScimResponse, ScimError> {
        let body = normalized(kind, json_body(req)?)?;
        let planner = self.planner();
        let planner: &Planner<'_> = &planner;
        let w = self
            .store
            .scim_create::<ScimError>(&self.feed.idp, kind, &body, self.linking(), planner)
            .await
            .map_err(write_error)?;
        self.written(201, kind, w, req.query)
    }

    async fn replace(
        &self,
        kind: ScimKind,
        id: &str,
        req: &ScimRequest<'_>,
    ) -> Result<ScimResponse, ScimError> {
        let body = json_body(req)?;
        let if_match = parse_if_match(req.if_match)?;
        let is_patch = *req.method == Method::PATCH;
        if is_patch {
            let schemas_ok = body
                .get("schemas")
                .and_then(Value::as_array)
                .is_none_or(|s| s.iter().any(|v| v.as_str() == Some(schemas::PATCH_OP)));
            if !schemas_ok {
                return Err(ScimError::invalid_syntax(format!(
                    "a PATCH body's schemas must name {}",
                    schemas::PATCH_OP
                )));
            }
        }
        let edit = move |current: Value| -> Result<Value, ScimError> {
            if is_patch {
                let mut r = writable(kind, current);
                patch::apply(&mut r, &body)?;
                normalized(kind, r)
            } else {
                normalized(kind, body.clone())
            }
        };
        let planner = self.planner();
        let w = self
            .store
            .scim_replace(&self.feed.idp, kind, id, if_match, &edit, &planner)
            .await
            .map_err(write_error)?;
        self.written(200, kind, w, req.query)
    }

    async fn delete(
        &self,
        kind: ScimKind,
        id: &str,
        req: &ScimRequest<'_>,
    ) -> Result<ScimResponse, ScimError> {
        let if_match = parse_if_match(req.if_match)?;
        let planner = self.planner();
        let w = self
            .store
            .scim_delete::<ScimError>(&self.feed.idp, kind, id, if_match, &planner)
            .await
            .map_err(write_error)?;
        self.written(204, kind, w, None)
    }
}

/// A `POST …/.search` body (RFC 7644 3.4.3) as the query string a GET
/// with the same parameters would have.
fn search_query(body: &Value) -> Result<String, ScimError> {
    let names_ok = body
        .get("schemas")
        .and_then(Value::as_array)
        .is_none_or(|s| {
            s.iter()
                .any(|v| v.as_str() == Some(schemas::SEARCH_REQUEST))
        });
    if !names_ok {
        return Err(ScimError::invalid_syntax(format!(
            "a search body's schemas must name {}",
            schemas::SEARCH_REQUEST
        )));
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for key in [
        "filter",
        "startIndex",
        "count",
        "attributes",
        "excludedAttributes",
    ] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                q.append_pair(key, s);
            }
            Some(Value::Number(n)) => {
                q.append_pair(key, &n.to_string());
            }
            Some(Value::Array(names)) => {
                let names: Option<Vec<&str>> = names.iter().map(Value::as_str).collect();
                let names = names.ok_or_else(|| {
                    ScimError::invalid_value(format!("{key} must be a list of attribute names"))
                })?;
                q.append_pair(key, &names.join(","));
            }
            Some(_) => {
                return Err(ScimError::invalid_value(format!(
                    "{key} has the wrong type"
                )));
            }
        }
    }
    Ok(q.finish())
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn kind_of(segment: &str) -> ScimKind {
    if segment == "Users" {
        ScimKind::User
    } else {
        ScimKind::Group
    }
}

fn endpoint_of(kind: ScimKind) -> &'static str {
    match kind {
        ScimKind::User => "Users",
        ScimKind::Group => "Groups",
    }
}

fn lookup_for(kind: ScimKind, attr: &str, value: String) -> Option<ScimLookup> {
    Some(match (kind, attr) {
        (_, "id") => ScimLookup::Id(value),
        (_, "externalid") => ScimLookup::ExternalId(value),
        (ScimKind::User, "username") => ScimLookup::UserName(value),
        (ScimKind::Group, "displayname") => ScimLookup::DisplayName(value),
        (ScimKind::Group, "members" | "members.value") => ScimLookup::Member(value),
        _ => return None,
    })
}

fn list_of(items: Vec<Value>) -> ScimResponse {
    ScimResponse::json(
        200,
        &json!({
            "schemas": [LIST_RESPONSE],
            "totalResults": items.len(),
            "startIndex": 1,
            "itemsPerPage": items.len(),
            "Resources": items,
        }),
    )
}

fn one_of(items: Vec<Value>, id: &str) -> Result<ScimResponse, ScimError> {
    items
        .into_iter()
        .find(|i| i["id"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(id)))
        .map(|i| ScimResponse::json(200, &i))
        .ok_or_else(|| ScimError::not_found(format!("no {id:?}")))
}

fn json_body(req: &ScimRequest<'_>) -> Result<Value, ScimError> {
    if let Some(ct) = req.content_type {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/scim+json" && essence != "application/json" {
            return Err(ScimError::new(
                415,
                None,
                "the body must be application/scim+json",
            ));
        }
    }
    let body = req.body.ok_or_else(|| {
        ScimError::new(
            413,
            None,
            format!("the body is over {MAX_BODY} bytes or unreadable"),
        )
    })?;
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ScimError::invalid_syntax("the body is not a JSON object"));
    }
    Ok(v)
}

/// A stored resource as a PATCH edits it: without what the server keeps
/// (a user's groups, a member's display name and reference).
fn writable(kind: ScimKind, mut r: Value) -> Value {
    if let Some(o) = r.as_object_mut() {
        o.remove("meta");
        match kind {
            ScimKind::User => {
                o.remove("groups");
            }
            ScimKind::Group => {
                if let Some(Value::Array(ms)) = o.get_mut("members") {
                    for m in ms.iter_mut().filter_map(Value::as_object_mut) {
                        m.retain(|k, _| k == "value" || k == "display");
                    }
                }
            }
        }
    }
    r
}

/// `"True"`/`"False"` (Entra) as booleans, wherever a boolean attribute is.
fn booleans(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if (k.eq_ignore_ascii_case("active") || k.eq_ignore_ascii_case("primary"))
                    && let Value::String(s) = v
                {
                    if s.eq_ignore_ascii_case("true") {
                        *v = Value::Bool(true);
                    } else if s.eq_ignore_ascii_case("false") {
                        *v = Value::Bool(false);
                    }
                } else {
                    booleans(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(booleans),
        _ => {}
    }
}

/// A resource as it is stored: checked, read-only and secret attributes
/// dropped, booleans made booleans.
fn normalized(kind: ScimKind, mut v: Value) -> Result<Value, ScimError> {
    booleans(&mut v);
    let o = v
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid_syntax("the resource is not a JSON object"))?;
    // Server-kept, never stored as sent; a password is never kept at all.
    o.retain(|k, _| {
        !["id", "meta", "schemas", "password", "groups"]
            .iter()
            .any(|d| k.eq_ignore_ascii_case(d))
            || (kind == ScimKind::Group && k.eq_ignore_ascii_case("groups"))
    });
    if let Some(x) = o.get("externalId")
        && !x.is_string()
        && !x.is_null()
    {
        return Err(ScimError::invalid_value("externalId must be a string"));
    }
    if o.get("externalId").is_some_and(Value::is_null) {
        o.remove("externalId");
    }
    if let Some(a) = o.get("active")
        && !a.is_boolean()
    {
        return Err(ScimError::invalid_value("active must be a boolean"));
    }
    let required = match kind {
        ScimKind::User => "userName",
        ScimKind::Group => "displayName",
    };
    let value = o
        .get(required)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ScimError::invalid_value(format!("{required} is required")))?
        .to_string();
    o.insert(required.into(), value.into());
    if kind == ScimKind::Group
        && let Some(ms) = o.get_mut("members")
    {
        let Value::Array(items) = ms else {
            return Err(ScimError::invalid_value("members must be a list"));
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut kept = Vec::with_capacity(items.len());
        for m in items.iter() {
            let id = m
                .get("value")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ScimError::invalid_value("every member needs a value"))?;
            if seen.insert(id.to_string()) {
                let mut member = json!({"value": id});
                if let Some(d) = m.get("display").and_then(Value::as_str) {
                    member["display"] = d.into();
                }
                kept.push(member);
            }
        }
        *items = kept;
    }
    Ok(v)
}

/// Query parameters, decoded.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Params {
        Params(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// `attributes` / `excludedAttributes` (RFC 7644 3.9): `id`, `schemas` and
/// `meta` are always returned.
struct Projection {
    only: Option<Vec<AttrName>>,
    except: Vec<AttrName>,
}

/// One name from `attributes`: the extension URN when it names one, the
/// attribute, and the sub-attribute after a dot.
type AttrName = (Option<String>, String, Option<String>);

fn attribute_names(list: Option<&str>) -> Vec<AttrName> {
    list.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            // A whole extension, or `urn:…:User:department`, or a core
            // name with or without the core URN.
            if s.eq_ignore_ascii_case(ENTERPRISE_USER) {
                return (None, ENTERPRISE_USER.to_string(), None);
            }
            let (uri, rest) = [ENTERPRISE_USER, CORE_USER, CORE_GROUP]
                .iter()
                .find(|u| {
                    s.len() > u.len() + 1
                        && s[..u.len()].eq_ignore_ascii_case(u)
                        && s.as_bytes()[u.len()] == b':'
                })
                .map(|u| {
                    (
                        (*u == ENTERPRISE_USER).then(|| ENTERPRISE_USER.to_string()),
                        &s[u.len() + 1..],
                    )
                })
                .unwrap_or((None, s));
            let (name, sub) = match rest.split_once('.') {
                Some((n, sub)) => (n.to_string(), Some(sub.to_string())),
                None => (rest.to_string(), None),
            };
            (uri, name, sub)
        })
        .collect()
}

impl Projection {
    fn parse(query: Option<&str>) -> Result<Projection, ScimError> {
        let p = Params::parse(query);
        Ok(Projection {
            only: p
                .get("attributes")
                .map(|a| attribute_names(Some(a)))
                .filter(|v| !v.is_empty()),
            except: attribute_names(p.get("excludedAttributes")),
        })
    }

    fn apply(&self, mut r: Value) -> Value {
        let Some(o) = r.as_object_mut() else {
            return r;
        };
        let always = |k: &str| {
            ["id", "schemas", "meta"]
                .iter()
                .any(|a| k.eq_ignore_ascii_case(a))
        };
        if let Some(only) = &self.only {
            let mut kept = Map::new();
            for (k, v) in o.iter() {
                if always(k) {
                    kept.insert(k.clone(), v.clone());
                    continue;
                }
                if k == ENTERPRISE_USER {
                    let subs: Vec<&String> = only
                        .iter()
                        .filter(|(u, n, _)| u.is_some() || n == ENTERPRISE_USER)
                        .map(|(_, n, _)| n)
                        .collect();
                    if subs.iter().any(|n| *n == ENTERPRISE_USER) {
                        kept.insert(k.clone(), v.clone());
                    } else if let Some(ext) = v.as_object() {
                        let part: Map<String, Value> = ext
                            .iter()
                            .filter(|(ek, _)| subs.iter().any(|n| n.eq_ignore_ascii_case(ek)))
                            .map(|(a, b)| (a.clone(), b.clone()))
                            .collect();
                        if !part.is_empty() {
                            kept.insert(k.clone(), Value::Object(part));
                        }
                    }
                    continue;
                }
                let wanted: Vec<&Option<String>> = only
                    .iter()
                    .filter(|(u, n, _)| u.is_none() && n.eq_ignore_ascii_case(k))
                    .map(|(_, _, s)| s)
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                if wanted.iter().any(|s| s.is_none()) {
                    kept.insert(k.clone(), v.clone());
                } else {
                    kept.insert(k.clone(), sub_only(v, &wanted));
                }
            }
            *o = kept;
        }
        for (uri, name, sub) in &self.except {
            if always(name) && uri.is_none() {
                continue;
            }
            let target = if uri.is_some() {
                o.get_mut(ENTERPRISE_USER).and_then(Value::as_object_mut)
            } else {
                Some(&mut *o)
            };
            let Some(t) = target else { continue };
            let key = t.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
            if let Some(key) = key {
                match sub {
                    None => {
                        t.remove(&key);
                    }
                    Some(s) => drop_sub(t.get_mut(&key), s),
                }
            }
        }
        r
    }
}

fn sub_only(v: &Value, subs: &[&Option<String>]) -> Value {
    let keep = |o: &Map<String, Value>| -> Value {
        Value::Object(
            o.iter()
                .filter(|(k, _)| {
                    subs.iter()
                        .any(|s| s.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(k)))
                })
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
        )
    };
    match v {
        Value::Object(o) => keep(o),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_object().map(keep).unwrap_or_else(|| i.clone()))
            .collect(),
        other => other.clone(),
    }
}

fn drop_sub(v: Option<&mut Value>, sub: &str) {
    match v {
        Some(Value::Object(o)) => o.retain(|k, _| !k.eq_ignore_ascii_case(sub)),
        Some(Value::Array(items)) => {
            for i in items.iter_mut() {
                drop_sub(Some(i), sub);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_what_directories_send() {
        let u = normalized(
            ScimKind::User,
            json!({"userName": " a@x.test ", "active": "False", "password": "hunter2",
                   "id": "forged", "groups": [{"value": "g"}],
                   "emails": [{"value": "a@x.test", "primary": "True"}]}),
        )
        .unwrap();
        assert_eq!(u["userName"], "a@x.test");
        assert_eq!(u["active"], false);
        assert_eq!(u["emails"][0]["primary"], true);
        for gone in ["password", "id", "groups"] {
            assert!(u.get(gone).is_none(), "{gone} kept");
        }
        let bad = [
            (ScimKind::User, json!({"userName": ""})),
            (ScimKind::User, json!({"name": {"givenName": "x"}})),
            (ScimKind::User, json!({"userName": "a", "active": "maybe"})),
            (ScimKind::User, json!({"userName": "a", "externalId": 7})),
            (
                ScimKind::Group,
                json!({"displayName": "g", "members": "u1"}),
            ),
            (
                ScimKind::Group,
                json!({"displayName": "g", "members": [{"display": "x"}]}),
            ),
            (ScimKind::Group, json!({"members": []})),
        ];
        for (kind, body) in bad {
            let e = normalized(kind, body.clone()).unwrap_err();
            assert_eq!(
                (e.status, e.scim_type),
                (400, Some("invalidValue")),
                "{body}"
            );
        }
    }

    #[test]
    fn projection_keeps_id_schemas_and_meta() {
        let r = json!({"id": "1", "schemas": [CORE_USER], "meta": {}, "userName": "a",
                       "name": {"givenName": "A", "familyName": "B"}, "title": "t",
                       ENTERPRISE_USER: {"department": "Ops", "division": "D"}});
        let only = Projection::parse(Some("attributes=userName,name.givenName,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")).unwrap();
        let v = only.apply(r.clone());
        assert_eq!(v["name"], json!({"givenName": "A"}));
        assert_eq!(v[ENTERPRISE_USER], json!({"department": "Ops"}));
        assert!(v.get("title").is_none() && v.get("id").is_some() && v.get("meta").is_some());
        let except =
            Projection::parse(Some("excludedAttributes=title,id,name.familyName")).unwrap();
        let v = except.apply(r);
        assert!(v.get("title").is_none());
        assert_eq!(v["id"], "1");
        assert_eq!(v["name"], json!({"givenName": "A"}));
    }

    #[test]
    fn if_match_names_a_version() {
        assert_eq!(parse_if_match(Some("W/\"3\"")), Ok(Some(3)));
        assert_eq!(parse_if_match(Some("\"3\"")), Ok(Some(3)));
        assert_eq!(parse_if_match(Some("*")), Ok(None));
        assert_eq!(parse_if_match(None), Ok(None));
        assert_eq!(parse_if_match(Some("W/\"x\"")).unwrap_err().status, 412);
    }
}
