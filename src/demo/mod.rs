//! The `demo` command's parts.

pub mod echo;
