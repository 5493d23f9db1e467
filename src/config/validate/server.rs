//! `server`, `admin`, `store` and `log`: listeners, TLS files, admin tokens, the store URL, logging.

use super::*;

impl Validator<'_> {
    pub(super) fn server(&mut self, s: &file::ServerSection) -> Option<Server> {
        let listen = s
            .listen
            .as_deref()
            .and_then(|l| self.socket_addr("server.listen", l));
        let tls = s.tls.as_ref().and_then(|t| {
            let listen = self.socket_addr("server.tls.listen", &t.listen);
            self.pem_file("server.tls.cert", &t.cert, "CERTIFICATE");
            self.pem_file("server.tls.key", &t.key, "PRIVATE KEY");
            Some(Tls {
                listen: listen?,
                cert: PathBuf::from(&t.cert),
                key: PathBuf::from(&t.key),
            })
        });
        if s.listen.is_none() && s.tls.is_none() {
            self.err("server", "needs `listen`, `tls`, or both");
        }
        let public_url = match url::Url::parse(&s.public_url) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                if u.query().is_some() || u.fragment().is_some() {
                    self.err("server.public_url", "must not have a query or fragment");
                }
                Some(u)
            }
            Ok(_) => {
                self.err(
                    "server.public_url",
                    "must be an absolute http:// or https:// URL",
                );
                None
            }
            Err(e) => {
                self.err("server.public_url", format!("not a URL: {e}"));
                None
            }
        };
        let mut trusted_proxies = Vec::new();
        for (i, p) in s.trusted_proxies.iter().enumerate() {
            let parsed = p
                .parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.err(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{p:?} is not an IP address or CIDR"),
                ),
            }
        }
        let grace_period = match s.grace_period.as_deref() {
            None => Duration::from_secs(10),
            Some(g) => match parse_duration(g) {
                Ok(d) => d,
                Err(e) => {
                    self.err("server.grace_period", e);
                    Duration::from_secs(10)
                }
            },
        };
        let keepalive_timeout = match s.keepalive_timeout.as_deref().map(parse_duration) {
            None => Duration::from_secs(60),
            Some(Ok(d)) if (1..=3600).contains(&d.as_secs()) && d.subsec_nanos() == 0 => d,
            Some(Ok(_)) => {
                self.err(
                    "server.keepalive_timeout",
                    "must be whole seconds between 1s and 1h",
                );
                Duration::from_secs(60)
            }
            Some(Err(e)) => {
                self.err("server.keepalive_timeout", e);
                Duration::from_secs(60)
            }
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let threads = match s.threads {
            None => cores,
            Some(n @ 1..=1024) => n,
            Some(n) => {
                self.err("server.threads", format!("{n} is not between 1 and 1024"));
                cores
            }
        };
        Some(Server {
            listen,
            tls,
            public_url: public_url?,
            trusted_proxies,
            grace_period,
            threads,
            keepalive_timeout,
        })
    }

    pub(super) fn pem_file(&mut self, path: &str, file: &str, label: &str) {
        match std::fs::read_to_string(file) {
            Ok(text) if text.contains("-----BEGIN ") && text.contains(label) => {}
            Ok(_) => self.err(path, format!("{file}: no PEM {label} found")),
            Err(e) => self.err(path, format!("{file}: cannot read: {e}")),
        }
    }

    pub(super) fn admin(&mut self, a: &file::AdminSection) -> Option<Admin> {
        let listen = self.socket_addr("admin.listen", &a.listen);
        let tokens = self.bearer_tokens("admin.tokens", &a.tokens);
        if a.tokens.is_empty() {
            self.warn(
                "admin.tokens",
                "no tokens: every management API call will be refused",
            );
        }
        Some(Admin {
            listen: listen?,
            tokens,
            console: a.console.unwrap_or(true),
        })
    }

    /// Bearer tokens as configured: plain (hashed here) or `sha256:<hex>`.
    pub(super) fn bearer_tokens(&mut self, path: &str, raw: &[String]) -> Vec<BearerToken> {
        let mut tokens = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            let path = format!("{path}[{i}]");
            if let Some(hexed) = t.strip_prefix("sha256:") {
                match hex::decode(hexed) {
                    Ok(bytes) if bytes.len() == 32 => {
                        let mut sha256 = [0u8; 32];
                        sha256.copy_from_slice(&bytes);
                        tokens.push(BearerToken { sha256 });
                    }
                    _ => self.err(path, "sha256: must be followed by 64 hex digits"),
                }
            } else if t.trim().is_empty() {
                self.err(path, "is empty");
            } else {
                if t.len() < 16 {
                    self.warn(path, "short token: use at least 16 random characters");
                }
                tokens.push(BearerToken {
                    sha256: crate::util::sha256(t.as_bytes()),
                });
            }
        }
        tokens
    }

    /// `scim`: one feed per IdP, each with tokens; the IdP learns its
    /// feed's `match` claim so that logins find directory users.
    pub(super) fn scim(
        &mut self,
        raw: &[file::ScimSection],
        idps: &mut [IdentityProvider],
    ) -> Vec<Arc<ScimFeed>> {
        let mut feeds: Vec<Arc<ScimFeed>> = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let path = format!("scim[{i}]");
            let Some(idp) = idps.iter_mut().find(|p| p.id == s.idp) else {
                self.err(
                    format!("{path}.idp"),
                    format!("no identity provider {:?} is declared", s.idp),
                );
                continue;
            };
            if feeds.iter().any(|f| f.idp == s.idp) {
                self.err(
                    format!("{path}.idp"),
                    format!("identity provider {:?} already has a SCIM feed", s.idp),
                );
                continue;
            }
            let tokens = self.bearer_tokens(&format!("{path}.tokens"), &s.tokens);
            if s.tokens.is_empty() {
                self.err(
                    format!("{path}.tokens"),
                    "at least one token is required: the feed is never open",
                );
            }
            let text = s.match_claim.as_deref().unwrap_or("sub");
            let Some(match_claim) = self.expr(&format!("{path}.match"), text) else {
                continue;
            };
            idp.directory_match = Some(match_claim.clone());
            feeds.push(Arc::new(ScimFeed {
                idp: s.idp.clone(),
                tokens,
                match_claim,
            }));
        }
        feeds
    }

    pub(super) fn store(&mut self, s: &file::StoreSection) -> Store {
        let url = s
            .url
            .clone()
            .unwrap_or_else(|| "sqlite://portcullis.db".to_string());
        let kind = if url.starts_with("sqlite:") {
            StoreKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            StoreKind::Postgres
        } else {
            self.err(
                "store.url",
                "must start with sqlite:// or postgres:// (or postgresql://)",
            );
            StoreKind::Sqlite
        };
        let cache_ttl = self.duration(
            "store.cache_ttl",
            s.cache_ttl.as_deref(),
            Duration::from_secs(30),
        );
        Store {
            url,
            kind,
            cache_ttl,
        }
    }

    pub(super) fn log(&mut self, l: &file::LogSection) -> Log {
        let level = l.level.clone().unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.err(
                "log.level",
                format!("{level:?} is not a level (error, warn, info, debug, trace) or filter"),
            );
        }
        Log {
            format: l.format,
            level,
        }
    }
}
