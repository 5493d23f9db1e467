//! The login-state cookie: what a login in flight must remember between
//! `/_portcullis/login` and the callback (IdP, `state`, `nonce`, PKCE
//! verifier, where to go after), sealed with AES-256-GCM under a key
//! derived from `session.secret` with HKDF. Any replica can open it; nobody
//! else can read or forge it. Each login gets a cookie of its own, named
//! after its `state`, so logins in several tabs do not overwrite each other.

use serde::{Deserialize, Serialize};

use super::sealed::{self, Purpose};

use crate::config::Config;

/// How long a login may take from start to callback.
pub const LIFETIME_SECS: i64 = 600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub idp: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to send the user afterwards (already validated).
    pub rd: String,
    /// Unix seconds when the login began.
    pub iat: i64,
}

/// The cookie name for the login with this `state`.
pub fn cookie_name(config: &Config, state: &str) -> String {
    format!(
        "{}_login_{}",
        config.session.cookie_name,
        &hex::encode(crate::util::sha256(state.as_bytes()))[..16]
    )
}

/// Seals `s`; the cookie's name is bound in as associated data, so a
/// sealed value cannot be moved to another login's cookie.
pub fn seal(secret: &[u8], name: &str, s: &LoginState) -> String {
    let plain = serde_json::to_vec(s).unwrap_or_default();
    sealed::seal(secret, Purpose::LoginState, name, &plain)
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the login-state cookie is not readable (tampered, or from another deployment)")]
    Tampered,
    #[error("the login took longer than 10 minutes")]
    Expired,
}

pub fn open(secret: &[u8], name: &str, value: &str, now: i64) -> Result<LoginState, OpenError> {
    let plain =
        sealed::open(secret, Purpose::LoginState, name, value).ok_or(OpenError::Tampered)?;
    let state: LoginState = serde_json::from_slice(&plain).map_err(|_| OpenError::Tampered)?;
    if now - state.iat > LIFETIME_SECS || state.iat - now > 60 {
        return Err(OpenError::Expired);
    }
    Ok(state)
}

/// `Set-Cookie` for a login in flight: only sent to the callback.
pub fn set_cookie(config: &Config, name: &str, value: &str) -> String {
    cookie_line(config, name, value, LIFETIME_SECS)
}

pub fn clear_cookie(config: &Config, name: &str) -> String {
    cookie_line(config, name, "", 0)
}

fn cookie_line(config: &Config, name: &str, value: &str, max_age: i64) -> String {
    let secure = if config.server.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{name}={value}; Path=/_portcullis/callback; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn sample(iat: i64) -> LoginState {
        LoginState {
            idp: "authentik".into(),
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            rd: "/".into(),
            iat,
        }
    }

    #[test]
    fn round_trip_and_every_tampering_is_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let sealed = seal(secret, "c1", &sample(1000));
        assert_eq!(open(secret, "c1", &sealed, 1001), Ok(sample(1000)));
        // Another secret, another cookie name, a flipped byte, truncation.
        assert_eq!(
            open(b"another secret of enough length!!", "c1", &sealed, 1001),
            Err(OpenError::Tampered)
        );
        assert_eq!(open(secret, "c2", &sealed, 1001), Err(OpenError::Tampered));
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            open(secret, "c1", &URL_SAFE_NO_PAD.encode(&raw), 1001),
            Err(OpenError::Tampered)
        );
        assert_eq!(
            open(secret, "c1", &sealed[..20], 1001),
            Err(OpenError::Tampered)
        );
        assert_eq!(
            open(secret, "c1", "not base64!", 1001),
            Err(OpenError::Tampered)
        );
        // Too old.
        assert_eq!(
            open(secret, "c1", &sealed, 1000 + 601),
            Err(OpenError::Expired)
        );
    }
}
