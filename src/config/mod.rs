//! Configuration: the YAML file as written (`file`, private here), the
//! loader (`load`: `${VAR}`, YAML errors with line and column), one
//! validator per section (`validate/`), the validated form the rest of the
//! program sees (`model`), and the errors that name the place in the file
//! (`error`).

pub mod error;
mod file;
mod load;
pub mod model;
mod validate;

pub use error::{ConfigError, Problem};
pub use load::Environment;
pub use model::*;
pub use validate::{parse_duration, valid_domain};

/// JSON Schema of the configuration file, generated from the same types
/// that parse it.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(file::FileConfig);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
