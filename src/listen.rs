//! The listening sockets, each bound once at start-up and handed to the
//! server that accepts on it: never bound, closed and bound again. A
//! socket passed by the service manager (systemd socket activation,
//! `LISTEN_FDS`) serves the configured address it is bound to; any other
//! address is bound here. Port 0 binds a free port, and the bound address
//! is the one the gateway reports.

use std::io;
use std::net::{SocketAddr, TcpListener};

/// The sockets passed by the service manager, not yet claimed.
pub struct Inherited(Vec<(SocketAddr, TcpListener)>);

impl Inherited {
    /// Takes the sockets of `LISTEN_FDS` (the variables are removed, so a
    /// child process does not take them too). Call it before any thread
    /// starts. Sockets that are not listening TCP sockets are skipped.
    pub fn from_env() -> Inherited {
        let mut fds = listenfd::ListenFd::from_env();
        let mut found = Vec::new();
        for i in 0..fds.len() {
            match fds.take_tcp_listener(i) {
                Ok(Some(l)) => match l.local_addr() {
                    Ok(addr) => found.push((addr, l)),
                    Err(e) => tracing::warn!(fd = 3 + i, error = %e, "inherited socket skipped"),
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(fd = 3 + i, error = %e, "inherited socket is not a TCP listener")
                }
            }
        }
        Inherited(found)
    }

    /// No inherited sockets.
    pub fn none() -> Inherited {
        Inherited(Vec::new())
    }

    /// Sockets this process bound itself, handed on as if inherited (the
    /// demo binds its ports before it writes the config naming them).
    pub fn from_listeners(listeners: Vec<TcpListener>) -> io::Result<Inherited> {
        listeners
            .into_iter()
            .map(|l| Ok((l.local_addr()?, l)))
            .collect::<io::Result<_>>()
            .map(Inherited)
    }

    /// The inherited socket bound to `addr`, else a new one bound to it;
    /// non-blocking, ready for an async accept loop.
    pub fn take_or_bind(&mut self, addr: SocketAddr) -> io::Result<TcpListener> {
        let listener = match self.0.iter().position(|(a, _)| *a == addr) {
            Some(i) => self.0.swap_remove(i).1,
            None => TcpListener::bind(addr)?,
        };
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// The addresses of inherited sockets that no configured listener
    /// claimed (they are closed when this value is dropped).
    pub fn unclaimed(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|(a, _)| *a).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_a_free_port_that_listens() {
        let l = Inherited::none()
            .take_or_bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        std::net::TcpStream::connect(addr).expect("the bound socket accepts connections");
    }

    #[test]
    fn an_inherited_socket_serves_its_own_address_only() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let mut inherited = Inherited(vec![(addr, held)]);
        // Another address is bound anew; the inherited one stays unclaimed.
        let other = inherited
            .take_or_bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        assert_ne!(other.local_addr().unwrap(), addr);
        assert_eq!(inherited.unclaimed(), vec![addr]);
        // Its own address takes it, without binding again (which would
        // fail: the port is in use).
        let got = inherited.take_or_bind(addr).unwrap();
        assert_eq!(got.local_addr().unwrap(), addr);
        assert!(inherited.unclaimed().is_empty());
    }
}
