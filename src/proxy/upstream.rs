//! Upstream selection: round robin over the addresses resolved when the
//! config was loaded (no DNS on the request path).

use std::collections::HashMap;
use std::net::SocketAddr;

use pingora::lb::LoadBalancer;
use pingora::lb::selection::RoundRobin;

use crate::config::Route;

pub struct UpstreamSet {
    balancer: Option<LoadBalancer<RoundRobin>>,
    /// Address to the host name written in the file (SNI for upstream TLS).
    hosts: HashMap<SocketAddr, String>,
    pub tls: bool,
    pub len: usize,
}

impl UpstreamSet {
    pub fn new(route: &Route) -> UpstreamSet {
        let addrs: Vec<SocketAddr> = route.upstreams.iter().map(|u| u.addr).collect();
        // Addresses are already resolved, so this does no I/O.
        let balancer = LoadBalancer::<RoundRobin>::try_from_iter(addrs.clone()).ok();
        UpstreamSet {
            balancer,
            hosts: route
                .upstreams
                .iter()
                .map(|u| (u.addr, u.host.clone()))
                .collect(),
            tls: route.upstream_tls,
            len: addrs.len(),
        }
    }

    /// The next upstream in turn, with its SNI host name.
    pub fn next(&self) -> Option<(SocketAddr, &str)> {
        let backend = self.balancer.as_ref()?.select(b"", 256)?;
        let addr = *backend.addr.as_inet()?;
        let host = self.hosts.get(&addr).map(String::as_str).unwrap_or("");
        Some((addr, host))
    }
}
