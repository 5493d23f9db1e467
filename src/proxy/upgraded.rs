//! Upgraded connections (WebSockets) live no longer than their session
//! and its access (SPEC 4a). Each one a session opened is registered when
//! the upstream answers 101; a watcher checks every registered session a
//! few times a second through the session cache, so a session ended on
//! this replica (logout, revocation, a failed refresh, user deletion: each
//! drops it from the cache) closes its connections within a fraction of a
//! second, and one ended on another replica within `store.cache_ttl`. A
//! connection whose route the session may no longer use (a role removed,
//! the route gone after a reload) is closed the same way.
//!
//! Closing is a shutdown of the client's socket, which ends Pingora's copy
//! loop in both directions. The socket is named by its descriptor and its
//! kernel cookie (`SO_COOKIE`), checked before the shutdown, so a
//! descriptor reused by another connection is never touched.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pingora::protocols::l4::ext::get_socket_cookie;

use crate::state::Shared;

/// How often the watcher looks at the registered sessions.
const WATCH_EVERY: Duration = Duration::from_millis(100);

struct Conn {
    fd: RawFd,
    session: String,
    route: String,
}

/// The upgraded connections open on this replica, by socket cookie.
#[derive(Default)]
pub(super) struct Upgraded {
    conns: Mutex<HashMap<u64, Conn>>,
}

impl Upgraded {
    /// Registers the client socket `fd` of an upgraded request of
    /// `session` on `route`; the key to unregister it with.
    pub(super) fn register(&self, fd: RawFd, session: &str, route: &str) -> Option<u64> {
        let cookie = get_socket_cookie(fd).ok().filter(|c| *c != 0)?;
        let conn = Conn {
            fd,
            session: session.to_string(),
            route: route.to_string(),
        };
        self.conns.lock().ok()?.insert(cookie, conn);
        Some(cookie)
    }

    pub(super) fn unregister(&self, cookie: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&cookie);
        }
    }

    fn snapshot(&self) -> Vec<(u64, String, String)> {
        self.conns
            .lock()
            .map(|c| {
                c.iter()
                    .map(|(k, c)| (*k, c.session.clone(), c.route.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Shuts the connection down, if its descriptor still names the same
    /// socket; `true` when it did.
    fn close(&self, cookie: u64) -> bool {
        let Some(fd) = self
            .conns
            .lock()
            .ok()
            .and_then(|mut c| c.remove(&cookie))
            .map(|c| c.fd)
        else {
            return false;
        };
        if get_socket_cookie(fd).ok() != Some(cookie) {
            return false;
        }
        nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both).is_ok()
    }

    pub(super) fn len(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// Watches the registered connections until the gateway is gone.
pub(super) fn watch(shared: &Arc<Shared>, upgraded: &Arc<Upgraded>) {
    let (weak_shared, weak): (Weak<Shared>, Weak<Upgraded>) =
        (Arc::downgrade(shared), Arc::downgrade(upgraded));
    shared.sessions.background().spawn(async move {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (Some(shared), Some(upgraded)) = (weak_shared.upgrade(), weak.upgrade()) else {
                return;
            };
            if upgraded.len() > 0 {
                check(&shared, &upgraded).await;
            }
        }
    });
}

async fn check(shared: &Shared, upgraded: &Upgraded) {
    let runtime = shared.runtime.load_full();
    let config = &runtime.config;
    let mut verdicts: HashMap<(String, String), Option<&'static str>> = HashMap::new();
    for (cookie, session, route) in upgraded.snapshot() {
        let key = (session, route);
        if !verdicts.contains_key(&key) {
            let found = shared
                .sessions
                .get(&key.0, config.session.idle_timeout, &shared.metrics)
                .await;
            let reason = match found {
                // The store cannot say: keep it, as requests would be.
                Err(_) => None,
                Ok(None) => Some("session_ended"),
                Ok(Some(p)) => match config.routes.iter().find(|r| r.name == key.1) {
                    None => Some("route_removed"),
                    Some(r) => p
                        .verdict(runtime.generation, r)
                        .err()
                        .map(|_| "access_withdrawn"),
                },
            };
            verdicts.insert(key.clone(), reason);
        }
        if let Some(reason) = verdicts[&key]
            && upgraded.close(cookie)
        {
            tracing::info!(target: "portcullis::session", route = %key.1, reason, "upgraded connection closed");
            shared.metrics.count_connection_closed(reason);
        }
    }
}
