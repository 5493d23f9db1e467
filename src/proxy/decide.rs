//! The one access decision. Every entry point that lets a request through
//! as somebody — the proxied request, forward-auth — asks [`Gateway::decide`]
//! with the route and access that `authz::judge` found, and only writes out
//! what it was told: the counting, logging and policy live here alone.

use std::sync::Arc;

use pingora::http::RequestHeader;

use super::Gateway;
use crate::authz::{Access, Denied, Judged};
use crate::config::{Route, StepUp};
use crate::login;
use crate::page::Reply;
use crate::session::{Principal, cookie};
use crate::state::Runtime;

/// What the gateway decided about one request.
pub enum Decision {
    /// The route or path is public: anyone passes, as nobody.
    Public,
    /// A session (or bearer token) whose user meets the route's policy.
    Allowed(Arc<Principal>),
    /// Authenticated, but the route's policy refuses: 403.
    Denied(Denied),
    /// Meets the policy, but the route wants a stronger or fresher sign-in
    /// (`step_up`) than the session's: a new login at the same IdP, or 401
    /// `insufficient_user_authentication` (RFC 9470).
    StepUp(Arc<Principal>, StepUp),
    /// No credentials, or a session that is unknown, expired or idle.
    Unauthenticated,
    /// A bearer token that does not verify or names no user: 401.
    BadBearer,
    /// A session cookie the gateway cannot have written: 400.
    MalformedCookie,
    /// The session is not cached and the store did not answer: 503.
    StoreUnavailable,
}

impl Decision {
    /// The outcome label of `portcullis_auth_outcomes_total`.
    fn outcome(&self) -> Option<&'static str> {
        Some(match self {
            Decision::Public => return None,
            Decision::Allowed(_) => "allowed",
            Decision::Denied(_) => "denied",
            Decision::StepUp(..) => "step_up",
            Decision::Unauthenticated => "unauthenticated",
            Decision::BadBearer => "bad_bearer",
            Decision::MalformedCookie => "bad_cookie",
            Decision::StoreUnavailable => "store_unavailable",
        })
    }

    /// The fixed answer for a refusal that reads the same at every entry
    /// point; `None` for a pass and for `Unauthenticated`, which each entry
    /// point answers its own way (a redirect, or a 401 with a login link).
    pub fn refusal(&self, runtime: &Runtime) -> Option<Reply> {
        Some(match self {
            Decision::Public
            | Decision::Allowed(_)
            | Decision::Unauthenticated
            | Decision::StepUp(..) => return None,
            Decision::Denied(denied) => Reply::denied(denied),
            Decision::BadBearer => Reply::bad_bearer(),
            Decision::MalformedCookie => {
                Reply::bad_request("The session cookie is malformed; it has been removed.")
                    .with_header("set-cookie", cookie::clear(&runtime.config))
            }
            Decision::StoreUnavailable => {
                Reply::store_unavailable("Sessions cannot be checked right now.")
            }
        })
    }
}

/// Who a request is from, as far as its credentials say.
pub(super) enum Authn {
    Principal(Arc<Principal>),
    Anonymous,
    MalformedCookie,
    StoreUnavailable,
    BadBearer,
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_token(req: &RequestHeader) -> Option<String> {
    let value = req.headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

impl Gateway {
    /// Decides `req` on the route and access `judged` names.
    pub(super) async fn decide(
        &self,
        req: &RequestHeader,
        runtime: &Runtime,
        judged: &Judged,
    ) -> Decision {
        let route = &judged.route;
        let decision = match judged.access {
            Access::Public => Decision::Public,
            Access::Protected => match self.authenticate(req, runtime, Some(route)).await {
                Authn::Principal(p) => match p.verdict(runtime.generation, route) {
                    Ok(()) => match &route.step_up {
                        // Judged on the verified ID token's claims only.
                        Some(su) if !su.met_by(p.acr(), p.auth_time(), crate::store::now()) => {
                            tracing::info!(route = %route.name, user = %p.user_id, acr = ?p.acr(), "step-up needed");
                            Decision::StepUp(p, su.clone())
                        }
                        _ => Decision::Allowed(p),
                    },
                    Err(denied) => {
                        tracing::info!(route = %route.name, user = %p.user_id, requirement = denied.code(), "access denied");
                        Decision::Denied(denied)
                    }
                },
                Authn::Anonymous => Decision::Unauthenticated,
                Authn::BadBearer => Decision::BadBearer,
                Authn::MalformedCookie => Decision::MalformedCookie,
                Authn::StoreUnavailable => Decision::StoreUnavailable,
            },
        };
        if let Some(outcome) = decision.outcome() {
            self.count_outcome(outcome);
        }
        decision
    }

    fn count_outcome(&self, outcome: &'static str) {
        self.shared
            .metrics
            .auth_outcomes
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The session named by the request's cookie, if it is live; on a
    /// route that accepts them, a bearer token instead.
    pub(super) async fn authenticate(
        &self,
        req: &RequestHeader,
        runtime: &Runtime,
        route: Option<&Route>,
    ) -> Authn {
        let config = &runtime.config;
        if route.is_some_and(|r| r.accept_bearer)
            && let Some(token) = bearer_token(req)
        {
            return match login::bearer(&self.shared, runtime, &token).await {
                Ok(p) => Authn::Principal(p),
                Err(login::BearerError::Rejected(why)) => {
                    tracing::info!(reason = %why, "bearer token rejected");
                    Authn::BadBearer
                }
                Err(login::BearerError::Unavailable(why)) => {
                    tracing::warn!(reason = %why, "bearer token could not be checked");
                    Authn::StoreUnavailable
                }
            };
        }
        let header = super::headers::joined_bytes(req, "cookie");
        let id = match cookie::find(header.as_deref(), &config.session.cookie_name) {
            cookie::Found::Id(id) => id,
            cookie::Found::None => return Authn::Anonymous,
            cookie::Found::Malformed => return Authn::MalformedCookie,
        };
        match self
            .shared
            .sessions
            .get(
                &id.hash(),
                config.session.idle_timeout,
                &self.shared.metrics,
            )
            .await
        {
            Ok(Some(p)) => {
                // Due for its IdP's word again: asked in the background,
                // this request goes on as it is.
                login::refresh::after_request(&self.shared, config, &p, crate::store::now());
                Authn::Principal(p)
            }
            Ok(None) => Authn::Anonymous,
            Err(e) => {
                tracing::warn!(error = %e, "session lookup failed");
                Authn::StoreUnavailable
            }
        }
    }
}
