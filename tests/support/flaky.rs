//! A loopback relay in front of a server that can go away and come back:
//! while down, every open connection through it is cut and new ones are
//! accepted and closed at once, as when the process behind it is gone.
//! The relay's address never changes, so nothing rebinds a port.

use std::net::SocketAddr;

use tokio::sync::watch;

pub struct Flaky {
    pub addr: SocketAddr,
    down: watch::Sender<bool>,
}

impl Flaky {
    /// Relays `listener`'s connections to `target`.
    pub fn start(listener: tokio::net::TcpListener, target: SocketAddr) -> Flaky {
        let addr = listener.local_addr().unwrap();
        let (down, watch) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue; // dropped: closed at once
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Flaky { addr, down }
    }

    /// Binds an ephemeral loopback port and relays it to `target`.
    pub async fn bind(target: SocketAddr) -> Flaky {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start(listener, target)
    }

    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}
