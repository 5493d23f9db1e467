//! Host names as routes compare them. Pure.

/// Host as routes compare it: lower-case, no port, no trailing dot.
/// `None` when the value cannot be a host name.
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal, optionally with a port.
        let end = rest.find(']')?;
        let tail = &rest[end + 1..];
        if !(tail.is_empty() || (tail.starts_with(':') && tail[1..].parse::<u16>().is_ok())) {
            return None;
        }
        return Some(format!("[{}]", rest[..end].to_ascii_lowercase()));
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() || port.is_empty() => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // Every label non-empty: `..`, `.x`, `a..b` and a second trailing dot
    // name no host (and would not normalize to themselves again).
    if host.is_empty()
        || host.split('.').any(str::is_empty)
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization_table() {
        for (raw, expected) in [
            ("Example.COM", Some("example.com")),
            ("example.com.", Some("example.com")),
            ("example.com:8080", Some("example.com")),
            ("example.com.:443", Some("example.com")),
            ("[::1]:8080", Some("[::1]")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("", None),
            ("exa mple.com", None),
            ("example.com:abc", None),
            ("a/b", None),
            ("evil.com\r\nx", None),
            // Found by fuzzing: a host of dots normalized to "." and then
            // to nothing.
            ("..", None),
            (".", None),
            ("example.com..", None),
            (".example.com", None),
            ("a..b", None),
        ] {
            assert_eq!(normalize_host(raw).as_deref(), expected, "{raw:?}");
        }
    }
}
