//! Assembles the Pingora server: the gateway's HTTP and HTTPS listeners,
//! and background tasks (admin listener, reload on SIGHUP) that are plain
//! async code from other modules.

use std::future::Future;
use std::net::TcpListener;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, ListenFds, RunArgs, ShutdownWatch};
use pingora::services::Service;
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

/// The gateway's own listening sockets, bound before the server starts.
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub tls: Option<TcpListener>,
}

/// The proxy service with sockets bound beforehand: they go into Pingora's
/// table of listening sockets (where a graceful upgrade puts the old
/// process's) under the address the service then listens on, so Pingora
/// serves them instead of binding again.
struct Prebound<S> {
    inner: S,
    sockets: Vec<(String, OwnedFd)>,
}

#[async_trait]
impl<S: Service> Service for Prebound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        if let Some(table) = &fds {
            let mut table = table.lock();
            for (addr, fd) in self.sockets.drain(..) {
                if table.get(&addr).is_none() {
                    table.add(addr, fd.into_raw_fd());
                }
            }
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// The address a listener is bound to, as Pingora keys it.
fn key(listener: &TcpListener) -> Result<String, StartError> {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .map_err(StartError::Runtime)
}

/// Runs the gateway until SIGTERM (drain, then exit) or SIGINT.
pub fn run(shared: Arc<Shared>, tasks: Vec<Task>, listeners: Listeners) -> Result<(), StartError> {
    let runtime = shared.runtime.load_full();
    let config = &runtime.config;

    let grace = config.server.grace_period;
    let conf = ServerConf {
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        threads: config.server.threads,
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
    let mut sockets = Vec::new();
    if let Some(l) = listeners.http {
        let addr = key(&l)?;
        proxy.add_listener(ListenerConfig::tcp(addr.clone()).l4_buffer(client_buffers()));
        sockets.push((addr, OwnedFd::from(l)));
    }
    if let (Some(tls), Some(l)) = (&config.server.tls, listeners.tls) {
        let cert = tls.cert.display().to_string();
        let key_path = tls.key.display().to_string();
        let mut settings = TlsSettings::intermediate(&cert, &key_path)
            .map_err(|e| StartError::Tls(e.to_string()))?;
        settings.enable_h2();
        let addr = key(&l)?;
        proxy.add_listener(
            ListenerConfig::tcp(addr.clone())
                .tls(settings)
                .l4_buffer(client_buffers()),
        );
        sockets.push((addr, OwnedFd::from(l)));
    }
    server.add_service(Prebound {
        inner: proxy,
        sockets,
    });
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
        crate::telemetry::flush();
        std::process::exit(0);
    });

    server.run(RunArgs::default());
    Ok(())
}

/// Each client connection's read buffer. Pingora's default (64 KiB) made
/// an idle keep-alive connection cost about 100 KiB of memory: 10,000 of
/// them took a gigabyte (tests/abuse.rs). Request headers have their own
/// growing buffer; this only sizes each read from the socket.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(4096)
}
