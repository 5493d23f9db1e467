//! Upstream selection: round robin over the addresses resolved when the
//! config was loaded (no DNS on the request path). Plain data and one
//! atomic counter, so the config generation can hold it without knowing
//! the proxy engine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Route;

pub struct UpstreamSet {
    /// Each address with the host name written in the file (SNI for
    /// upstream TLS).
    upstreams: Vec<(SocketAddr, String)>,
    turn: AtomicUsize,
    pub tls: bool,
    pub len: usize,
}

impl UpstreamSet {
    pub fn new(route: &Route) -> UpstreamSet {
        let upstreams: Vec<(SocketAddr, String)> = route
            .upstreams
            .iter()
            .map(|u| (u.addr, u.host.clone()))
            .collect();
        UpstreamSet {
            len: upstreams.len(),
            upstreams,
            turn: AtomicUsize::new(0),
            tls: route.upstream_tls,
        }
    }

    /// The next upstream in turn, with its SNI host name.
    pub fn next(&self) -> Option<(SocketAddr, &str)> {
        if self.upstreams.is_empty() {
            return None;
        }
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        let (addr, host) = &self.upstreams[i];
        Some((*addr, host.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_turns_and_wraps() {
        let set = UpstreamSet {
            upstreams: vec![
                ("127.0.0.1:1".parse().unwrap(), "a".into()),
                ("127.0.0.1:2".parse().unwrap(), "b".into()),
            ],
            turn: AtomicUsize::new(usize::MAX),
            tls: false,
            len: 2,
        };
        let hosts: Vec<&str> = (0..5).map(|_| set.next().unwrap().1).collect();
        // usize::MAX % 2 == 1, then the counter wraps to 0.
        assert_eq!(hosts, ["b", "a", "b", "a", "b"]);
    }
}
