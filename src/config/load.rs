//! Loading a configuration: the file read, `${VAR}` substituted, the YAML
//! parsed with its errors located, then validated (`validate/`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use serde_yaml::Value;

use super::error::{ConfigError, Problem};
use super::file::FileConfig;
use super::model::*;
use super::validate::Validator;

impl Config {
    /// Reads, substitutes `${VAR}`, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_yaml(&text, path, &Environment::system())
    }

    /// Parses and validates YAML text against `env`.
    pub fn from_yaml(text: &str, source: &Path, env: &Environment) -> Result<Config, ConfigError> {
        let file = source.display().to_string();
        let mut value: Value = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::Syntax {
                file: file.clone(),
                line,
                column,
                message: strip_location(&e.to_string()),
            }
        })?;
        if value.is_null() {
            return Err(ConfigError::Invalid {
                file,
                problems: vec![Problem::new("", "the file is empty")],
            });
        }
        let mut problems = Vec::new();
        substitute_env(&mut value, &mut String::new(), env.var, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { file, problems });
        }
        let raw: FileConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigError::Invalid {
                file: file.clone(),
                problems: vec![Problem::new(path, strip_location(&e.inner().to_string()))],
            }
        })?;
        let mut v = Validator {
            problems: Vec::new(),
            warnings: Vec::new(),
            resolve: env.resolve,
        };
        let config = v.config(raw, source);
        match config {
            Some(c) if v.problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid {
                file,
                problems: v.problems,
            }),
        }
    }
}

/// serde_yaml appends " at line L column C" to messages; the location is
/// reported separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Replaces `${VAR}` in every string of the document; `$${` stays a
/// literal `${`. A missing variable is a problem at the string's path.
fn substitute_env(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(Problem::new(path.clone(), message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute_env(item, path, env, problems);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                let key = match key {
                    Value::String(k) => k.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                substitute_env(item, path, env, problems);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => substitute_env(&mut tagged.value, path, env, problems),
        _ => {}
    }
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated ${ in string".to_string())?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name ${{{name}}}"));
            }
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What a config is checked against besides its text: environment
/// variables for `${VAR}`, and name resolution for addresses.
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub resolve: &'a dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
}

impl Environment<'static> {
    /// The process environment and the system resolver.
    pub fn system() -> Environment<'static> {
        Environment {
            var: &|name| std::env::var(name).ok(),
            resolve: &|addr| addr.to_socket_addrs().map(|a| a.collect()),
        }
    }
}
