//! The webhook's mutation applied to manifests (what `migration-injector inject` prints). Reads
//! multi-document YAML or JSON (including `kind: List`), mutates every supported workload with
//! the same code as the webhook, and passes other documents through.

use serde::Deserialize;
use serde_json::Value;

use super::config::InjectorConfig;
use super::workload::WorkloadKind;
use super::{mutate, MutationError};

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {index}")]
    Yaml {
        index: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("document {index} ({kind} {name:?})")]
    Mutation {
        index: usize,
        kind: WorkloadKind,
        name: String,
        #[source]
        source: MutationError,
    },
    #[error("document {index} ({kind} {name:?}): the patch does not apply")]
    Apply {
        index: usize,
        kind: WorkloadKind,
        name: String,
        #[source]
        source: json_patch::PatchError,
    },
    #[error("cannot write output")]
    Output(#[source] serde_json::Error),
    #[error("cannot write output")]
    OutputYaml(#[source] serde_yaml_ng::Error),
}

/// The result of injecting into one input.
#[derive(Debug, Default)]
pub struct Injected {
    pub documents: Vec<Value>,
    /// For each document the mutation left unchanged, its original YAML text, written back as
    /// is so comments and formatting survive.
    pub originals: Vec<Option<String>>,
    pub warnings: Vec<String>,
    /// Whether the input was JSON, so the output can be too.
    pub json: bool,
}

/// Mutates one object in place, as the webhook would on CREATE. Returns its warnings.
pub fn inject_object(
    object: &mut Value,
    config: &InjectorConfig,
    index: usize,
) -> Result<Vec<String>, InjectError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind_name = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind_name == "List" && api_version == "v1" {
        let mut warnings = Vec::new();
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                warnings.extend(inject_object(item, config, index)?);
            }
        }
        return Ok(warnings);
    }
    let Some(kind) = WorkloadKind::from_api_version(api_version, kind_name) else {
        return Ok(Vec::new());
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // Same entry point as the webhook: the object's JSON text.
    let text = object.to_string();
    let mutation = mutate(kind, &text, config, false).map_err(|source| InjectError::Mutation {
        index,
        kind,
        name: name.clone(),
        source,
    })?;
    json_patch::patch(object, &mutation.patch).map_err(|source| InjectError::Apply {
        index,
        kind,
        name: name.clone(),
        source,
    })?;
    Ok(mutation
        .warnings
        .into_iter()
        .map(|w| format!("{kind} {name:?}: {w}"))
        .collect())
}

/// Injects into every document of `input` (YAML, multi-document, or JSON).
pub fn inject_str(input: &str, config: &InjectorConfig) -> Result<Injected, InjectError> {
    let json = input.trim_start().starts_with(['{', '[']);
    let mut out = Injected {
        json,
        ..Injected::default()
    };
    // Each YAML document with its own text when the input splits cleanly on `---` lines;
    // otherwise (JSON, or YAML the simple split misreads) parsed as a whole, without texts.
    let documents = match (!json).then(|| split_documents(input)).flatten() {
        Some(docs) => docs,
        None => {
            let mut docs = Vec::new();
            for (index, document) in serde_yaml_ng::Deserializer::from_str(input).enumerate() {
                let value = Value::deserialize(document)
                    .map_err(|source| InjectError::Yaml { index, source })?;
                docs.push((value, None));
            }
            docs
        }
    };
    for (index, (mut value, text)) in documents.into_iter().enumerate() {
        if value.is_null() {
            continue; // An empty document, such as a trailing `---`.
        }
        let before = text.as_ref().map(|_| value.clone());
        out.warnings
            .extend(inject_object(&mut value, config, index)?);
        let unchanged = before.is_some_and(|b| b == value);
        out.originals.push(if unchanged { text } else { None });
        out.documents.push(value);
    }
    Ok(out)
}

/// Splits YAML on document-separator lines and parses each part on its own. `None` when a part
/// does not parse as exactly one document, which means the split was too naive for this input.
fn split_documents(input: &str) -> Option<Vec<(Value, Option<String>)>> {
    let mut parts = vec![String::new()];
    for line in input.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            parts.push(String::new());
            if bare != "---" {
                return None; // Content on the separator line: leave it to the full parser.
            }
            continue;
        }
        if let Some(last) = parts.last_mut() {
            last.push_str(line);
        }
    }
    parts
        .into_iter()
        .map(|text| {
            let first = {
                let mut docs = serde_yaml_ng::Deserializer::from_str(&text);
                let first = docs.next().map(Value::deserialize).transpose().ok()?;
                if docs.next().is_some() {
                    return None;
                }
                first
            };
            Some((first.unwrap_or(Value::Null), Some(text)))
        })
        .collect()
}

/// Renders documents as multi-document YAML, or as JSON when the input was JSON.
pub fn render(injected: &Injected) -> Result<String, InjectError> {
    if injected.json {
        let mut out = String::new();
        for d in &injected.documents {
            out.push_str(&serde_json::to_string_pretty(d).map_err(InjectError::Output)?);
            out.push('\n');
        }
        return Ok(out);
    }
    let mut out = String::new();
    for (i, d) in injected.documents.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        match injected.originals.get(i).and_then(Option::as_deref) {
            Some(text) => {
                out.push_str(text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(&serde_yaml_ng::to_string(d).map_err(InjectError::OutputYaml)?),
        }
    }
    Ok(out)
}
