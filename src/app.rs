//! Builds and runs the gateway from a validated config: shared state, the
//! admin listener, reload on SIGHUP, then the Pingora server.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::proxy::server::{self, StartError, Task};
use crate::state::Shared;

/// Runs until shutdown. `Err` means the gateway could not start (exit 2).
pub fn run(config: Config, config_path: PathBuf) -> Result<(), StartError> {
    let shared = Shared::new(config, config_path);
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
