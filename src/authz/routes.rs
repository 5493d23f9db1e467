//! Route selection: by host (exact or `*.domain`), then by the longest
//! `path_prefix` on segment boundaries.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{HostPattern, Route};
use crate::request::path::{under_prefix, under_prefix_ignoring_case};

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<Arc<Route>>>,
    /// Keyed by the suffix, with its leading dot: `.example.com`.
    wildcard: HashMap<String, Vec<Arc<Route>>>,
}

impl RouteTable {
    pub fn new(routes: &[Arc<Route>]) -> RouteTable {
        let mut table = RouteTable::default();
        for route in routes {
            for host in &route.hosts {
                match host {
                    HostPattern::Exact(h) => table
                        .exact
                        .entry(h.clone())
                        .or_default()
                        .push(route.clone()),
                    HostPattern::Wildcard(suffix) => table
                        .wildcard
                        .entry(suffix.clone())
                        .or_default()
                        .push(route.clone()),
                }
            }
        }
        let by_prefix =
            |rs: &mut Vec<Arc<Route>>| rs.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
        table.exact.values_mut().for_each(by_prefix);
        table.wildcard.values_mut().for_each(by_prefix);
        table
    }

    /// Whether any route serves this (normalized) host.
    pub fn knows_host(&self, host: &str) -> bool {
        self.exact.contains_key(host) || self.wildcards(host).next().is_some()
    }

    /// Wildcard buckets covering `host`, with their suffix length: one
    /// look-up per dot in the name.
    fn wildcards<'a>(
        &'a self,
        host: &'a str,
    ) -> impl Iterator<Item = (&'a Vec<Arc<Route>>, usize)> + 'a {
        host.char_indices()
            .filter(|&(i, c)| c == '.' && i > 0)
            .filter_map(move |(i, _)| self.wildcard.get(&host[i..]).map(|rs| (rs, host.len() - i)))
    }

    /// The route for a normalized host and path: the longest matching
    /// `path_prefix`; on a tie, the more specific host pattern (exact beats
    /// any wildcard, a longer wildcard beats a shorter one).
    pub fn lookup<'a>(&'a self, host: &'a str, path: &str) -> Option<&'a Arc<Route>> {
        // Each bucket is sorted by prefix length, so its first match is its best.
        // A protected prefix matches whatever the case (`/ADMIN` is judged
        // as `/admin`); a public one only as written, so case never weakens.
        let first_match = |routes: &'a [Arc<Route>]| {
            routes.iter().find(|r| {
                under_prefix(path, &r.path_prefix)
                    || (!r.public && under_prefix_ignoring_case(path, &r.path_prefix))
            })
        };
        let mut best: Option<(&Arc<Route>, (usize, usize))> = None;
        let buckets = self
            .exact
            .get(host)
            .map(|rs| (rs, usize::MAX))
            .into_iter()
            .chain(self.wildcards(host));
        for (routes, specificity) in buckets {
            if let Some(route) = first_match(routes) {
                let key = (route.path_prefix.len(), specificity);
                if best.is_none_or(|(_, k)| key > k) {
                    best = Some((route, key));
                }
            }
        }
        best.map(|(r, _)| r)
    }
}

/// Which route a host and path select (advisory class: path confusion —
/// a protected prefix reached through case, a sibling segment or a
/// wildcard that is not a label boundary).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_yaml as yaml;

    #[test]
    fn host_then_longest_prefix_on_segment_boundaries() {
        let c = yaml::config(
            r#"routes:
  - {name: app, hosts: [app.example.com], upstreams: ["127.0.0.1:1"], public: true}
  - {name: admin, hosts: [app.example.com], path_prefix: /admin, upstreams: ["127.0.0.1:1"]}
  - {name: admin-api, hosts: [app.example.com], path_prefix: /admin/api, upstreams: ["127.0.0.1:1"]}
  - {name: docs, hosts: [app.example.com], path_prefix: /Docs, upstreams: ["127.0.0.1:1"], public: true}
  - {name: teams, hosts: ["*.apps.example.com"], upstreams: ["127.0.0.1:1"]}
  - {name: deep, hosts: ["*.eu.apps.example.com"], upstreams: ["127.0.0.1:1"]}
  - {name: one-team, hosts: [blue.apps.example.com], upstreams: ["127.0.0.1:1"]}
"#,
        );
        let table = RouteTable::new(&c.routes);
        let cases = [
            ("app.example.com", "/", Some("app")),
            ("app.example.com", "/admin", Some("admin")),
            ("app.example.com", "/admin/", Some("admin")),
            ("app.example.com", "/admin/users", Some("admin")),
            // Segment boundary: a sibling name is not under the prefix.
            ("app.example.com", "/administrator", Some("app")),
            ("app.example.com", "/admin/api/v1", Some("admin-api")),
            ("app.example.com", "/admin/apix", Some("admin")),
            // A protected prefix matches whatever the case…
            ("app.example.com", "/ADMIN/users", Some("admin")),
            ("app.example.com", "/Admin/API/v1", Some("admin-api")),
            // …a public one only as written, so case never weakens.
            ("app.example.com", "/Docs/x", Some("docs")),
            ("app.example.com", "/docs/x", Some("app")),
            // Wildcards: one label or more, never the bare suffix.
            ("red.apps.example.com", "/", Some("teams")),
            ("a.b.apps.example.com", "/", Some("teams")),
            ("apps.example.com", "/", None),
            ("x.eu.apps.example.com", "/", Some("deep")),
            // Exact beats any wildcard.
            ("blue.apps.example.com", "/", Some("one-team")),
            // Not a label boundary.
            ("evilapps.example.com", "/", None),
            ("other.example.com", "/", None),
        ];
        let mut wrong = Vec::new();
        for (host, path, want) in cases {
            let got = table.lookup(host, path).map(|r| r.name.as_str());
            if got != want {
                wrong.push(format!("{host}{path}: got {got:?}, want {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert!(table.knows_host("red.apps.example.com"));
        assert!(!table.knows_host("apps.example.com"));
    }
}
