//! Builds and runs the gateway from a validated config: shared state, the
//! admin listener, reload on SIGHUP, then the Pingora server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assertion::Signer;
use crate::oidc::Oidc;
use crate::session::Sessions;
use crate::store::{Store, redacted_url};
use crate::util::Background;

use crate::config::Config;
use crate::proxy::server::{self, StartError, Task};
use crate::state::Shared;

/// How long start-up waits for the store (a database that starts at the
/// same time as the gateway, in a container set).
const STORE_WAIT: Duration = Duration::from_secs(30);

/// Opens the store (retrying while it is unreachable), applies its
/// migrations, and loads or creates the assertion signing key.
pub fn open_store(config: &Config, background: &Background) -> Result<(Store, Signer), StartError> {
    let url = config.store.url.clone();
    let kind = config.store.kind.clone();
    let secret = config.session.secret.clone();
    background.block_on(async move {
        let started = Instant::now();
        let store = loop {
            match Store::open(&url, kind.clone()).await {
                Ok(s) => break s,
                Err(e) if e.is_unavailable() && started.elapsed() < STORE_WAIT => {
                    tracing::warn!(store = %redacted_url(&url), error = %e, "store not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(StartError::Store(format!("{}: {e}", redacted_url(&url)))),
            }
        };
        let signer = crate::assertion::shared_signer(&store, &secret)
            .await
            .map_err(|e| StartError::Store(format!("signing key: {e}")))?;
        tracing::info!(store = %redacted_url(&url), kid = signer.kid(), "store ready");
        Ok((store, signer))
    })
}

/// Runs until shutdown. `Err` means the gateway could not start (exit 2).
pub fn run(config: Config, config_path: PathBuf) -> Result<(), StartError> {
    let background = Background::start("portcullis-io").map_err(StartError::Runtime)?;
    let (store, signer) = open_store(&config, &background)?;
    let oidc = Oidc::new(background.clone())
        .map_err(|e| StartError::Runtime(std::io::Error::other(e.to_string())))?;
    // Discovery starts now; an IdP that is down does not stop the gateway.
    oidc.warm_up(&config.identity_providers);
    let sessions = Sessions::new(store, background, config.store.cache_ttl);
    let shared = Shared::new(config, config_path, sessions, signer, oidc);
    sweep_sessions(&shared);
    let runtime = shared.runtime.load_full();
    let mut tasks = Vec::new();
    if let Some(admin) = &runtime.config.admin {
        let listener =
            std::net::TcpListener::bind(admin.listen).map_err(|source| StartError::Bind {
                addr: admin.listen.to_string(),
                source,
            })?;
        let admin_shared = shared.clone();
        let listener = Arc::new(std::sync::Mutex::new(Some(listener)));
        tasks.push(Task::new("admin", move |shutdown| {
            let shared = admin_shared.clone();
            let listener = listener.lock().ok().and_then(|mut l| l.take());
            async move {
                if let Some(listener) = listener {
                    crate::admin::serve(listener, shared, shutdown).await;
                }
            }
        }));
    }
    watch_sighup(shared.clone());
    for w in &runtime.config.warnings {
        tracing::warn!(target: "portcullis::config", "{w}");
    }
    tracing::info!(
        listen = ?runtime.config.server.listen,
        tls = ?runtime.config.server.tls.as_ref().map(|t| t.listen),
        admin = ?runtime.config.admin.as_ref().map(|a| a.listen),
        routes = runtime.config.routes.len(),
        "portcullis starting"
    );
    drop(runtime);
    server::run(shared, tasks)
}

/// Deletes expired and idle sessions from the store every ten minutes.
fn sweep_sessions(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    shared.sessions.background().spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            let idle = shared.runtime.load().config.session.idle_timeout.as_secs() as i64;
            match shared
                .store()
                .delete_expired_sessions(crate::store::now(), idle)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(target: "portcullis::session", sessions = n, "expired sessions removed"),
                Err(e) => tracing::warn!(target: "portcullis::session", error = %e, "expired sessions not removed"),
            }
        }
    });
}

/// SIGHUP re-reads the config file. The handler is installed before any
/// listener opens, so an early SIGHUP cannot kill the process.
fn watch_sighup(shared: Arc<Shared>) {
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP; reload only through the API");
            return;
        }
    };
    // The thread does nothing but wait for SIGHUP and reload.
    let started = crate::util::spawn_on_own_runtime(async move {
        for _ in signals.forever() {
            tracing::info!(target: "portcullis::config", "SIGHUP: reloading configuration");
            let _ = shared.reload().await;
        }
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "reload runtime could not start");
    }
}
