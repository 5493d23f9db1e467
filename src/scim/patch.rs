//! SCIM PATCH (RFC 7644 3.5.2) on a resource's JSON, in the dialects the
//! directories speak: op names in any case (Entra's `Replace`), no-path
//! values whose keys are dotted or schema-prefixed paths, value-path
//! filters with a sub-attribute (`emails[type eq "work"].value`, added when
//! no value matches, as Entra expects), and `members[value eq "…"]`
//! removals.

use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, PatchPath, ValFilter};
use serde_json::{Map, Value};

use super::ScimError;
use super::filter::{get_ci, val_matches};
use super::schemas::{CORE_GROUP, CORE_USER, ENTERPRISE_USER};

/// Largest number of operations in one PATCH.
pub const MAX_OPERATIONS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// Applies a PATCH request body to `resource`.
pub fn apply(resource: &mut Value, body: &Value) -> Result<(), ScimError> {
    let ops = get_ci(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a PATCH needs an \"Operations\" array"))?;
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::too_many(format!(
            "at most {MAX_OPERATIONS} operations per PATCH"
        )));
    }
    for (i, op) in ops.iter().enumerate() {
        one(resource, op).map_err(|e| e.at(format!("Operations[{i}]")))?;
    }
    Ok(())
}

fn one(resource: &mut Value, op: &Value) -> Result<(), ScimError> {
    let name = get_ci(op, "op").and_then(Value::as_str).unwrap_or_default();
    let kind = match name.to_ascii_lowercase().as_str() {
        "add" => Op::Add,
        "replace" => Op::Replace,
        "remove" => Op::Remove,
        _ => {
            return Err(ScimError::invalid_syntax(format!(
                "op {name:?} is not add, replace or remove"
            )));
        }
    };
    let value = get_ci(op, "value").cloned();
    let path = get_ci(op, "path")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty());
    match (path, kind, value) {
        (None, Op::Remove, _) => Err(ScimError::no_target("remove needs a path")),
        (None, _, Some(Value::Object(map))) => {
            // Each key is a path of its own (Entra: "name.givenName",
            // "urn:…:enterprise:2.0:User:department").
            for (k, v) in map {
                if is_schema_urn(&k) && v.is_object() && !k.eq_ignore_ascii_case(CORE_USER) {
                    // A whole extension object: its members one by one.
                    for (sub, sv) in v.as_object().into_iter().flatten() {
                        let p = parse_path(&format!("{k}:{sub}"))?;
                        at_path(resource, &p, kind, Some(sv.clone()))?;
                    }
                    continue;
                }
                // Okta's group rename repeats the id: the same id is no
                // change; another one is refused below as read-only.
                if k.eq_ignore_ascii_case("id") && resource.get("id") == Some(&v) {
                    continue;
                }
                let p = parse_path(&k)?;
                at_path(resource, &p, kind, Some(v))?;
            }
            Ok(())
        }
        (None, _, _) => Err(ScimError::invalid_value(
            "without a path, the value must be an object",
        )),
        // The whole enterprise extension as the path: its attributes one
        // by one, or all of them removed.
        (Some(p), Op::Remove, _) if p.trim().eq_ignore_ascii_case(ENTERPRISE_USER) => {
            if let Some(o) = resource.as_object_mut() {
                let key = key_ci(o, ENTERPRISE_USER);
                o.remove(&key);
            }
            Ok(())
        }
        (Some(p), _, Some(Value::Object(map)))
            if p.trim().eq_ignore_ascii_case(ENTERPRISE_USER) =>
        {
            for (sub, v) in map {
                let path = parse_path(&format!("{ENTERPRISE_USER}:{sub}"))?;
                at_path(resource, &path, kind, Some(v))?;
            }
            Ok(())
        }
        (Some(_), Op::Add | Op::Replace, None) => {
            Err(ScimError::invalid_value("add and replace need a value"))
        }
        (Some(p), _, value) => at_path(resource, &parse_path(p)?, kind, value),
    }
}

/// Whether a multi-valued item is the one a removal names: by `value`
/// when both have one, else equal.
fn same_item(item: &Value, named: &Value) -> bool {
    match (item.get("value"), named.get("value")) {
        (Some(a), Some(b)) => a == b,
        _ => item == named,
    }
}

fn is_schema_urn(s: &str) -> bool {
    s.to_ascii_lowercase()
        .starts_with("urn:ietf:params:scim:schemas:")
        && [CORE_USER, CORE_GROUP, ENTERPRISE_USER]
            .iter()
            .any(|u| s.eq_ignore_ascii_case(u))
}

fn parse_path(p: &str) -> Result<PatchPath, ScimError> {
    p.parse::<PatchPath>()
        .map_err(|e| ScimError::invalid_path(format!("path {p:?}: {e}")))
}

/// The object an attribute path writes into: the resource itself, or
/// (created on demand) its enterprise extension.
fn container_mut<'a>(
    resource: &'a mut Value,
    path: &AttrPath,
) -> Result<&'a mut Map<String, Value>, ScimError> {
    let root = resource
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid_value("the resource is not an object"))?;
    match &path.uri {
        Some(uri) if uri.eq_ignore_ascii_case(ENTERPRISE_USER) => {
            let key = key_ci(root, ENTERPRISE_USER);
            let ext = root.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !ext.is_object() {
                *ext = Value::Object(Map::new());
            }
            Ok(ext.as_object_mut().expect("made an object above"))
        }
        Some(uri)
            if !uri.eq_ignore_ascii_case(CORE_USER) && !uri.eq_ignore_ascii_case(CORE_GROUP) =>
        {
            Err(ScimError::invalid_path(format!("unknown schema {uri:?}")))
        }
        _ => Ok(root),
    }
}

/// The key as the object already spells it, else as given.
/// Writes `new`'s attributes over `old`'s, names matched in any case.
fn merge(old: &mut Map<String, Value>, new: Map<String, Value>) {
    for (k, v) in new {
        let k2 = key_ci(old, &k);
        old.insert(k2, v);
    }
}

fn key_ci(o: &Map<String, Value>, key: &str) -> String {
    o.keys()
        .find(|k| k.eq_ignore_ascii_case(key))
        .cloned()
        .unwrap_or_else(|| key.to_string())
}

fn at_path(
    resource: &mut Value,
    path: &PatchPath,
    op: Op,
    value: Option<Value>,
) -> Result<(), ScimError> {
    match path {
        PatchPath::Attr(a) => {
            if a.name.eq_ignore_ascii_case("id") || a.name.eq_ignore_ascii_case("meta") {
                return Err(ScimError::mutability(format!("{} is read-only", a.name)));
            }
            let c = container_mut(resource, a)?;
            let key = key_ci(c, &a.name);
            match &a.sub_attr {
                Some(sub) => {
                    if op == Op::Remove {
                        if let Some(Value::Object(inner)) = c.get_mut(&key) {
                            let k = key_ci(inner, sub);
                            inner.remove(&k);
                        }
                        return Ok(());
                    }
                    let inner = c.entry(key).or_insert_with(|| Value::Object(Map::new()));
                    match inner {
                        Value::Object(o) => {
                            let k = key_ci(o, sub);
                            o.insert(k, value.unwrap_or(Value::Null));
                        }
                        // `emails.value` on a multi-valued attribute: every value.
                        Value::Array(items) => {
                            for i in items.iter_mut().filter_map(Value::as_object_mut) {
                                let k = key_ci(i, sub);
                                i.insert(k, value.clone().unwrap_or(Value::Null));
                            }
                        }
                        other => {
                            *other = Value::Object(Map::from_iter([(
                                sub.clone(),
                                value.unwrap_or(Value::Null),
                            )]))
                        }
                    }
                    Ok(())
                }
                None => {
                    match op {
                        // Entra removes members by naming them in a value:
                        // `{"op": "Remove", "path": "members", "value":
                        // [{"value": "…"}]}` takes out those, not the rest.
                        Op::Remove if value.as_ref().is_some_and(Value::is_array) => {
                            let gone = value.unwrap_or_default();
                            let gone = gone.as_array().expect("checked above");
                            if let Some(Value::Array(items)) = c.get_mut(&key) {
                                items.retain(|i| !gone.iter().any(|g| same_item(i, g)));
                            }
                        }
                        Op::Remove => {
                            c.remove(&key);
                        }
                        Op::Replace => {
                            let v = value.unwrap_or(Value::Null);
                            match (c.get_mut(&key), v) {
                                // Replacing a complex attribute with an object
                                // replaces the sub-attributes it names.
                                (Some(Value::Object(old)), Value::Object(new)) => merge(old, new),
                                (_, v) => {
                                    c.insert(key, v);
                                }
                            }
                        }
                        Op::Add => {
                            let v = value.unwrap_or(Value::Null);
                            match (c.get_mut(&key), v) {
                                (Some(Value::Array(items)), Value::Array(more)) => {
                                    for m in more {
                                        if !items.contains(&m) && !same_value(items, &m) {
                                            items.push(m);
                                        }
                                    }
                                }
                                (Some(Value::Array(items)), m) => {
                                    if !items.contains(&m) && !same_value(items, &m) {
                                        items.push(m);
                                    }
                                }
                                (Some(Value::Object(old)), Value::Object(new)) => merge(old, new),
                                (_, v) => {
                                    c.insert(key, v);
                                }
                            }
                        }
                    }
                    Ok(())
                }
            }
        }
        PatchPath::Value(vp) => {
            let c = container_mut(resource, &vp.attr)?;
            let key = key_ci(c, &vp.attr.name);
            if op == Op::Remove {
                if let Some(Value::Array(items)) = c.get_mut(&key) {
                    match &vp.sub_attr {
                        None => items.retain(|i| !val_matches(i, &vp.filter)),
                        Some(sub) => {
                            for i in items.iter_mut().filter(|i| val_matches(i, &vp.filter)) {
                                if let Some(o) = i.as_object_mut() {
                                    let k = key_ci(o, sub);
                                    o.remove(&k);
                                }
                            }
                        }
                    }
                    if items.is_empty() {
                        c.remove(&key);
                    }
                }
                // Removing what is not there leaves it not there.
                return Ok(());
            }
            let value = value.unwrap_or(Value::Null);
            let items = c.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            if !items.is_array() {
                *items = Value::Array(vec![items.take()]);
            }
            let items = items.as_array_mut().expect("made an array above");
            let mut hit = false;
            for i in items.iter_mut().filter(|i| val_matches(i, &vp.filter)) {
                hit = true;
                set_in(i, vp.sub_attr.as_deref(), value.clone());
            }
            if !hit {
                // No value matches: one is added that does, when the filter
                // says what it is (Entra's `emails[type eq "work"].value`).
                let mut fresh = Value::Object(implied_by(&vp.filter).ok_or_else(|| {
                    ScimError::no_target(format!("no value of {} matches", vp.attr.name))
                })?);
                set_in(&mut fresh, vp.sub_attr.as_deref(), value);
                items.push(fresh);
            }
            Ok(())
        }
    }
}

/// A value of a complex multi-valued attribute with the same `value`.
fn same_value(items: &[Value], m: &Value) -> bool {
    let v = get_ci(m, "value");
    v.is_some() && items.iter().any(|i| get_ci(i, "value") == v)
}

fn set_in(item: &mut Value, sub: Option<&str>, value: Value) {
    match (sub, item.as_object_mut(), value) {
        (Some(s), Some(o), v) => {
            let k = key_ci(o, s);
            o.insert(k, v);
        }
        (None, Some(o), Value::Object(new)) => merge(o, new),
        (_, _, v) => *item = v,
    }
}

/// The sub-attributes an `eq` filter (or an `and` of them) pins down.
fn implied_by(filter: &ValFilter) -> Option<Map<String, Value>> {
    match filter {
        ValFilter::Attr(AttrExp::Comparison(path, CompareOp::Eq, v)) if path.sub_attr.is_none() => {
            let v = match v {
                CompValue::Str(s) => Value::from(s.clone()),
                CompValue::True => Value::Bool(true),
                CompValue::False => Value::Bool(false),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Null => return None,
            };
            Some(Map::from_iter([(path.name.clone(), v)]))
        }
        ValFilter::And(a, b) => {
            let mut m = implied_by(a)?;
            m.extend(implied_by(b)?);
            Some(m)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(mut r: Value, body: Value) -> Result<Value, ScimError> {
        apply(&mut r, &body)?;
        Ok(r)
    }

    #[test]
    fn entra_dialect() {
        let user = json!({"userName": "a@x.test", "active": true,
            "emails": [{"type": "work", "value": "a@x.test", "primary": true}]});
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "b@x.test"},
            {"op": "Add", "path": "emails[type eq \"home\"].value", "value": "h@x.test"},
            {"op": "Add", "value": {"name.givenName": "Bea",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops"}},
        ]});
        let r = patched(user, body).unwrap();
        assert_eq!(r["active"], "False", "normalized by the caller, not here");
        assert_eq!(r["emails"][0]["value"], "b@x.test");
        assert_eq!(r["emails"][1], json!({"type": "home", "value": "h@x.test"}));
        assert_eq!(r["name"]["givenName"], "Bea");
        assert_eq!(r[ENTERPRISE_USER]["department"], "Ops");
    }

    #[test]
    fn group_members_add_and_remove() {
        let g = json!({"displayName": "Ops", "members": [{"value": "u1"}, {"value": "u2"}]});
        let body = json!({"Operations": [
            {"op": "add", "path": "members", "value": [{"value": "u3"}, {"value": "u1"}]},
            {"op": "remove", "path": "members[value eq \"u2\"]"},
            {"op": "remove", "path": "members[value eq \"nobody\"]"},
        ]});
        let r = patched(g, body).unwrap();
        assert_eq!(r["members"], json!([{"value": "u1"}, {"value": "u3"}]));
    }

    /// Entra removes one member by naming it in the value; the others stay.
    #[test]
    fn entra_member_removal_by_value() {
        let g = json!({"displayName": "Ops", "members": [{"value": "u1"}, {"value": "u2"}]});
        let body = json!({"Operations": [
            {"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "u1"}]},
        ]});
        let r = patched(g, body).unwrap();
        assert_eq!(r["members"], json!([{"value": "u2"}]));
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let cases = [
            json!({"Operations": [{"op": "move", "path": "a"}]}),
            json!({"Operations": [{"op": "remove"}]}),
            json!({"Operations": [{"op": "replace", "path": "emails[type eq"}]}),
            json!({"Operations": [{"op": "replace", "path": "id", "value": "x"}]}),
            json!({"Operations": [{"op": "add", "value": "not an object"}]}),
            json!({"operations": "not a list"}),
        ];
        for body in cases {
            assert!(
                patched(json!({"userName": "a"}), body.clone()).is_err(),
                "{body}"
            );
        }
    }
}
