//! Assembles the Pingora server: the gateway's HTTP and HTTPS listeners,
//! and background tasks (admin listener, reload on SIGHUP) that are plain
//! async code from other modules.

use std::future::Future;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};

use super::Gateway;
use crate::state::Shared;

type TaskFn = Box<
    dyn Fn(tokio::sync::watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// A background task that runs until the shutdown watch turns true.
pub struct Task {
    pub name: &'static str,
    run: TaskFn,
}

impl Task {
    pub fn new<F, Fut>(name: &'static str, f: F) -> Task
    where
        F: Fn(tokio::sync::watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Task {
            name,
            run: Box::new(move |rx| Box::pin(f(rx))),
        }
    }
}

struct TaskService(Task);

#[async_trait]
impl BackgroundService for TaskService {
    async fn start(&self, shutdown: ShutdownWatch) {
        (self.0.run)(shutdown).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS listener: {0}")]
    Tls(String),
    #[error("store: {0}")]
    Store(String),
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}

/// Fails early, with a clear message, if a listen address is taken.
pub fn check_bindable(addr: std::net::SocketAddr) -> Result<(), StartError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Runs the gateway until SIGTERM (drain, then exit) or SIGINT.
pub fn run(shared: Arc<Shared>, tasks: Vec<Task>) -> Result<(), StartError> {
    let runtime = shared.runtime.load_full();
    let config = &runtime.config;
    if let Some(addr) = config.server.listen {
        check_bindable(addr)?;
    }
    if let Some(tls) = &config.server.tls {
        check_bindable(tls.listen)?;
    }

    let grace = config.server.grace_period;
    let conf = ServerConf {
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        // One runtime per thread, each serving its own connections: about a
        // third more requests per second than work stealing in the load
        // harness, where tasks moving between threads cost wake-ups.
        work_stealing: false,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(shared.clone()),
        "portcullis gateway",
    );
    if let Some(addr) = config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(tls) = &config.server.tls {
        let cert = tls.cert.display().to_string();
        let key = tls.key.display().to_string();
        let mut settings =
            TlsSettings::intermediate(&cert, &key).map_err(|e| StartError::Tls(e.to_string()))?;
        settings.enable_h2();
        proxy.add_tls_with_settings(&tls.listen.to_string(), None, settings);
    }
    server.add_service(proxy);
    for task in tasks {
        let name = task.name;
        server.add_service(background_service(name, TaskService(task)));
    }

    // Pingora waits out the whole grace period on SIGTERM; exit as soon as
    // the last in-flight request is done instead.
    let mut phases = server.watch_execution_phase();
    let drain_shared = shared.clone();
    std::thread::spawn(move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::GracefulTerminate) => break,
                Ok(_) => continue,
                Err(_) => return,
            }
        }
        let deadline = Instant::now() + grace;
        // Let requests accepted just before the signal register.
        std::thread::sleep(Duration::from_millis(50));
        while drain_shared.inflight() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!(left = drain_shared.inflight(), "drained; exiting");
        std::process::exit(0);
    });

    server.run(RunArgs::default());
    Ok(())
}
