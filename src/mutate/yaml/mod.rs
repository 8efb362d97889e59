//! YAML as kubectl reads it, for `inject`: kubectl decodes manifests with go-yaml v2 (YAML 1.1
//! rules: `yes`/`on`/`y` are booleans, `0755` is octal, merge keys apply) and converts the result
//! to JSON (sigs.k8s.io/yaml). This module reproduces that reading, keeps where every node sits
//! in the text, and writes values back so that a YAML 1.1 reader sees the same thing.
//!
//! - [`tree`]: the syntax, as positioned nodes (no values yet);
//! - [`scalar`]: go-yaml v2's resolution of one scalar;
//! - [`value`]: a node as the JSON kubectl sends (aliases, merge keys, key conversion);
//! - [`emit`]: JSON values written as YAML that reads back identically under YAML 1.1;
//! - [`edit`]: a JSON patch applied as text insertions next to what the user wrote.

pub mod edit;
pub mod emit;
pub mod scalar;
pub mod tree;
pub mod value;
