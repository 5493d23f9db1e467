//! JWT verification for everything an IdP signs: ID tokens, back-channel
//! logout tokens and bearer tokens. Only asymmetric algorithms with a key
//! from the IdP's JWKS are accepted: `none`, HMAC (including the classic
//! "HS256 keyed with the RSA public key") and keys of the wrong type fail
//! before any signature is checked. Pure: keys and expectations in.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Clock skew allowed on `exp`, `iat` and `nbf`.
pub const SKEW_SECS: u64 = 60;

/// The key set of one IdP, parsed leniently: a key this gateway cannot use
/// (an encryption key, an unknown type) is skipped, not fatal.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<Jwk>,
}

impl Keys {
    pub fn parse(jwks: &Value) -> Keys {
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .map(|all| {
                all.iter()
                    .filter(|k| {
                        k.get("use")
                            .and_then(Value::as_str)
                            .is_none_or(|u| u == "sig")
                    })
                    // Only the asymmetric key types: the JWK parser reads
                    // an unknown `kty` (and `oct`) as some other key.
                    .filter(|k| {
                        matches!(
                            k.get("kty").and_then(Value::as_str),
                            Some("RSA" | "EC" | "OKP")
                        )
                    })
                    .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        Keys { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Jwk> {
        let fits = |k: &&Jwk| {
            key_fits(k, alg)
                && k.common
                    .key_algorithm
                    .is_none_or(|ka| ka.to_string() == format!("{alg:?}"))
        };
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.common.key_id.as_deref() == Some(kid))
                .find(fits),
            // Without a `kid`, only an unambiguous key will do.
            None => {
                let mut candidates = self.keys.iter().filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
    }
}

fn key_fits(k: &Jwk, alg: Algorithm) -> bool {
    use Algorithm::*;
    match (&k.algorithm, alg) {
        (AlgorithmParameters::RSA(_), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => true,
        (AlgorithmParameters::EllipticCurve(p), ES256) => {
            p.curve == jsonwebtoken::jwk::EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(p), ES384) => {
            p.curve == jsonwebtoken::jwk::EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(_), EdDSA) => true,
        _ => false,
    }
}

/// What a token must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    /// `aud` must contain one of these.
    pub audiences: &'a [String],
    /// The client id, for `azp`. `None`: `azp` is not checked.
    pub authorized_party: Option<&'a str>,
    pub kind: TokenKind<'a>,
    pub now: i64,
}

#[derive(Debug, Clone, Copy)]
pub enum TokenKind<'a> {
    /// An ID token from a login: `nonce` must equal this.
    IdToken { nonce: &'a str },
    /// An ID token from a refresh (OpenID Connect Core 12.2): as a login's,
    /// but it carries no new nonce; one it carries must be the login's.
    RefreshedIdToken { nonce: Option<&'a str> },
    /// OpenID Connect Back-Channel Logout 1.0.
    LogoutToken,
    /// A JWT presented as `Authorization: Bearer` (ID or access token).
    Bearer,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error(
        "the token's algorithm {0} is not accepted (only asymmetric signatures by the IdP's keys)"
    )]
    Algorithm(String),
    #[error("no key of the IdP has kid {0:?}")]
    UnknownKid(Option<String>),
    #[error("the signature does not verify")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet or was issued in the future")]
    NotYetValid,
    #[error("claim {0} is missing")]
    Missing(&'static str),
    #[error("azp does not name this client")]
    AuthorizedParty,
    #[error("the nonce does not match this login")]
    Nonce,
    #[error("not a back-channel logout token: {0}")]
    NotLogoutToken(&'static str),
    #[error("a back-channel logout token is not a bearer credential")]
    LogoutTokenAsBearer,
}

const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Verifies `token` and returns its claims.
pub fn verify(token: &str, keys: &Keys, expect: &Expect<'_>) -> Result<Value, VerifyError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| {
        // `alg: none` and unknown algorithms fail here.
        match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => VerifyError::Algorithm(
                unverified_field(token, 0, "alg").unwrap_or_else(|| "unknown".to_string()),
            ),
            _ => VerifyError::Malformed,
        }
    })?;
    use Algorithm::*;
    if !matches!(
        header.alg,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA
    ) {
        return Err(VerifyError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = keys
        .find(header.kid.as_deref(), header.alg)
        .ok_or_else(|| VerifyError::UnknownKid(header.kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| VerifyError::Signature)?;

    let mut v = Validation::new(header.alg);
    v.leeway = SKEW_SECS;
    v.validate_nbf = true;
    v.set_issuer(&[expect.issuer]);
    v.set_audience(expect.audiences);
    let required: &[&str] = match expect.kind {
        TokenKind::LogoutToken => &["iss", "aud", "iat"],
        _ => &["iss", "aud", "exp", "sub"],
    };
    v.set_required_spec_claims(required);
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => VerifyError::Signature,
            K::InvalidIssuer => VerifyError::Issuer,
            K::InvalidAudience => VerifyError::Audience,
            K::ExpiredSignature => VerifyError::Expired,
            K::ImmatureSignature => VerifyError::NotYetValid,
            K::MissingRequiredClaim(c) => VerifyError::Missing(match c.as_str() {
                "iss" => "iss",
                "aud" => "aud",
                "exp" => "exp",
                "sub" => "sub",
                _ => "iat",
            }),
            _ => VerifyError::Malformed,
        }
    })?;
    let claims = data.claims;
    if !claims.is_object() {
        return Err(VerifyError::Malformed);
    }
    let iat = claims.get("iat").and_then(Value::as_i64);
    if let Some(iat) = iat
        && iat > expect.now + SKEW_SECS as i64
    {
        return Err(VerifyError::NotYetValid);
    }
    match expect.kind {
        TokenKind::IdToken { nonce } => {
            if iat.is_none() {
                return Err(VerifyError::Missing("iat"));
            }
            check_azp(&claims, expect)?;
            let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                got.as_bytes(),
                nonce.as_bytes(),
            )) {
                return Err(VerifyError::Nonce);
            }
        }
        TokenKind::RefreshedIdToken { nonce } => {
            if iat.is_none() {
                return Err(VerifyError::Missing("iat"));
            }
            check_azp(&claims, expect)?;
            if let Some(got) = claims.get("nonce")
                && (nonce.is_none() || got.as_str() != nonce)
            {
                return Err(VerifyError::Nonce);
            }
        }
        TokenKind::LogoutToken => {
            if claims.get("nonce").is_some() {
                return Err(VerifyError::NotLogoutToken("it carries a nonce"));
            }
            let event = claims.get("events").and_then(|e| e.get(LOGOUT_EVENT));
            if !event.is_some_and(Value::is_object) {
                return Err(VerifyError::NotLogoutToken("no back-channel logout event"));
            }
            let has = |k: &str| {
                claims
                    .get(k)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
            };
            if !has("sub") && !has("sid") {
                return Err(VerifyError::NotLogoutToken("neither sub nor sid"));
            }
            // Without a `jti` a logout token could not be told from its
            // replay.
            if !has("jti") {
                return Err(VerifyError::Missing("jti"));
            }
            // An old logout token is a replay.
            if iat.is_some_and(|iat| expect.now - iat > 300 + SKEW_SECS as i64) {
                return Err(VerifyError::Expired);
            }
        }
        TokenKind::Bearer => {
            // A logout token is an order to end sessions, never a
            // credential, whatever else it carries (`exp`, `sub`, `aud`).
            if header
                .typ
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("logout+jwt"))
                || claims.get("events").is_some()
            {
                return Err(VerifyError::LogoutTokenAsBearer);
            }
            check_azp(&claims, expect)?
        }
    }
    Ok(claims)
}

/// With several audiences, `azp` must name this client; when present, it
/// must name it anyway.
fn check_azp(claims: &Value, expect: &Expect<'_>) -> Result<(), VerifyError> {
    let Some(client) = expect.authorized_party else {
        return Ok(());
    };
    let several = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != client => Err(VerifyError::AuthorizedParty),
        None if several => Err(VerifyError::AuthorizedParty),
        _ => Ok(()),
    }
}

/// A JWT's header (`part` 0) or payload (`part` 1), read without
/// verification: only to choose how to verify, or to name what was
/// refused, never to trust it.
pub fn unverified_part(token: &str, part: usize) -> Option<Value> {
    use base64::Engine;
    let segment = token.split('.').nth(part)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JWT's payload, unverified (see [`unverified_part`]).
pub fn unverified_payload(token: &str) -> Option<Value> {
    unverified_part(token, 1)
}

/// A string field of a JWT's header or payload, unverified.
pub fn unverified_field(token: &str, part: usize, name: &str) -> Option<String> {
    unverified_part(token, part)?
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// What [`verify`] accepts and refuses, token by token (advisory class:
/// forged or confused tokens — algorithm confusion, `none`, audience and
/// issuer mix-ups, replayed logout tokens, logout tokens as credentials).
#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const PEM: &str = include_str!("../../tests/fixtures/rsa-test-key.pem");
    const PUBLIC_PEM: &str = include_str!("../../tests/fixtures/rsa-test-key.pub.pem");
    const JWK: &str = include_str!("../../tests/fixtures/rsa-test-key.jwk.json");
    const ISS: &str = "https://idp.test";

    /// The clock the tokens are judged by (`exp` is checked against the
    /// system clock by the JWT library, the rest against `Expect::now`).
    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn keys() -> Keys {
        Keys::parse(&json!({"keys": [serde_json::from_str::<Value>(JWK).unwrap()]}))
    }

    fn sign(alg: Algorithm, kid: Option<&str>, typ: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        h.typ = typ.map(str::to_string);
        let key = match alg {
            Algorithm::HS256 => EncodingKey::from_secret(PUBLIC_PEM.as_bytes()),
            _ => EncodingKey::from_rsa_pem(PEM.as_bytes()).unwrap(),
        };
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    fn rs256(claims: &Value) -> String {
        sign(Algorithm::RS256, Some("test-rsa-1"), None, claims)
    }

    /// A good ID token's claims with `change` merged in (`null` removes).
    fn id_claims(change: Value) -> Value {
        merged(
            json!({"iss": ISS, "aud": "gw", "sub": "u1", "exp": now() + 300,
                   "iat": now(), "nonce": "n-1"}),
            change,
        )
    }

    fn logout_claims(change: Value) -> Value {
        merged(
            json!({"iss": ISS, "aud": "gw", "sub": "u1", "iat": now(), "jti": "j-1",
                   "events": {LOGOUT_EVENT: {}}}),
            change,
        )
    }

    fn merged(mut base: Value, change: Value) -> Value {
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    }

    fn expect(kind: TokenKind<'static>) -> Expect<'static> {
        let now = now();
        static AUD: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["gw".to_string()]);
        Expect {
            issuer: ISS,
            audiences: &AUD,
            authorized_party: Some("gw"),
            kind,
            now,
        }
    }

    const ID: TokenKind<'static> = TokenKind::IdToken { nonce: "n-1" };
    const REFRESHED: TokenKind<'static> = TokenKind::RefreshedIdToken { nonce: Some("n-1") };

    #[test]
    fn tokens_accepted_and_refused() {
        use VerifyError as E;
        let none = {
            use base64::Engine;
            let b =
                |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!(
                "{}.{}.",
                b(json!({"alg": "none", "typ": "JWT"})),
                b(id_claims(json!({})))
            )
        };
        let cases: Vec<(&str, String, TokenKind<'static>, Result<(), VerifyError>)> = vec![
            ("a good ID token", rs256(&id_claims(json!({}))), ID, Ok(())),
            ("alg none", none, ID, Err(E::Algorithm("none".into()))),
            (
                "HS256 keyed with the public key",
                sign(
                    Algorithm::HS256,
                    Some("test-rsa-1"),
                    None,
                    &id_claims(json!({})),
                ),
                ID,
                Err(E::Algorithm("HS256".into())),
            ),
            (
                "a kid the IdP does not publish",
                sign(Algorithm::RS256, Some("other"), None, &id_claims(json!({}))),
                ID,
                Err(E::UnknownKid(Some("other".into()))),
            ),
            (
                "no kid, one key that fits",
                sign(Algorithm::RS256, None, None, &id_claims(json!({}))),
                ID,
                Ok(()),
            ),
            (
                "another issuer",
                rs256(&id_claims(json!({"iss": "https://evil.test"}))),
                ID,
                Err(E::Issuer),
            ),
            (
                "another audience",
                rs256(&id_claims(json!({"aud": "other-client"}))),
                ID,
                Err(E::Audience),
            ),
            (
                "expired beyond the skew",
                rs256(&id_claims(json!({"exp": now() - 2 * SKEW_SECS as i64}))),
                ID,
                Err(E::Expired),
            ),
            (
                "issued in the future",
                rs256(&id_claims(json!({"iat": now() + 2 * SKEW_SECS as i64}))),
                ID,
                Err(E::NotYetValid),
            ),
            (
                "no iat on an ID token",
                rs256(&id_claims(json!({"iat": null}))),
                ID,
                Err(E::Missing("iat")),
            ),
            (
                "no sub",
                rs256(&id_claims(json!({"sub": null}))),
                ID,
                Err(E::Missing("sub")),
            ),
            (
                "another login's nonce",
                rs256(&id_claims(json!({"nonce": "n-2"}))),
                ID,
                Err(E::Nonce),
            ),
            (
                "no nonce",
                rs256(&id_claims(json!({"nonce": null}))),
                ID,
                Err(E::Nonce),
            ),
            (
                "azp names another client",
                rs256(&id_claims(json!({"azp": "other-client"}))),
                ID,
                Err(E::AuthorizedParty),
            ),
            (
                "several audiences and no azp",
                rs256(&id_claims(json!({"aud": ["gw", "other-client"]}))),
                ID,
                Err(E::AuthorizedParty),
            ),
            (
                "several audiences, azp is this client",
                rs256(&id_claims(json!({"aud": ["gw", "other"], "azp": "gw"}))),
                ID,
                Ok(()),
            ),
            (
                "a refreshed ID token, no nonce (OIDC Core 12.2)",
                rs256(&id_claims(json!({"nonce": null}))),
                REFRESHED,
                Ok(()),
            ),
            (
                "a refreshed ID token with the login's nonce",
                rs256(&id_claims(json!({}))),
                REFRESHED,
                Ok(()),
            ),
            (
                "a refreshed ID token with another nonce",
                rs256(&id_claims(json!({"nonce": "n-2"}))),
                REFRESHED,
                Err(E::Nonce),
            ),
            (
                "a refreshed ID token for another client",
                rs256(&id_claims(json!({"azp": "other-client"}))),
                REFRESHED,
                Err(E::AuthorizedParty),
            ),
            (
                "a refreshed ID token from another issuer",
                rs256(&id_claims(json!({"iss": "https://evil.test"}))),
                REFRESHED,
                Err(E::Issuer),
            ),
            (
                "a good logout token",
                rs256(&logout_claims(json!({}))),
                TokenKind::LogoutToken,
                Ok(()),
            ),
            (
                "a logout token with a nonce",
                rs256(&logout_claims(json!({"nonce": "n-1"}))),
                TokenKind::LogoutToken,
                Err(E::NotLogoutToken("it carries a nonce")),
            ),
            (
                "a logout token without the event",
                rs256(&logout_claims(json!({"events": null}))),
                TokenKind::LogoutToken,
                Err(E::NotLogoutToken("no back-channel logout event")),
            ),
            (
                "a logout token naming nobody",
                rs256(&logout_claims(json!({"sub": null}))),
                TokenKind::LogoutToken,
                Err(E::NotLogoutToken("neither sub nor sid")),
            ),
            (
                "a logout token by sid only",
                rs256(&logout_claims(json!({"sub": null, "sid": "s-1"}))),
                TokenKind::LogoutToken,
                Ok(()),
            ),
            (
                "a logout token without jti",
                rs256(&logout_claims(json!({"jti": null}))),
                TokenKind::LogoutToken,
                Err(E::Missing("jti")),
            ),
            (
                "an old logout token (a replay)",
                rs256(&logout_claims(json!({"iat": now() - 600}))),
                TokenKind::LogoutToken,
                Err(E::Expired),
            ),
            (
                "an ID token as bearer",
                rs256(&id_claims(json!({}))),
                TokenKind::Bearer,
                Ok(()),
            ),
            (
                "a logout token (with exp) as bearer",
                rs256(&logout_claims(json!({"exp": now() + 300}))),
                TokenKind::Bearer,
                Err(E::LogoutTokenAsBearer),
            ),
            (
                "typ logout+jwt as bearer",
                sign(
                    Algorithm::RS256,
                    Some("test-rsa-1"),
                    Some("logout+jwt"),
                    &id_claims(json!({})),
                ),
                TokenKind::Bearer,
                Err(E::LogoutTokenAsBearer),
            ),
            ("not a JWT", "abc.def".to_string(), ID, Err(E::Malformed)),
        ];
        let keys = keys();
        let mut wrong = Vec::new();
        for (name, token, kind, want) in cases {
            let got = verify(&token, &keys, &expect(kind)).map(drop);
            if got != want {
                wrong.push(format!("{name}: got {got:?}, want {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let token = rs256(&id_claims(json!({})));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(id_claims(json!({"sub": "admin"})).to_string())
        };
        let token = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(
            verify(&token, &keys(), &expect(ID)),
            Err(VerifyError::Signature)
        );
    }

    #[test]
    fn key_sets_keep_only_signing_keys_they_can_use() {
        let rsa: Value = serde_json::from_str(JWK).unwrap();
        let mut enc = rsa.clone();
        enc["use"] = json!("enc");
        let cases = [
            ("one signing key", json!({"keys": [rsa.clone()]}), 1),
            ("an encryption key", json!({"keys": [enc]}), 0),
            (
                "a symmetric key",
                json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}),
                0,
            ),
            (
                "an unknown key type beside a good one",
                json!({"keys": [{"kty": "XYZ"}, rsa.clone()]}),
                1,
            ),
            ("no keys member", json!({}), 0),
            ("keys is not a list", json!({"keys": "x"}), 0),
        ];
        for (name, jwks, want) in cases {
            assert_eq!(Keys::parse(&jwks).len(), want, "{name}");
        }
    }

    #[test]
    fn without_kid_two_fitting_keys_are_ambiguous() {
        let rsa: Value = serde_json::from_str(JWK).unwrap();
        let mut twin = rsa.clone();
        twin["kid"] = json!("test-rsa-2");
        let keys = Keys::parse(&json!({"keys": [rsa, twin]}));
        let token = sign(Algorithm::RS256, None, None, &id_claims(json!({})));
        assert_eq!(
            verify(&token, &keys, &expect(ID)),
            Err(VerifyError::UnknownKid(None))
        );
    }
}
