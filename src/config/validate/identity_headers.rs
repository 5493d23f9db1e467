//! `identity_headers`: the header names the gateway sets.

use super::*;

impl Validator<'_> {
    pub(super) fn identity_headers(
        &mut self,
        h: &file::IdentityHeadersSection,
    ) -> Option<IdentityHeaders> {
        let fields: [(&str, &Option<String>, &str); 8] = [
            ("user_id", &h.user_id, "X-Auth-User-Id"),
            ("subject", &h.subject, "X-Auth-Subject"),
            ("idp", &h.idp, "X-Auth-Idp"),
            ("email", &h.email, "X-Auth-Email"),
            ("name", &h.name, "X-Auth-Name"),
            ("org", &h.org, "X-Auth-Org"),
            ("roles", &h.roles, "X-Auth-Roles"),
            ("assertion", &h.assertion, "X-Auth-Assertion"),
        ];
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        let mut names = Vec::new();
        for (field, value, default) in fields {
            let name = value.as_deref().unwrap_or(default);
            let path = format!("identity_headers.{field}");
            let header = self.header_name(&path, name);
            let key = name.to_ascii_lowercase().replace('_', "-");
            if let Some(other) = seen.insert(key, field) {
                self.err(
                    &path,
                    format!("{name:?} is also the header of identity_headers.{other}"),
                );
            }
            if [
                "host",
                "cookie",
                "authorization",
                "content-length",
                "transfer-encoding",
                "connection",
            ]
            .contains(&name.to_ascii_lowercase().as_str())
            {
                self.err(&path, format!("{name:?} is a reserved HTTP header"));
            }
            names.push(header);
        }
        let mut it = names.into_iter();
        let mut next = || it.next().flatten();
        Some(IdentityHeaders {
            user_id: next()?,
            subject: next()?,
            idp: next()?,
            email: next()?,
            name: next()?,
            org: next()?,
            roles: next()?,
            assertion: next()?,
        })
    }
}
