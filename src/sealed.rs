//! Authenticated encryption under keys derived from `session.secret`:
//! AES-256-GCM, one HKDF-SHA256 key per purpose, a random nonce per value,
//! associated data binding a value to where it belongs. Every replica has
//! the secret, so every replica can open what another sealed.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a key is for; each gets its own key.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    LoginState,
    SigningKey,
    /// A session's refresh token in the store (bound to the session).
    RefreshToken,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::LoginState => b"login-state cookie v1",
            Purpose::SigningKey => b"assertion signing key v1",
            Purpose::RefreshToken => b"session refresh token v1",
        }
    }
}

fn cipher(secret: &[u8], purpose: Purpose) -> Aes256Gcm {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"portcullis"), secret);
    let mut key = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand(purpose.info(), &mut key);
    Aes256Gcm::new(&key.into())
}

/// `plain` sealed for `purpose` and bound to `aad`, as base64url text.
pub fn seal(secret: &[u8], purpose: Purpose, aad: &str, plain: &[u8]) -> String {
    let nonce: [u8; 12] = rand::random();
    let sealed = cipher(secret, purpose)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plain,
                aad: aad.as_bytes(),
            },
        )
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend(sealed);
    URL_SAFE_NO_PAD.encode(out)
}

/// The plaintext, if `value` was sealed by [`seal`] with this secret,
/// purpose and `aad`, and not altered since.
pub fn open(secret: &[u8], purpose: Purpose, aad: &str, value: &str) -> Option<Vec<u8>> {
    let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
    if raw.len() < 12 + 16 {
        return None;
    }
    let (nonce, sealed) = raw.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    cipher(secret, purpose)
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_bindings_do_not_mix() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let v = seal(secret, Purpose::SigningKey, "kid-1", b"pem");
        assert_eq!(
            open(secret, Purpose::SigningKey, "kid-1", &v).as_deref(),
            Some(&b"pem"[..])
        );
        assert_eq!(open(secret, Purpose::LoginState, "kid-1", &v), None);
        assert_eq!(open(secret, Purpose::SigningKey, "kid-2", &v), None);
        assert_eq!(
            open(
                b"another secret of enough length!!",
                Purpose::SigningKey,
                "kid-1",
                &v
            ),
            None
        );
    }
}
