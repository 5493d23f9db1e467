//! The login-state cookie: what a login in flight must remember between
//! `/_portcullis/login` and the callback (IdP, `state`, `nonce`, PKCE
//! verifier, where to go after), sealed with AES-256-GCM under a key
//! derived from `session.secret` with HKDF. Any replica can open it; nobody
//! else can read or forge it. Each login gets a cookie of its own, named
//! after its `state`, so logins in several tabs do not overwrite each other.

use serde::{Deserialize, Serialize};

use crate::sealed::{self, Purpose};

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
    /// What the route asked of this sign-in (checked on the ID token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUpAsked>,
}

/// A route's `step_up`, as asked of the IdP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUpAsked {
    pub acr_values: Vec<String>,
    /// Seconds.
    pub max_age: Option<u64>,
}

/// The cookie name for the login with this `state`.
pub fn cookie_name(config: &Config, state: &str) -> String {
    format!(
        "{}_login_{}",
        config.session.cookie_name,
        &crate::util::sha256_hex(state.as_bytes())[..16]
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

/// No `Set-Cookie` line the gateway writes is longer: browsers drop a
/// cookie over 4,096 bytes, and with it the login.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// The longest `rd` a login keeps; a longer deep link returns to its
/// route's first page instead.
pub const MAX_RD_BYTES: usize = 4096;

/// Most pieces one login-state value is cut into.
const MAX_PIECES: usize = 8;

fn piece_name(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_string()
    } else {
        format!("{name}_{i}")
    }
}

/// `Set-Cookie` lines for a login in flight, only sent to the callback:
/// the sealed value cut into as many cookies as keep each line within
/// [`MAX_COOKIE_BYTES`]. The first piece says how many there are.
pub fn set_cookies(config: &Config, name: &str, sealed: &str) -> Vec<String> {
    let overhead = cookie_line(config, &piece_name(name, MAX_PIECES), "", LIFETIME_SECS).len();
    // Room for the count prefix (`8.`) on the first piece.
    let room = MAX_COOKIE_BYTES - overhead - 2;
    // Sealed values are base64url: every byte is a character.
    let pieces: Vec<&str> = sealed
        .as_bytes()
        .chunks(room)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let value = if i == 0 {
                format!("{}.{piece}", pieces.len())
            } else {
                piece.to_string()
            };
            cookie_line(config, &piece_name(name, i), &value, LIFETIME_SECS)
        })
        .collect()
}

/// The sealed value of login `name`, put together from its pieces in the
/// `Cookie` header; `None` when the first piece is missing, and a value
/// that will not open when a later one is.
pub fn read(header: &[u8], name: &str) -> Option<String> {
    let first = super::cookie::values(header, name).next()?;
    let (count, head) = first.split_once('.')?;
    let count: usize = count
        .parse()
        .ok()
        .filter(|n| (1..=MAX_PIECES).contains(n))?;
    let mut sealed = head.to_string();
    for i in 1..count {
        sealed.push_str(super::cookie::values(header, &piece_name(name, i)).next()?);
    }
    Some(sealed)
}

/// `Set-Cookie` lines that remove every piece of login `name` that the
/// `Cookie` header holds.
pub fn clear_cookies(config: &Config, name: &str, header: &[u8]) -> Vec<String> {
    let count = super::cookie::values(header, name)
        .next()
        .and_then(|v| v.split_once('.'))
        .and_then(|(n, _)| n.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_PIECES);
    (0..count)
        .map(|i| cookie_line(config, &piece_name(name, i), "", 0))
        .collect()
}

fn cookie_line(config: &Config, name: &str, value: &str, max_age: i64) -> String {
    let secure = if config.server.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{name}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        crate::paths::CALLBACK
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
            step_up: None,
        }
    }

    fn config() -> Config {
        Config::from_yaml(
            "server: {listen: \"127.0.0.1:1\", public_url: \"https://auth.example.com\"}\nsession:\n  secret: \"0123456789abcdef0123456789abcdef\"\n",
            std::path::Path::new("t.yaml"),
            &crate::config::Environment::system(),
        )
        .unwrap()
    }

    /// The `Cookie` header a browser sends back for these `Set-Cookie` lines.
    fn header_for(lines: &[String]) -> String {
        lines
            .iter()
            .map(|l| l.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn a_deep_link_of_4_kb_fits_in_cookies_of_at_most_4096_bytes() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let config = config();
        for rd_len in [1, 2_800, 3_000, MAX_RD_BYTES] {
            let mut state = sample(1000);
            state.rd = format!("https://app.example.com/{}", "a".repeat(rd_len));
            let name = "_portcullis_login_0011223344556677";
            let sealed = seal(secret, name, &state);
            let lines = set_cookies(&config, name, &sealed);
            for line in &lines {
                assert!(line.len() <= MAX_COOKIE_BYTES, "{} bytes", line.len());
            }
            let header = format!("other=1; {}; tail=2", header_for(&lines));
            let back = read(header.as_bytes(), name).expect("all pieces found");
            assert_eq!(open(secret, name, &back, 1001), Ok(state), "rd of {rd_len}");
            assert_eq!(
                clear_cookies(&config, name, header.as_bytes()).len(),
                lines.len()
            );
        }
    }

    #[test]
    fn a_missing_or_forged_piece_does_not_open() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let mut state = sample(1000);
        state.rd = "x".repeat(MAX_RD_BYTES);
        let name = "_p_login_1";
        let lines = set_cookies(&config(), name, &seal(secret, name, &state));
        assert!(lines.len() >= 2);
        let header = header_for(&lines[..1]);
        assert_eq!(read(header.as_bytes(), name), None);
        let forged = format!("{}; {name}_1=AAAA", header_for(&lines[..1]));
        let joined = read(forged.as_bytes(), name).unwrap();
        assert_eq!(open(secret, name, &joined, 1001), Err(OpenError::Tampered));
        for bad in ["0.abc", "99.abc", "x.abc", "abc"] {
            assert_eq!(
                read(format!("{name}={bad}").as_bytes(), name),
                None,
                "{bad}"
            );
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
