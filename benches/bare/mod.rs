//! The bare-engine baseline of the load harness: a Pingora proxy that does
//! what any proxy in front of an app must (one cookie look-up, one header
//! added upstream) and nothing of the gateway's own work, with the engine
//! settings Portcullis runs with (one thread per core, no work stealing).
//! Built from the same lock file, so the ratio to it is the cost of the
//! gateway itself.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = bool;

    fn new_ctx(&self) -> bool {
        false
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut bool) -> Result<bool> {
        // The one cookie look-up any authenticating proxy makes.
        *ctx = session
            .req_header()
            .headers
            .get_all("cookie")
            .iter()
            .any(|v| v.as_bytes().windows(11).any(|w| w == b"_portcullis"));
        Ok(false)
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut bool) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        _: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut bool,
    ) -> Result<()> {
        upstream.insert_header("x-auth-request", if *ctx { "1" } else { "0" })?;
        Ok(())
    }
}

/// Serves on `listen` (binding it with `SO_REUSEPORT`) in front of
/// `upstream` until killed.
pub fn serve(listen: &str, upstream: &str, threads: usize) -> ! {
    let conf = ServerConf {
        threads,
        work_stealing: false,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.to_string(),
        },
    );
    // The harness holds the port with SO_REUSEPORT until the run ends.
    let mut options = pingora::listeners::TcpSocketOptions::default();
    options.so_reuseport = Some(true);
    proxy.add_tcp_with_settings(listen, options);
    server.add_service(proxy);
    server.run_forever()
}
