//! SCIM filters (RFC 7644 3.4.2.2), parsed by `scim_v2`, evaluated here on
//! a resource's JSON: attribute names case-insensitive, string values
//! case-insensitive except `id`, `externalId` and `meta.version`
//! (caseExact in RFC 7643's schemas).

use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, Filter, ValFilter};
use serde_json::Value;

use super::schemas::ENTERPRISE_USER;

/// The member of `v` named `key`, whatever its case.
pub fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    o.get(key).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The object an attribute lives in: the resource, or its enterprise
/// extension when the path names that schema.
pub fn container<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    match &path.uri {
        Some(uri) if uri.eq_ignore_ascii_case(ENTERPRISE_USER) => get_ci(resource, ENTERPRISE_USER),
        _ => Some(resource),
    }
}

/// Every value an attribute path reaches: a multi-valued attribute gives
/// each of its values, a complex multi-valued one without a sub-attribute
/// gives each `value`.
fn values<'a>(within: &'a Value, name: &str, sub: Option<&str>) -> Vec<&'a Value> {
    let Some(v) = get_ci(within, name) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    match sub {
        Some(s) => items.into_iter().filter_map(|i| get_ci(i, s)).collect(),
        None => items
            .into_iter()
            .filter_map(|i| {
                if i.is_object() {
                    get_ci(i, "value")
                } else {
                    Some(i)
                }
            })
            .collect(),
    }
}

fn case_exact(path: &AttrPath) -> bool {
    let n = path.name.as_str();
    n.eq_ignore_ascii_case("id")
        || n.eq_ignore_ascii_case("externalId")
        || (n.eq_ignore_ascii_case("meta")
            && path
                .sub_attr
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("version")))
}

fn compare(v: &Value, op: &CompareOp, want: &CompValue, exact: bool) -> bool {
    use std::cmp::Ordering;
    let ordering = match (v, want) {
        (Value::String(s), CompValue::Str(w)) => {
            let (a, b) = if exact {
                (s.clone(), w.clone())
            } else {
                (s.to_lowercase(), w.to_lowercase())
            };
            match op {
                CompareOp::Co => return a.contains(&b),
                CompareOp::Sw => return a.starts_with(&b),
                CompareOp::Ew => return a.ends_with(&b),
                _ => a.cmp(&b),
            }
        }
        (Value::Number(n), CompValue::Number(w)) => {
            match n
                .as_f64()
                .zip(w.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b))
            {
                Some(o) => o,
                None => return false,
            }
        }
        (Value::Bool(b), CompValue::True) => b.cmp(&true),
        (Value::Bool(b), CompValue::False) => b.cmp(&false),
        (Value::Null, CompValue::Null) => Ordering::Equal,
        _ => return matches!(op, CompareOp::Ne),
    };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        // Substring operators on anything but strings match nothing.
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn attr_exp(within: &Value, exp: &AttrExp) -> bool {
    match exp {
        AttrExp::Present(path) => container(within, path)
            .map(|c| values(c, &path.name, path.sub_attr.as_deref()))
            .is_some_and(|vs| {
                vs.iter().any(|v| match v {
                    Value::Null => false,
                    Value::String(s) => !s.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
            }),
        AttrExp::Comparison(path, op, want) => {
            let exact = case_exact(path);
            let found = container(within, path)
                .map(|c| values(c, &path.name, path.sub_attr.as_deref()))
                .unwrap_or_default();
            if found.is_empty() {
                // An absent attribute equals nothing and differs from all.
                return matches!(op, CompareOp::Ne)
                    || (matches!(op, CompareOp::Eq) && *want == CompValue::Null);
            }
            if matches!(op, CompareOp::Ne) {
                return found.iter().all(|v| compare(v, op, want, exact));
            }
            found.iter().any(|v| compare(v, op, want, exact))
        }
    }
}

/// Whether `resource` passes `filter`.
pub fn matches(resource: &Value, filter: &Filter) -> bool {
    match filter {
        Filter::Attr(exp) => attr_exp(resource, exp),
        Filter::ValuePath(vp) => {
            let Some(c) = container(resource, &vp.attr) else {
                return false;
            };
            match get_ci(c, &vp.attr.name) {
                Some(Value::Array(items)) => items.iter().any(|i| val_matches(i, &vp.filter)),
                Some(item) => val_matches(item, &vp.filter),
                None => false,
            }
        }
        Filter::Not(f) => !matches(resource, f),
        Filter::And(a, b) => matches(resource, a) && matches(resource, b),
        Filter::Or(a, b) => matches(resource, a) || matches(resource, b),
    }
}

/// Whether one value of a multi-valued attribute passes a `[...]` filter.
pub fn val_matches(item: &Value, filter: &ValFilter) -> bool {
    match filter {
        ValFilter::Attr(exp) => attr_exp(item, exp),
        ValFilter::Not(f) => !val_matches(item, f),
        ValFilter::And(a, b) => val_matches(item, a) && val_matches(item, b),
        ValFilter::Or(a, b) => val_matches(item, a) || val_matches(item, b),
    }
}

/// The attribute and value of an `eq` a store index can narrow by: the
/// filter itself, or the first such term of a top-level `and` chain.
pub fn indexed_eq(filter: &Filter) -> Option<(String, String)> {
    match filter {
        Filter::Attr(AttrExp::Comparison(path, CompareOp::Eq, CompValue::Str(v))) => {
            let name = match &path.sub_attr {
                Some(sub) => format!("{}.{}", path.name, sub),
                None => path.name.clone(),
            };
            Some((name.to_ascii_lowercase(), v.clone()))
        }
        Filter::And(a, b) => indexed_eq(a).or_else(|| indexed_eq(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(text: &str) -> Filter {
        text.parse().unwrap()
    }

    #[test]
    fn evaluates_the_filters_directories_send() {
        let user = json!({
            "id": "u_1", "userName": "Alice@Example.com", "externalId": "00u1",
            "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
            "name": {"givenName": "Alice"}, "active": true,
            ENTERPRISE_USER: {"department": "Ops"},
        });
        let cases = [
            (r#"userName eq "alice@example.com""#, true),
            (r#"USERNAME EQ "ALICE@EXAMPLE.COM""#, true),
            (r#"externalId eq "00U1""#, false),
            (
                r#"externalId eq "00u1" and userName eq "alice@example.com""#,
                true,
            ),
            (r#"emails[type eq "work" and value co "alice"]"#, true),
            (r#"emails.value sw "alice""#, true),
            (r#"name.givenName eq "alice""#, true),
            ("active eq true", true),
            ("active eq false", false),
            ("title pr", false),
            (r#"not (userName eq "bob")"#, true),
            (
                r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "ops""#,
                true,
            ),
            (r#"userName ne "bob""#, true),
        ];
        for (text, expected) in cases {
            assert_eq!(matches(&user, &f(text)), expected, "{text}");
        }
    }

    #[test]
    fn a_member_filter_compares_member_values() {
        let group = json!({"displayName": "Ops", "members": [{"value": "u_1"}, {"value": "u_2"}]});
        assert!(matches(&group, &f(r#"members eq "u_2""#)));
        assert!(matches(&group, &f(r#"members[value eq "u_1"]"#)));
        assert!(!matches(&group, &f(r#"members eq "u_3""#)));
        assert_eq!(
            indexed_eq(&f(r#"displayName eq "Ops" and members eq "u_2""#)),
            Some(("displayname".into(), "Ops".into()))
        );
    }
}
