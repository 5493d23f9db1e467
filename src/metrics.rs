//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//! Names are stable and prefixed `portcullis_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub idp: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub idp: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyErrorLabels {
    pub idp: String,
    pub org: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_latency: HistogramFamily<RouteLabels>,
    pub auth_outcomes: Family<OutcomeLabels, Counter>,
    pub logins: Family<LoginLabels, Counter>,
    pub provisioning_decisions: Family<DecisionLabels, Counter>,
    pub policy_errors: Family<PolicyErrorLabels, Counter>,
    pub session_cache_hits: Counter,
    pub session_cache_misses: Counter,
    pub session_lookups_shed: Counter,
    pub session_refresh: Family<OutcomeLabels, Counter>,
    pub sessions_ended: Family<ReasonLabels, Counter>,
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub config_reloads: Counter,
    pub config_reload_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let upstream_latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_latency_seconds",
            "Time from choosing an upstream to its response header, by route",
            upstream_latency.clone(),
        );
        let auth_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "auth_outcomes",
            "Authorization decisions on protected routes, by outcome",
            auth_outcomes.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register("logins", "Logins by IdP and outcome", logins.clone());
        let provisioning_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "provisioning_decisions",
            "Membership decisions made at login, by IdP and decision",
            provisioning_decisions.clone(),
        );
        let policy_errors = Family::<PolicyErrorLabels, Counter>::default();
        registry.register(
            "policy_errors",
            "Provisioning expressions that failed at run time",
            policy_errors.clone(),
        );
        let session_cache_hits = Counter::default();
        registry.register(
            "session_cache_hits",
            "Session look-ups answered from the cache",
            session_cache_hits.clone(),
        );
        let session_cache_misses = Counter::default();
        registry.register(
            "session_cache_misses",
            "Session look-ups that went to the store",
            session_cache_misses.clone(),
        );
        let session_lookups_shed = Counter::default();
        registry.register(
            "session_lookups_shed",
            "Requests answered 503 because too many session look-ups were waiting for the store",
            session_lookups_shed.clone(),
        );
        let session_refresh = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "session_refresh",
            "Session refreshes at the IdP, by outcome (refreshed, revoked, no_membership, unreachable, error)",
            session_refresh.clone(),
        );
        let sessions_ended = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sessions_ended",
            "Sessions ended before their lifetime, by reason",
            sessions_ended.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "upgraded_connections_closed",
            "WebSocket and other upgraded connections closed because their session ended or lost access, by reason",
            connections_closed.clone(),
        );
        let config_reloads = Counter::default();
        registry.register(
            "config_reloads",
            "Configuration reloads that took effect",
            config_reloads.clone(),
        );
        let config_reload_failures = Counter::default();
        registry.register(
            "config_reload_failures",
            "Configuration reloads refused because the new file was invalid",
            config_reload_failures.clone(),
        );
        Metrics {
            registry,
            requests,
            upstream_latency,
            auth_outcomes,
            logins,
            provisioning_decisions,
            policy_errors,
            session_cache_hits,
            session_cache_misses,
            session_lookups_shed,
            session_refresh,
            sessions_ended,
            connections_closed,
            config_reloads,
            config_reload_failures,
        }
    }

    pub fn count_refresh(&self, outcome: &str) {
        self.session_refresh
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn count_ended(&self, reason: &str, sessions: usize) {
        self.sessions_ended
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc_by(sessions as u64);
    }

    pub fn count_connection_closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        out
    }
}
