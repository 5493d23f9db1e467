//! What an IdP's directory (SCIM) says of a user, as claims for the
//! policies (SPEC 4b): `userName`, `externalId`, the primary email as a
//! verified `email`, `name`, `active`, and the user's SCIM group names in
//! `groups`. Pure, like the rest of the engine.

use serde_json::{Map, Value};

use crate::config::IdentityProvider;

/// A directory user as stored: the SCIM resource and the `displayName`s
/// of the groups they are a member of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirectoryEntry {
    pub resource: Value,
    pub groups: Vec<String>,
}

impl DirectoryEntry {
    pub fn external_id(&self) -> Option<&str> {
        text(&self.resource, "externalId")
    }

    pub fn user_name(&self) -> Option<&str> {
        text(&self.resource, "userName")
    }

    /// The primary email, else the first one.
    pub fn email(&self) -> Option<&str> {
        let emails = self.resource.get("emails")?.as_array()?;
        fn value(e: &Value) -> Option<&str> {
            e.get("value").and_then(Value::as_str)
        }
        emails
            .iter()
            .find(|e| e.get("primary") == Some(&Value::Bool(true)))
            .and_then(value)
            .or_else(|| emails.iter().find_map(value))
            .filter(|s| !s.trim().is_empty())
    }

    /// `name.formatted`, else `displayName`, else given and family name.
    pub fn name(&self) -> Option<String> {
        let r = &self.resource;
        let name = r.get("name");
        let part = |k: &str| name.and_then(|n| text(n, k));
        part("formatted")
            .or_else(|| text(r, "displayName"))
            .map(str::to_string)
            .or_else(|| {
                let given = [part("givenName"), part("familyName")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                (!given.is_empty()).then_some(given)
            })
    }

    /// Absent means active (RFC 7643 4.1.1 leaves it to the provider).
    pub fn active(&self) -> bool {
        self.resource.get("active") != Some(&Value::Bool(false))
    }

    /// The directory's attributes as claims.
    pub fn claims(&self) -> Map<String, Value> {
        let mut c = Map::new();
        if let Some(u) = self.user_name() {
            c.insert("userName".into(), u.into());
        }
        if let Some(x) = self.external_id() {
            c.insert("externalId".into(), x.into());
        }
        if let Some(e) = self.email() {
            c.insert("email".into(), e.into());
            c.insert("email_verified".into(), true.into());
        }
        if let Some(n) = self.name() {
            c.insert("name".into(), n.into());
        }
        c.insert("active".into(), self.active().into());
        c.insert(
            "groups".into(),
            self.groups.iter().cloned().map(Value::from).collect(),
        );
        c
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// A plain claim name (`sub`, `oid`), as opposed to an expression.
fn plain_claim(expr: &str) -> Option<&str> {
    let mut chars = expr.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(expr)
}

/// The claims a plan of this user reads: the IdP's (from the last login,
/// when there was one) first, the directory's filling the gaps, except
/// that `userName`, `externalId` and `active` are the directory's and
/// `groups` holds both. A user the directory created and who has not
/// logged in yet has no IdP claims: the `match` claim is then the
/// `externalId`, and a plain identifier claim still missing is the
/// `externalId` (else the SCIM id) as a stand-in that is never stored.
pub fn claims_for(
    idp: &IdentityProvider,
    idp_claims: Option<&Value>,
    entry: &DirectoryEntry,
) -> Value {
    let mut out = idp_claims
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let from_idp_email = out.get("email").is_some_and(|e| e.is_string());
    for (k, v) in entry.claims() {
        match k.as_str() {
            "userName" | "externalId" | "active" => {
                out.insert(k, v);
            }
            "groups" => {
                let mut names: Vec<Value> = match out.get("groups") {
                    Some(Value::Array(a)) => a.clone(),
                    Some(Value::String(s)) => vec![Value::from(s.clone())],
                    _ => Vec::new(),
                };
                for g in v.as_array().into_iter().flatten() {
                    if !names.contains(g) {
                        names.push(g.clone());
                    }
                }
                out.insert(k, Value::Array(names));
            }
            "email" | "email_verified" if from_idp_email => {}
            _ => {
                out.entry(k).or_insert(v);
            }
        }
    }
    let stand_in = entry.external_id().map(str::to_string).or_else(|| {
        entry
            .resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let names = [
        idp.directory_match.as_ref().map(|m| m.text.as_str()),
        Some(idp.identifier.text.as_str()),
    ];
    for name in names.into_iter().flatten().filter_map(plain_claim) {
        if !out.contains_key(name)
            && let Some(v) = &stand_in
        {
            out.insert(name.to_string(), v.clone().into());
        }
    }
    Value::Object(out)
}
