//! The layering rules of ARCHITECTURE.md, read from the sources: which
//! module may use which engine crate, and that no module imports one from
//! a layer above its own. A broken rule fails here, naming the file, the
//! line and the import.

use std::path::{Path, PathBuf};

/// Modules from the bottom layer up. A module may use the ones on lower
/// layers (and its own); peers on one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    // `test_yaml` is tests/support/yaml.rs, loaded for the unit tests.
    &["util", "paths", "sealed", "request", "listen", "test_yaml"],
    &["config", "metrics"],
    &["telemetry", "upstream", "provision", "oidc", "authz"],
    &["page", "store"],
    &["assertion", "scim"],
    &["session"],
    &["state"],
    &["login"],
    &["preview"],
    &["admin", "proxy"],
    &["app", "fuzzing"],
    &["demo"],
];

/// Engine crates and the only places that may name them.
const ENGINES: &[(&str, &[&str])] = &[
    ("pingora", &["src/proxy/", "src/app.rs"]),
    ("sqlx", &["src/store/"]),
    // The demo's development IdP and echo app are small axum servers too.
    ("axum", &["src/admin/", "src/demo/"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top module a file under `src/` belongs to (`None` for lib.rs and
/// main.rs, which may use everything).
fn module_of(rel: &str) -> Option<String> {
    let rest = rel.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Lines of code, without comments (doc comments name crates freely).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
}

/// Every `crate::name` a line uses, including `use crate::{a, b::c}`.
fn crate_uses(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
        rest = after;
    }
    found
}

#[test]
fn every_module_sits_on_a_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    for f in files {
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        if let Some(m) = module_of(&rel) {
            assert!(
                layer_of(&m).is_some(),
                "{rel}: module {m} is on no layer of tests/layering.rs"
            );
        }
    }
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let mut broken = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        let Some(module) = module_of(&rel) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in code_lines(&text) {
            for used in crate_uses(line) {
                if used == module {
                    continue;
                }
                match layer_of(&used) {
                    Some(l) if l < own => {}
                    Some(l) if l == own => broken.push(format!(
                        "{rel}:{n}: {module} uses its peer {used} (both on layer {l}): {}",
                        line.trim()
                    )),
                    Some(l) => broken.push(format!(
                        "{rel}:{n}: {module} (layer {own}) imports {used} from layer {l} above it: {}",
                        line.trim()
                    )),
                    None => broken.push(format!("{rel}:{n}: crate::{used} is on no layer")),
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn engine_crates_stay_in_their_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let mut broken = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in code_lines(&text) {
            for (engine, allowed) in ENGINES {
                let named =
                    line.contains(&format!("{engine}::")) && !line.contains(&format!("{engine}_"));
                if named && !allowed.iter().any(|a| rel.starts_with(a)) {
                    broken.push(format!(
                        "{rel}:{n}: uses {engine} outside {allowed:?}: {}",
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "engine crates out of place:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    assert_eq!(
        crate_uses("use crate::config::{Config, Route};"),
        vec!["config"]
    );
    assert_eq!(
        crate_uses("use crate::{authz, login::urls};"),
        vec!["authz", "login"]
    );
    assert_eq!(
        crate_uses("x(crate::store::now(), crate::util::sha256(b))"),
        vec!["store", "util"]
    );
    assert_eq!(module_of("src/proxy/admit.rs").as_deref(), Some("proxy"));
    assert_eq!(module_of("src/state.rs").as_deref(), Some("state"));
    assert_eq!(module_of("src/lib.rs"), None);
}
