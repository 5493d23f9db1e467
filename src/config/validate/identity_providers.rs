//! `identity_providers`: issuers, clients, identity expressions, provisioning policies compiled per organization.

use super::*;

impl Validator<'_> {
    pub(super) fn identity_providers(
        &mut self,
        idps: &[file::IdpSection],
        orgs: &[Organization],
    ) -> Vec<IdentityProvider> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, p) in idps.iter().enumerate() {
            let path = format!("identity_providers[{i}]");
            if !valid_id(&p.id) {
                self.err(
                    format!("{path}.id"),
                    format!("{:?} must match [a-z0-9][a-z0-9._-]{{0,63}}", p.id),
                );
            }
            if !seen.insert(p.id.clone()) {
                self.err(
                    format!("{path}.id"),
                    format!("duplicate identity provider id {:?}", p.id),
                );
            }
            match url::Url::parse(&p.issuer) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" => {
                    let loopback = match u.host() {
                        Some(url::Host::Ipv4(a)) => a.is_loopback(),
                        Some(url::Host::Ipv6(a)) => a.is_loopback(),
                        Some(url::Host::Domain(d)) => d == "localhost",
                        None => false,
                    };
                    if !loopback {
                        self.warn(
                            format!("{path}.issuer"),
                            "plain http issuer: tokens and secrets cross the network unencrypted",
                        );
                    }
                }
                _ => self.err(
                    format!("{path}.issuer"),
                    format!("{:?} is not an http(s) URL", p.issuer),
                ),
            }
            if p.client_id.is_empty() {
                self.err(format!("{path}.client_id"), "is empty");
            }
            let scopes = p
                .scopes
                .clone()
                .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
            if !scopes.iter().any(|s| s == "openid") {
                self.err(format!("{path}.scopes"), "must include openid");
            }
            let identifier = self.expr(
                &format!("{path}.identifier"),
                p.identifier.as_deref().unwrap_or("sub"),
            );
            let email = self.expr(
                &format!("{path}.email"),
                p.email.as_deref().unwrap_or("email"),
            );
            let name = self.expr(&format!("{path}.name"), p.name.as_deref().unwrap_or("name"));
            if let Some(text) = p.identifier.as_deref().filter(|t| t.trim() != "sub") {
                self.warn(
                    format!("{path}.identifier"),
                    format!(
                        "users are keyed by {text:?}, not the IdP's sub: a value the user or the IdP's admins can change (an email, a name) can hand the account to someone else; an identifier read from an email counts only while that email is verified"
                    ),
                );
            }
            let auto_provision = p.auto_provision.unwrap_or(true);
            let policies = self.policies(&path, p, orgs);
            if auto_provision && policies.is_empty() {
                let jit_orgs = orgs.iter().any(|o| {
                    !o.jit.email_domains.is_empty() || o.jit.sso_connectors.contains(&p.id)
                });
                if !jit_orgs {
                    self.warn(
                        format!("{path}.provisioning"),
                        "no policy and no just-in-time rule can add users from this IdP to an organization",
                    );
                }
            }
            if let (Some(identifier), Some(email), Some(name)) = (identifier, email, name) {
                out.push(IdentityProvider {
                    id: p.id.clone(),
                    display_name: p.display_name.clone().unwrap_or_else(|| p.id.clone()),
                    issuer: p.issuer.clone(),
                    client_id: p.client_id.clone(),
                    client_secret: p.client_secret.clone(),
                    scopes,
                    claims: p.claims,
                    identifier,
                    email,
                    name,
                    auto_provision,
                    bearer_audiences: p.bearer_audiences.clone(),
                    policies,
                    directory_match: None,
                });
            }
        }
        out
    }

    /// One `OrgPolicy` per evaluated organization: those with a policy of
    /// their own, and with a fallback policy all the others.
    pub(super) fn policies(
        &mut self,
        path: &str,
        p: &file::IdpSection,
        orgs: &[Organization],
    ) -> Vec<OrgPolicy> {
        let Some(prov) = &p.provisioning else {
            return Vec::new();
        };
        for org_id in prov.organizations.keys() {
            if !orgs.iter().any(|o| &o.id == org_id) {
                self.err(
                    format!("{path}.provisioning.organizations.{org_id}"),
                    format!("organization {org_id:?} is not declared under organizations"),
                );
            }
        }
        // Compile each distinct expression text once: with a fallback policy
        // and thousands of organizations, most texts differ only by org id,
        // but ones without `{{orgId}}` are shared.
        let mut cache: HashMap<String, Option<Expr>> = HashMap::new();
        let mut out = Vec::new();
        for (index, org) in orgs.iter().enumerate() {
            let own = prov.organizations.get(&org.id);
            let source = match (own, &prov.default) {
                (Some(_), _) => PolicySource::Organization,
                (None, Some(_)) => PolicySource::Fallback,
                (None, None) => continue,
            };
            let pick = |field: fn(&file::PolicySection) -> &Option<String>| {
                own.and_then(|o| field(o).as_ref().map(|t| (t, PolicySource::Organization)))
                    .or_else(|| {
                        prov.default
                            .as_ref()
                            .and_then(|d| field(d).as_ref().map(|t| (t, PolicySource::Fallback)))
                    })
            };
            let mut compile = |text: &String, from: PolicySource, field: &str| {
                let substituted = text.replace("{{orgId}}", &org.id);
                let entry =
                    cache.entry(substituted.clone()).or_insert_with(|| {
                        match Expr::compile(&substituted) {
                            Ok(e) => Some(e),
                            Err(e) => {
                                self.problems.push(Problem::new(
                                    policy_field_path(path, &org.id, from, field),
                                    format!("{e} (for organization {:?})", org.id),
                                ));
                                None
                            }
                        }
                    });
                entry.clone().map(|e| (e, from))
            };
            let org_expr = pick(|p| &p.org).and_then(|(t, from)| compile(t, from, "org"));
            let roles_expr = pick(|p| &p.roles).and_then(|(t, from)| compile(t, from, "roles"));
            if let Some((expr, from)) = &roles_expr {
                // The typo that silently removes users: a role name the
                // organization does not declare.
                let mut literals = Vec::new();
                result_literals(expr.compiled.as_ast(), &mut literals);
                for name in literals {
                    if !org.has_role(name.trim()) && !name.trim().is_empty() {
                        let warning = Problem::new(
                            policy_field_path(path, &org.id, *from, "roles"),
                            format!(
                                "role {name:?} is not declared in organization {:?}: it will be dropped",
                                org.id
                            ),
                        );
                        if !self.warnings.contains(&warning) {
                            self.warnings.push(warning);
                        }
                    }
                }
            }
            out.push(OrgPolicy {
                org: index,
                org_id: org.id.clone(),
                source,
                org_expr,
                roles_expr,
            });
        }
        out
    }
}
