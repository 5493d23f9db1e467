use std::fmt;

/// One thing wrong (or worth a warning) in the file, at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// YAML path, e.g. `identity_providers[0].provisioning.organizations.home-lab.roles`.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration file was rejected. Always names the file, and the
/// place in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: YAML syntax error: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: invalid configuration:\n{}", list(.problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem found, for callers that want them one by one.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Invalid { problems, .. } => problems.clone(),
            ConfigError::Read { source, .. } => vec![Problem::new("", source.to_string())],
            ConfigError::Syntax {
                line,
                column,
                message,
                ..
            } => vec![Problem::new(
                "",
                format!("line {line}, column {column}: {message}"),
            )],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
