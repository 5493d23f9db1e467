//! `organizations`: ids, roles, just-in-time rules and what they refer to.

use super::*;

impl Validator<'_> {
    pub(super) fn organizations(&mut self, orgs: &[file::OrgSection]) -> Vec<Organization> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, o) in orgs.iter().enumerate() {
            let path = format!("organizations[{i}]");
            if !valid_id(&o.id) {
                self.err(
                    format!("{path}.id"),
                    format!("{:?} must match [a-z0-9][a-z0-9._-]{{0,63}}", o.id),
                );
            }
            if !seen.insert(o.id.clone()) {
                self.err(
                    format!("{path}.id"),
                    format!("duplicate organization id {:?}", o.id),
                );
            }
            let mut role_names = HashSet::new();
            let mut roles = Vec::new();
            for (j, r) in o.roles.iter().enumerate() {
                let name = r.name.trim();
                if name.is_empty() || name != r.name {
                    self.err(
                        format!("{path}.roles[{j}].name"),
                        "must be non-empty, without leading or trailing spaces",
                    );
                } else if name.contains(',') {
                    self.err(
                        format!("{path}.roles[{j}].name"),
                        "must not contain a comma (roles are sent comma-separated)",
                    );
                }
                if !role_names.insert(r.name.clone()) {
                    self.err(
                        format!("{path}.roles[{j}].name"),
                        format!("duplicate role {:?}", r.name),
                    );
                }
                roles.push(Role {
                    name: r.name.clone(),
                    description: r.description.clone(),
                });
            }
            if roles.is_empty() {
                self.warn(
                    format!("{path}.roles"),
                    "no roles: nobody can be provisioned into this organization",
                );
            }
            let mut jit = Jit::default();
            if let Some(j) = &o.jit {
                for (k, d) in j.email_domains.iter().enumerate() {
                    let lower = d.to_ascii_lowercase();
                    if !valid_domain(&lower) {
                        self.err(
                            format!("{path}.jit.email_domains[{k}]"),
                            format!("{d:?} is not a domain name"),
                        );
                    }
                    if !jit.email_domains.contains(&lower) {
                        jit.email_domains.push(lower);
                    }
                }
                for (k, r) in j.default_roles.iter().enumerate() {
                    if !role_names.contains(r) {
                        self.err(
                            format!("{path}.jit.default_roles[{k}]"),
                            format!("role {r:?} is not declared in organization {:?}", o.id),
                        );
                    }
                    if !jit.default_roles.contains(r) {
                        jit.default_roles.push(r.clone());
                    }
                }
                for c in &j.sso_connectors {
                    if !jit.sso_connectors.contains(c) {
                        jit.sso_connectors.push(c.clone());
                    }
                }
                if (!jit.email_domains.is_empty() || !jit.sso_connectors.is_empty())
                    && jit.default_roles.is_empty()
                {
                    self.warn(
                        format!("{path}.jit.default_roles"),
                        "empty: just-in-time provisioning cannot add anyone to this organization",
                    );
                }
            }
            out.push(Organization {
                id: o.id.clone(),
                name: o.name.clone().unwrap_or_else(|| o.id.clone()),
                roles,
                jit,
            });
        }
        out
    }

    pub(super) fn jit_references(&mut self, raw: &[file::OrgSection], idps: &[IdentityProvider]) {
        for (i, o) in raw.iter().enumerate() {
            let Some(j) = &o.jit else { continue };
            for (k, c) in j.sso_connectors.iter().enumerate() {
                if !idps.iter().any(|idp| &idp.id == c) {
                    self.err(
                        format!("organizations[{i}].jit.sso_connectors[{k}]"),
                        format!("{c:?} is not the id of an identity provider"),
                    );
                }
            }
        }
    }
}
