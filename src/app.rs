//! Builds and runs the gateway from a validated config: the listeners
//! (bound once, here), shared state, the admin listener, reload on
//! SIGHUP, then the Pingora server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assertion::Signer;
use crate::oidc::Oidc;
use crate::session::Sessions;
use crate::store::{Store, redacted_url};
use crate::util::Background;

use crate::config::Config;
use crate::listen::Inherited;
use crate::proxy::server::{self, Listeners, StartError, Task};
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

/// The addresses a built gateway listens on (port 0 in the config is the
/// port the system picked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub http: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A gateway ready to serve: store open, every listener bound (so
/// connections already queue), nothing accepted yet. [`Built::run`]
/// serves until shutdown; dropping it closes the listeners.
pub struct Built {
    shared: Arc<Shared>,
    gateway: Listeners,
    admin: Option<std::net::TcpListener>,
}

/// Builds the gateway from a validated config: opens the store, then binds
/// the listeners (or takes them from the service manager, `inherited`).
pub fn build(
    config: Config,
    config_path: PathBuf,
    mut inherited: Inherited,
) -> Result<Built, StartError> {
    let mut bind = |addr: Option<SocketAddr>| -> Result<_, StartError> {
        addr.map(|a| {
            inherited
                .take_or_bind(a)
                .map_err(|source| StartError::Bind {
                    addr: a.to_string(),
                    source,
                })
        })
        .transpose()
    };
    let http = bind(config.server.listen)?;
    let tls = bind(config.server.tls.as_ref().map(|t| t.listen))?;
    let admin = bind(config.admin.as_ref().map(|a| a.listen))?;
    for addr in inherited.unclaimed() {
        tracing::warn!(%addr, "an inherited socket matches no listen address in the configuration; closed");
    }
    drop(inherited);

    let background = Background::start("portcullis-io").map_err(StartError::Runtime)?;
    let (store, signer) = open_store(&config, &background)?;
    let oidc = Oidc::new(background.clone())
        .map_err(|e| StartError::Runtime(std::io::Error::other(e.to_string())))?;
    // Discovery starts now; an IdP that is down does not stop the gateway.
    oidc.warm_up(&config.identity_providers);
    let sessions = Sessions::new(store, background, config.store.cache_ttl);
    let shared = Shared::new(config, config_path, sessions, signer, oidc);
    Ok(Built {
        shared,
        gateway: Listeners { http, tls },
        admin,
    })
}

impl Built {
    /// The addresses the listeners are bound to.
    pub fn addresses(&self) -> Addresses {
        let bound =
            |l: &Option<std::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        Addresses {
            http: bound(&self.gateway.http),
            tls: bound(&self.gateway.tls),
            admin: bound(&self.admin),
        }
    }

    /// Serves until shutdown. `Err` means the gateway could not start.
    pub fn run(self) -> Result<(), StartError> {
        let addresses = self.addresses();
        let Built {
            shared,
            gateway,
            admin,
        } = self;
        sweep_sessions(&shared);
        listen_to_replicas(&shared);
        let runtime = shared.runtime.load_full();
        let mut tasks = Vec::new();
        if let Some(listener) = admin {
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
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "none".to_string(), |a| a.to_string());
        tracing::info!(
            listen = %show(addresses.http),
            tls = %show(addresses.tls),
            admin = %show(addresses.admin),
            routes = runtime.config.routes.len(),
            "portcullis starting"
        );
        drop(runtime);
        server::run(shared, tasks, gateway)
    }
}

/// Runs until shutdown. `Err` means the gateway could not start (exit 2).
/// Sockets passed by the service manager are taken first, before any
/// thread starts.
pub fn run(config: Config, config_path: PathBuf) -> Result<(), StartError> {
    let inherited = Inherited::from_env();
    build(config, config_path, inherited)?.run()
}

/// On PostgreSQL, what the other replicas change (ended sessions, changed
/// users) drops the affected cache entries here as it commits.
fn listen_to_replicas(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let store = shared.store().clone();
    shared.sessions.background().spawn(async move {
        let Some(mut notices) = store.notices() else {
            return;
        };
        while let Some(notice) = notices.recv().await {
            let Some(shared) = weak.upgrade() else { return };
            shared.sessions.apply(notice).await;
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Port 0 in the config: the built gateway reports the ports the
    /// system gave, and they listen before it serves (connections queue).
    #[test]
    fn build_binds_port_zero_and_reports_the_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "server: {{listen: \"127.0.0.1:0\", public_url: \"http://a.test\"}}\n\
             admin: {{listen: \"127.0.0.1:0\", tokens: [\"a-token-of-sixteen-plus\"]}}\n\
             store: {{url: \"sqlite://{}/p.db\"}}\n\
             session: {{secret: \"0123456789abcdef0123456789abcdef\"}}\n",
            dir.path().display()
        );
        let config = Config::from_yaml(
            &yaml,
            std::path::Path::new("t.yaml"),
            &crate::config::Environment::system(),
        )
        .unwrap();
        let built = build(config, dir.path().join("t.yaml"), Inherited::none()).unwrap();
        let a = built.addresses();
        assert_eq!(a.tls, None);
        let (http, admin) = (a.http.unwrap(), a.admin.unwrap());
        assert!(
            http.port() != 0 && admin.port() != 0 && http != admin,
            "{a:?}"
        );
        for addr in [http, admin] {
            std::net::TcpStream::connect(addr).expect("bound and listening");
        }
    }
}
