//! `X-Auth-Assertion`: an ES256 JWT that tells the upstream who the user
//! is, signed with a P-256 key kept in the store so that every replica
//! signs with the same one; `/_portcullis/jwks.json` publishes the public
//! half.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::Serialize;

use crate::store::StoredKey;

/// How long an assertion is valid.
pub const LIFETIME_SECS: i64 = 300;
/// An assertion is reused until it has less than this left.
pub const REUSE_MARGIN_SECS: i64 = 60;
/// The name of the key in the store.
pub const KEY_NAME: &str = "assertion-es256";

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("the stored signing key is not a P-256 PKCS#8 key: {0}")]
    BadKey(String),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("the signed assertion is not a valid header value")]
    NotHeader,
    #[error("the signing key could not be stored or read: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The signing key every replica shares: read from the store, where it is
/// kept sealed under `session.secret` (someone who can read the database
/// cannot sign assertions with it), or created and stored by the first
/// replica to start. A key that this secret cannot open (the secret was
/// changed) is replaced, and that is logged.
pub async fn shared_signer(
    store: &crate::store::Store,
    secret: &[u8],
) -> Result<Signer, AssertionError> {
    use crate::sealed::{self, Purpose};
    let fresh = Signer::generate()?;
    let sealed_fresh = StoredKey {
        kid: fresh.kid.clone(),
        private_key: sealed::seal(
            secret,
            Purpose::SigningKey,
            &fresh.kid,
            fresh.private_key.as_bytes(),
        ),
    };
    let stored = store.signing_key(KEY_NAME, || sealed_fresh.clone()).await?;
    let opened = sealed::open(
        secret,
        Purpose::SigningKey,
        &stored.kid,
        &stored.private_key,
    )
    .and_then(|pem| String::from_utf8(pem).ok());
    match opened {
        Some(pem) => Signer::new(&StoredKey {
            kid: stored.kid,
            private_key: pem,
        }),
        None => {
            tracing::warn!(
                kid = %stored.kid,
                "the stored assertion key cannot be opened with this session.secret (was it changed?); a new key replaces it, and assertions signed before no longer verify"
            );
            store.replace_signing_key(KEY_NAME, &sealed_fresh).await?;
            Signer::new(&fresh)
        }
    }
}

pub struct Signer {
    kid: String,
    key: EncodingKey,
    jwks: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

/// The claims of one assertion.
#[derive(Debug, Serialize)]
pub struct AssertionClaims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub sub: &'a str,
    /// Only an address the IdP verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    pub email_verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub idp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<&'a str>,
    pub roles: &'a [String],
    pub iat: i64,
    pub exp: i64,
}

impl Signer {
    /// A new random key, for the store.
    pub fn generate() -> Result<StoredKey, AssertionError> {
        let secret = loop {
            // Out-of-range scalars (zero, or above the order) are
            // astronomically rare; draw again.
            if let Ok(k) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break k;
            }
        };
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| AssertionError::BadKey(e.to_string()))?;
        let point = secret.public_key().to_sec1_bytes();
        Ok(StoredKey {
            kid: hex::encode(&crate::util::sha256(&point)[..8]),
            private_key: pem.to_string(),
        })
    }

    pub fn new(stored: &StoredKey) -> Result<Signer, AssertionError> {
        let secret = p256::SecretKey::from_pkcs8_pem(&stored.private_key)
            .map_err(|e| AssertionError::BadKey(e.to_string()))?;
        let key = EncodingKey::from_ec_pem(stored.private_key.as_bytes())
            .map_err(|e| AssertionError::BadKey(e.to_string()))?;
        let jwk = secret.public_key().to_jwk();
        let mut jwk =
            serde_json::to_value(&jwk).map_err(|e| AssertionError::BadKey(e.to_string()))?;
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), stored.kid.clone().into());
            o.insert("alg".into(), "ES256".into());
            o.insert("use".into(), "sig".into());
        }
        Ok(Signer {
            kid: stored.kid.clone(),
            key,
            jwks: serde_json::json!({ "keys": [jwk] }).to_string(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JSON Web Key Set body of `/_portcullis/jwks.json`.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    pub fn sign(&self, claims: &AssertionClaims<'_>) -> Result<String, AssertionError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}
