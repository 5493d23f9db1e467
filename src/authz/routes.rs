//! Route selection: by host (exact or `*.domain`), then by the longest
//! `path_prefix` on segment boundaries.

use std::collections::HashMap;
use std::sync::Arc;

use super::path::{under_prefix, under_prefix_ignoring_case};
use crate::config::{HostPattern, Route};

/// Host as routes compare it: lower-case, no port, no trailing dot.
/// `None` when the value cannot be a host name.
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal, optionally with a port.
        let end = rest.find(']')?;
        let tail = &rest[end + 1..];
        if !(tail.is_empty() || (tail.starts_with(':') && tail[1..].parse::<u16>().is_ok())) {
            return None;
        }
        return Some(format!("[{}]", rest[..end].to_ascii_lowercase()));
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() || port.is_empty() => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization_table() {
        for (raw, expected) in [
            ("Example.COM", Some("example.com")),
            ("example.com.", Some("example.com")),
            ("example.com:8080", Some("example.com")),
            ("example.com.:443", Some("example.com")),
            ("[::1]:8080", Some("[::1]")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("", None),
            ("exa mple.com", None),
            ("example.com:abc", None),
            ("a/b", None),
            ("evil.com\r\nx", None),
        ] {
            assert_eq!(normalize_host(raw).as_deref(), expected, "{raw:?}");
        }
    }
}
