//! Configuration: the YAML file (`file`), its validated form (`model`) and
//! the errors that name the place in the file (`error`).

pub mod error;
pub mod file;
pub mod model;

pub use error::{ConfigError, Problem};
pub use model::*;

/// JSON Schema of the configuration file, generated from the same types
/// that parse it.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(file::FileConfig);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
