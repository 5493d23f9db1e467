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
                    .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                    .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
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
fn unverified_part(token: &str, part: usize) -> Option<Value> {
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
