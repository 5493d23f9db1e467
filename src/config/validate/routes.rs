//! `routes`: hosts, prefixes, upstreams, policies, claim headers.

use super::*;

impl Validator<'_> {
    /// A `path_prefix` or public path: compared with normalized request
    /// paths, so it must be one itself, and free of `;` (which servers
    /// read as the start of path parameters).
    pub(super) fn check_request_path(&mut self, place: &str, p: &str) {
        if !p.starts_with('/') {
            self.err(place, "must start with /");
        } else if p.contains(';') {
            self.err(
                place,
                "must not contain ; (servers read it as path parameters)",
            );
        } else {
            match crate::request::path::normalize_path(p.as_bytes()) {
                Ok(n) if n == p || n == format!("{p}/") => {}
                Ok(n) => self.err(place, format!("is not a normalized path; write {n:?}")),
                Err(e) => self.err(place, format!("is not a valid path: {e}")),
            }
        }
    }

    pub(super) fn routes(
        &mut self,
        routes: &[file::RouteSection],
        orgs: &[Organization],
    ) -> Vec<Route> {
        let mut names = HashSet::new();
        let mut places: HashMap<(String, String), usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            if r.name.trim().is_empty() {
                self.err(format!("{path}.name"), "is empty");
            }
            if !names.insert(r.name.clone()) {
                self.err(
                    format!("{path}.name"),
                    format!("duplicate route name {:?}", r.name),
                );
            }
            let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_string());
            self.check_request_path(&format!("{path}.path_prefix"), &path_prefix);
            let mut hosts = Vec::new();
            if r.hosts.is_empty() {
                self.err(format!("{path}.hosts"), "needs at least one host");
            }
            for (j, h) in r.hosts.iter().enumerate() {
                let lower = h.trim_end_matches('.').to_ascii_lowercase();
                let pattern = match lower.strip_prefix("*.") {
                    Some(rest) if valid_domain(rest) => {
                        Some(HostPattern::Wildcard(format!(".{rest}")))
                    }
                    None if (valid_domain(&lower) || valid_host_label(&lower)) => {
                        Some(HostPattern::Exact(lower.clone()))
                    }
                    _ => None,
                };
                match pattern {
                    Some(p) => {
                        let key = (lower.clone(), path_prefix.clone());
                        if let Some(other) = places.insert(key, i) {
                            self.err(
                                format!("{path}.hosts[{j}]"),
                                format!(
                                    "host {h:?} with path_prefix {path_prefix:?} is already served by routes[{other}]"
                                ),
                            );
                        }
                        hosts.push(p);
                    }
                    None => self.err(
                        format!("{path}.hosts[{j}]"),
                        format!("{h:?} is not a host name or *.domain pattern"),
                    ),
                }
            }
            if r.upstreams.is_empty() {
                self.err(format!("{path}.upstreams"), "needs at least one upstream");
            }
            let mut upstreams = Vec::new();
            for (j, u) in r.upstreams.iter().enumerate() {
                let upath = format!("{path}.upstreams[{j}]");
                let host = match u.rsplit_once(':') {
                    Some((h, port)) if port.parse::<u16>().is_ok() => {
                        h.trim_start_matches('[').trim_end_matches(']').to_string()
                    }
                    _ => {
                        self.err(&upath, format!("{u:?} must be host:port"));
                        continue;
                    }
                };
                if let Some(addr) = self.socket_addr(&upath, u) {
                    upstreams.push(Upstream { addr, host });
                }
            }
            let org = r.org.as_ref().and_then(|id| {
                let found = orgs.iter().find(|o| &o.id == id);
                if found.is_none() {
                    self.err(
                        format!("{path}.org"),
                        format!("organization {id:?} is not declared"),
                    );
                }
                found
            });
            if !r.allow_roles.is_empty() && r.org.is_none() {
                self.err(
                    format!("{path}.allow_roles"),
                    "needs `org`: roles belong to an organization",
                );
            }
            if let Some(org) = org {
                for (j, role) in r.allow_roles.iter().enumerate() {
                    if !org.has_role(role) {
                        self.err(
                            format!("{path}.allow_roles[{j}]"),
                            format!("role {role:?} is not declared in organization {:?}", org.id),
                        );
                    }
                }
            }
            let allow_if = r
                .allow_if
                .as_ref()
                .and_then(|t| self.expr(&format!("{path}.allow_if"), t));
            for (j, p) in r.public_paths.iter().enumerate() {
                self.check_request_path(&format!("{path}.public_paths[{j}]"), p);
            }
            if r.public && (r.org.is_some() || !r.allow_roles.is_empty() || r.allow_if.is_some()) {
                self.warn(
                    path.clone(),
                    "public: true, so org, allow_roles and allow_if are never checked",
                );
            }
            let mut claim_headers = Vec::new();
            for (name, text) in &r.claim_headers {
                let hpath = format!("{path}.claim_headers.{name}");
                let header = self.header_name(&hpath, name);
                let expr = self.expr(&hpath, text);
                if let (Some(h), Some(e)) = (header, expr) {
                    claim_headers.push((h, e));
                }
            }
            let step_up = r.step_up.as_ref().map(|su| {
                let spath = format!("{path}.step_up");
                if su.acr_values.is_empty() && su.max_age.is_none() {
                    self.err(spath.clone(), "needs acr_values, max_age or both");
                }
                for (j, v) in su.acr_values.iter().enumerate() {
                    if v.is_empty() || v.contains(char::is_whitespace) {
                        self.err(
                            format!("{spath}.acr_values[{j}]"),
                            format!("{v:?} is not an acr value (no spaces, not empty)"),
                        );
                    }
                }
                if r.public {
                    self.err(spath.clone(), "a public route has no sign-in to step up");
                }
                StepUp {
                    acr_values: su.acr_values.clone(),
                    max_age: su.max_age.as_deref().map(|m| {
                        self.duration(&format!("{spath}.max_age"), Some(m), Duration::ZERO)
                    }),
                }
            });
            out.push(Route {
                index: i,
                name: r.name.clone(),
                hosts,
                path_prefix,
                upstreams,
                upstream_tls: r.upstream_tls,
                org: r.org.clone(),
                allow_roles: r.allow_roles.clone(),
                allow_if,
                public: r.public,
                public_paths: r.public_paths.clone(),
                pass_cookie: r.pass_cookie,
                accept_bearer: r.accept_bearer,
                websockets: r.websockets.unwrap_or(true),
                claim_headers,
                step_up,
            });
        }
        out
    }
}
