//! `session`: the secret, the cookie, lifetimes; and whether the cookie reaches every protected route.

use super::*;

impl Validator<'_> {
    /// Warns about protected routes whose host the session cookie cannot
    /// reach: it is set on `public_url`'s host, and on `cookie_domain`.
    pub(super) fn cookie_reach(&mut self, server: &Server, session: &Session, routes: &[Route]) {
        let public = server
            .public_url
            .host_str()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let domain = session
            .cookie_domain
            .as_deref()
            .map(|d| d.trim_start_matches('.').to_ascii_lowercase());
        let within = |name: &str| {
            domain
                .as_deref()
                .is_some_and(|d| name == d || name.ends_with(&format!(".{d}")))
        };
        for route in routes.iter().filter(|r| !r.public) {
            for (j, pattern) in route.hosts.iter().enumerate() {
                let reached = match pattern {
                    HostPattern::Exact(h) => public.as_deref() == Some(h.as_str()) || within(h),
                    HostPattern::Wildcard(suffix) => within(suffix.trim_start_matches('.')),
                };
                if !reached {
                    self.warn(
                        format!("routes[{}].hosts[{j}]", route.index),
                        "the session cookie is set on public_url's host and session.cookie_domain, and neither covers this host: signed-in users will not be recognised here",
                    );
                }
            }
        }
    }

    pub(super) fn session(
        &mut self,
        s: &file::SessionSection,
        server: Option<&Server>,
    ) -> Option<Session> {
        if s.secret.len() < 32 {
            self.err(
                "session.secret",
                format!("must be at least 32 bytes (has {})", s.secret.len()),
            );
        }
        let cookie_name = s
            .cookie_name
            .clone()
            .unwrap_or_else(|| "_portcullis".to_string());
        if cookie_name.is_empty()
            || !cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            self.err(
                "session.cookie_name",
                format!("{cookie_name:?} is not a valid cookie name"),
            );
        }
        if let Some(domain) = &s.cookie_domain {
            let bare = domain.trim_start_matches('.');
            if !valid_domain(bare) {
                self.err(
                    "session.cookie_domain",
                    format!("{domain:?} is not a domain name"),
                );
            } else if let Some(host) = server.and_then(|s| s.public_url.host_str()) {
                let host = host.to_ascii_lowercase();
                let bare = bare.to_ascii_lowercase();
                if host != bare && !host.ends_with(&format!(".{bare}")) {
                    self.warn(
                        "session.cookie_domain",
                        format!("public_url host {host} is not inside {domain}: browsers will drop the cookie"),
                    );
                }
            }
        }
        let lifetime = self.duration(
            "session.lifetime",
            s.lifetime.as_deref(),
            Duration::from_secs(12 * 3600),
        );
        let idle_timeout = self.duration(
            "session.idle_timeout",
            s.idle_timeout.as_deref(),
            Duration::from_secs(3600),
        );
        let refresh_interval = self.duration_or_off(
            "session.refresh_interval",
            s.refresh_interval.as_deref(),
            Duration::from_secs(15 * 60),
        );
        Some(Session {
            secret: s.secret.as_bytes().to_vec(),
            cookie_name,
            cookie_domain: s.cookie_domain.clone(),
            lifetime,
            idle_timeout,
            refresh_interval,
        })
    }
}
