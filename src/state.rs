//! What the running gateway shares between its listeners: the config in
//! force (swapped whole on reload), metrics, and the in-flight counter
//! that lets SIGTERM finish early once nothing is left to drain.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use crate::assertion::Signer;
use crate::authz::RouteTable;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::session::Sessions;
use crate::store::Store;
use crate::upstream::UpstreamSet;

/// One generation of configuration, with everything derived from it.
/// Requests take an `Arc` to the generation current when they start and
/// keep it to the end, so a reload never changes a request half-way.
pub struct Runtime {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// Indexed like `config.routes`.
    pub upstreams: Vec<UpstreamSet>,
    /// Lower-case names with `_` read as `-`: what a client may not send.
    pub identity_header_names: Vec<String>,
    /// Distinguishes this generation in caches that outlive it (route
    /// verdicts cached on sessions).
    pub generation: u64,
    /// The host of `server.public_url`: it serves `/_portcullis/` even
    /// when no route names it.
    pub public_host: Option<String>,
}

impl Runtime {
    pub fn new(config: Config) -> Runtime {
        let routes = RouteTable::new(&config.routes);
        let upstreams = config.routes.iter().map(|r| UpstreamSet::new(r)).collect();
        // Every route's claim headers too: a client must not be able to
        // send `X-Department` where the gateway would set it, nor anywhere
        // else (public routes, users whose claims lack the value).
        let mut identity_header_names: Vec<String> = config
            .identity_headers
            .all()
            .into_iter()
            .chain(
                config
                    .routes
                    .iter()
                    .flat_map(|r| r.claim_headers.iter().map(|(n, _)| n)),
            )
            .map(|h| h.as_str().to_ascii_lowercase().replace('_', "-"))
            .collect();
        identity_header_names.sort();
        identity_header_names.dedup();
        let public_host = config
            .server
            .public_url
            .host_str()
            .and_then(crate::authz::normalize_host);
        Runtime {
            config: Arc::new(config),
            routes,
            upstreams,
            identity_header_names,
            generation: crate::session::next_generation(),
            public_host,
        }
    }
}

pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub config_path: PathBuf,
    pub sessions: Sessions,
    pub signer: Signer,
    pub oidc: Oidc,
    inflight: AtomicUsize,
}

/// Counts a request from its start to its log line.
pub struct InflightGuard(Arc<Shared>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    pub fn new(
        config: Config,
        config_path: PathBuf,
        sessions: Sessions,
        signer: Signer,
        oidc: Oidc,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            runtime: ArcSwap::from_pointee(Runtime::new(config)),
            metrics: Metrics::new(),
            config_path,
            sessions,
            signer,
            oidc,
            inflight: AtomicUsize::new(0),
        })
    }

    pub fn store(&self) -> &Store {
        self.sessions.store()
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    pub fn track(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
    }

    /// Re-reads the config file. A valid file replaces the running config
    /// for new requests; an invalid one leaves it in place. Either way the
    /// outcome is logged and counted.
    pub async fn reload(self: &Arc<Self>) -> Result<Arc<Config>, ConfigError> {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::Invalid {
                    file: self.config_path.display().to_string(),
                    problems: vec![crate::config::Problem::new(
                        "",
                        format!("loading was interrupted: {e}"),
                    )],
                })
            });
        match loaded {
            Ok(config) => {
                let old = self.runtime.load_full();
                warn_on_restart_only_changes(&old.config, &config);
                for w in &config.warnings {
                    tracing::warn!(target: "portcullis::config", "{w}");
                }
                let runtime = Runtime::new(config);
                let config = runtime.config.clone();
                self.runtime.store(Arc::new(runtime));
                self.metrics.config_reloads.inc();
                tracing::info!(target: "portcullis::config", file = %self.config_path.display(), "configuration reloaded");
                Ok(config)
            }
            Err(e) => {
                self.metrics.config_reload_failures.inc();
                tracing::error!(target: "portcullis::config", error = %e, "configuration reload refused; the running configuration stays in force");
                Err(e)
            }
        }
    }
}

/// Listeners, the store and logging are set up once at start; a reload
/// cannot move them.
fn warn_on_restart_only_changes(old: &Config, new: &Config) {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    }
    if old.server.tls.as_ref().map(|t| (t.listen, &t.cert, &t.key))
        != new.server.tls.as_ref().map(|t| (t.listen, &t.cert, &t.key))
    {
        changed.push("server.tls");
    }
    if old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen) {
        changed.push("admin.listen");
    }
    if old.store.url != new.store.url {
        changed.push("store.url");
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        changed.push("log");
    }
    if old.server.grace_period != new.server.grace_period {
        changed.push("server.grace_period");
    }
    for place in changed {
        tracing::warn!(target: "portcullis::config", "{place} changed: takes effect at the next restart");
    }
}
