//! Session ids and the cookies that carry them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::Config;

/// A session id as the cookie holds it: 256 random bits, base64url.
pub struct SessionId(pub [u8; 32]);

impl SessionId {
    pub fn generate() -> SessionId {
        SessionId(rand::random())
    }

    /// What the store keeps: the SHA-256 of the id, hex.
    pub fn hash(&self) -> String {
        crate::util::sha256_hex(&self.0)
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// `None` for anything that is not exactly what [`encode`] writes.
    pub fn decode(value: &str) -> Option<SessionId> {
        if value.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        Some(SessionId(bytes.try_into().ok()?))
    }
}

/// The name of one `name=value` pair of a `Cookie` header, trimmed.
pub fn name_of(pair: &[u8]) -> &[u8] {
    let end = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
    pair[..end].trim_ascii()
}

/// Every value of cookie `name` in a `Cookie` header, read as bytes: a
/// value that is not ASCII is skipped, never the whole header.
pub fn values<'a>(header: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(|&b| b == b';').filter_map(move |pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        if name_of(pair) != name.as_bytes() {
            return None;
        }
        let v = std::str::from_utf8(pair[eq + 1..].trim_ascii()).ok()?;
        Some(v.trim_matches('"'))
    })
}

/// How a request's session cookie looks.
pub enum Found {
    None,
    /// Present but not a session id we could have written.
    Malformed,
    Id(SessionId),
}

/// The session id in the `Cookie` header. With several cookies of that name
/// (a host cookie beside a domain one), the first well-formed one counts.
pub fn find(header: Option<&[u8]>, name: &str) -> Found {
    let Some(header) = header else {
        return Found::None;
    };
    let mut found = Found::None;
    for v in values(header, name) {
        match SessionId::decode(v) {
            Some(id) => return Found::Id(id),
            None => found = Found::Malformed,
        }
    }
    found
}

fn attributes(config: &Config, max_age: i64) -> String {
    let mut s = format!("; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax");
    if config.server.public_url.scheme() == "https" {
        s.push_str("; Secure");
    }
    if let Some(d) = &config.session.cookie_domain {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    s
}

/// `Set-Cookie` for a new session.
pub fn set(config: &Config, id: &SessionId) -> String {
    format!(
        "{}={}{}",
        config.session.cookie_name,
        id.encode(),
        attributes(config, config.session.lifetime.as_secs() as i64)
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear(config: &Config) -> String {
    format!("{}={}", config.session.cookie_name, attributes(config, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_hostile_values_are_refused() {
        let id = SessionId::generate();
        let text = id.encode();
        assert_eq!(text.len(), 43);
        assert_eq!(SessionId::decode(&text).map(|i| i.0), Some(id.0));
        for bad in [
            "",
            "x",
            &text[..42],
            &format!("{text}A"),
            &text.replace(&text[..1], "+"),
            "0000000000000000000000000000000000000000000=",
            "../../../../etc/passwd/../../../../../../aa",
        ] {
            assert!(SessionId::decode(bad).is_none(), "{bad:?}");
        }
    }

    fn config(public_url: &str, domain: Option<&str>) -> Config {
        let domain = domain
            .map(|d| format!("  cookie_domain: \"{d}\"\n"))
            .unwrap_or_default();
        let yaml = format!(
            "server: {{listen: \"127.0.0.1:1\", public_url: \"{public_url}\"}}\nsession:\n  secret: \"0123456789abcdef0123456789abcdef\"\n  lifetime: 2h\n{domain}"
        );
        Config::from_yaml(
            &yaml,
            std::path::Path::new("t.yaml"),
            &crate::config::Environment::system(),
        )
        .unwrap()
    }

    #[test]
    fn cookie_attributes_follow_the_config() {
        let id = SessionId::generate();
        let https = set(
            &config("https://auth.example.com", Some(".example.com")),
            &id,
        );
        assert_eq!(
            https,
            format!(
                "_portcullis={}; Path=/; Max-Age=7200; HttpOnly; SameSite=Lax; Secure; Domain=.example.com",
                id.encode()
            )
        );
        let http = set(&config("http://localhost:8080", None), &id);
        assert!(
            !http.contains("Secure") && !http.contains("Domain"),
            "{http}"
        );
        let cleared = clear(&config("https://auth.example.com", None));
        assert_eq!(
            cleared,
            "_portcullis=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn finds_the_first_well_formed_value() {
        let id = SessionId::generate().encode();
        let header = format!("a=1; _p=garbage; _p={id}; b=2");
        assert!(matches!(find(Some(header.as_bytes()), "_p"), Found::Id(i) if i.encode() == id));
        assert!(matches!(
            find(Some(b"a=1; _p=garbage"), "_p"),
            Found::Malformed
        ));
        assert!(matches!(find(Some(b"a=1; _px=1"), "_p"), Found::None));
        assert!(matches!(find(None, "_p"), Found::None));
        // A non-ASCII cookie beside it hides nothing.
        let header = format!("theme=caf\u{e9}; _p={id}");
        assert!(matches!(find(Some(header.as_bytes()), "_p"), Found::Id(_)));
        let mut raw = b"x=\xff\xfe; _p=".to_vec();
        raw.extend_from_slice(id.as_bytes());
        assert!(matches!(find(Some(&raw), "_p"), Found::Id(_)));
    }
}
