//! berth's spec format: the Compose file format, parsed with `serde-saphyr` (line/column
//! errors, merge keys, duplicate keys refused, alias and size budgets), interpolated, merged
//! across several files the way Compose merges them, and validated into a typed
//! [`Project`]. Every error is one line `file:line:column: message`. See docs/spec.md.

pub mod ctx;
pub mod error;
pub mod interpolate;
pub mod load;
pub mod model;
pub mod ports;
pub mod service;
pub mod tree;

pub use error::SpecError;
pub use load::{load, load_texts, merge, normalize_project_name, LoadOptions, Loaded};
pub use model::*;
pub use ports::parse_port;
pub use service::split_words;
