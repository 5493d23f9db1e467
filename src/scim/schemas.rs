//! What the service provider says of itself (RFC 7643 5–7):
//! `ServiceProviderConfig`, `ResourceTypes` and `Schemas`, and the schema
//! URNs the rest of the module speaks.

use serde_json::{Value, json};

pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SPC: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Largest `count` of one page.
pub const MAX_RESULTS: usize = 1000;

pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SPC],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A token of this feed's `scim[].tokens`, as `Authorization: Bearer <token>`.",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}

pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": [RESOURCE_TYPE],
            "id": "User", "name": "User", "endpoint": "/Users",
            "description": "A user of the identity provider's directory",
            "schema": CORE_USER,
            "schemaExtensions": [{"schema": ENTERPRISE_USER, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
        }),
        json!({
            "schemas": [RESOURCE_TYPE],
            "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "A group of the identity provider's directory: its displayName is a `groups` claim of its members",
            "schema": CORE_GROUP,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}

/// One attribute's definition; `sub` for complex attributes.
struct A {
    name: &'static str,
    ty: &'static str,
    multi: bool,
    required: bool,
    mutability: &'static str,
    unique: &'static str,
    case_exact: bool,
    canonical: &'static [&'static str],
    refs: &'static [&'static str],
    sub: Vec<A>,
}

fn a(name: &'static str, ty: &'static str) -> A {
    A {
        name,
        ty,
        multi: false,
        required: false,
        mutability: "readWrite",
        unique: "none",
        case_exact: false,
        canonical: &[],
        refs: &[],
        sub: Vec::new(),
    }
}

impl A {
    fn multi(mut self) -> A {
        self.multi = true;
        self
    }
    fn required(mut self) -> A {
        self.required = true;
        self
    }
    fn read_only(mut self) -> A {
        self.mutability = "readOnly";
        self
    }
    fn immutable(mut self) -> A {
        self.mutability = "immutable";
        self
    }
    fn unique(mut self) -> A {
        self.unique = "server";
        self
    }
    fn case_exact(mut self) -> A {
        self.case_exact = true;
        self
    }
    fn canonical(mut self, v: &'static [&'static str]) -> A {
        self.canonical = v;
        self
    }
    fn refs(mut self, v: &'static [&'static str]) -> A {
        self.refs = v;
        self
    }
    fn sub(mut self, sub: Vec<A>) -> A {
        self.sub = sub;
        self
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name, "type": self.ty, "multiValued": self.multi,
            "description": self.name, "required": self.required,
            "caseExact": self.case_exact, "mutability": self.mutability,
            "returned": "default", "uniqueness": self.unique,
        });
        if !self.canonical.is_empty() {
            v["canonicalValues"] = json!(self.canonical);
        }
        if !self.refs.is_empty() {
            v["referenceTypes"] = json!(self.refs);
        }
        if !self.sub.is_empty() {
            v["subAttributes"] = self.sub.iter().map(A::json).collect();
        }
        v
    }
}

fn schema(base: &str, id: &str, name: &str, description: &str, attrs: Vec<A>) -> Value {
    json!({
        "schemas": [SCHEMA],
        "id": id, "name": name, "description": description,
        "attributes": attrs.iter().map(A::json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

pub fn schemas(base: &str) -> Vec<Value> {
    let user = vec![
        a("userName", "string").required().unique(),
        a("name", "complex").sub(vec![
            a("formatted", "string"),
            a("familyName", "string"),
            a("givenName", "string"),
            a("middleName", "string"),
            a("honorificPrefix", "string"),
            a("honorificSuffix", "string"),
        ]),
        a("displayName", "string"),
        a("nickName", "string"),
        a("title", "string"),
        a("userType", "string"),
        a("preferredLanguage", "string"),
        a("locale", "string"),
        a("timezone", "string"),
        a("active", "boolean"),
        a("emails", "complex").multi().sub(vec![
            a("value", "string"),
            a("display", "string"),
            a("type", "string").canonical(&["work", "home", "other"]),
            a("primary", "boolean"),
        ]),
        a("groups", "complex").multi().read_only().sub(vec![
            a("value", "string").read_only(),
            a("$ref", "reference").read_only().refs(&["Group"]),
            a("display", "string").read_only(),
            a("type", "string").read_only().canonical(&["direct"]),
        ]),
    ];
    let enterprise = vec![
        a("employeeNumber", "string"),
        a("costCenter", "string"),
        a("organization", "string"),
        a("division", "string"),
        a("department", "string"),
        a("manager", "complex").sub(vec![
            a("value", "string"),
            a("$ref", "reference").refs(&["User"]),
            a("displayName", "string").read_only(),
        ]),
    ];
    let group = vec![
        a("displayName", "string").required(),
        a("members", "complex").multi().sub(vec![
            a("value", "string").immutable().case_exact(),
            a("$ref", "reference").immutable().refs(&["User"]),
            a("display", "string").read_only(),
            a("type", "string").immutable().canonical(&["User"]),
        ]),
    ];
    vec![
        schema(base, CORE_USER, "User", "User Account", user),
        schema(
            base,
            ENTERPRISE_USER,
            "EnterpriseUser",
            "Enterprise User",
            enterprise,
        ),
        schema(base, CORE_GROUP, "Group", "Group", group),
    ]
}

/// Whether `id` (any case) is one of the schemas the resource may carry.
pub fn known_schema(id: &str) -> bool {
    [CORE_USER, CORE_GROUP, ENTERPRISE_USER]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_names_its_schema() {
        let base = "https://gw.test/_portcullis/scim/v2/okta";
        assert_eq!(service_provider_config(base)["patch"]["supported"], true);
        let types = resource_types(base);
        assert_eq!(types.len(), 2);
        let schemas = schemas(base);
        assert_eq!(schemas.len(), 3);
        for s in &schemas {
            assert!(known_schema(s["id"].as_str().unwrap()));
            assert!(!s["attributes"].as_array().unwrap().is_empty());
        }
    }
}
