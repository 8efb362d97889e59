//! The webhook's mutation applied to manifests (what `migration-injector inject` prints).
//!
//! Input is read as kubectl reads it ([`super::yaml`]: YAML 1.1 scalars, anchors, merge keys,
//! multi-document, JSON, `kind: List`). Each supported workload gets the webhook's patch (the same
//! [`mutate`] call), and the output is the input text with that patch applied as insertions
//! ([`super::yaml::edit`]): comments, key order, quoting and indentation stay as written, and
//! documents nothing is injected into are byte-identical. The result is read back and compared with
//! the patched value; a document whose patch cannot be placed in its text (it goes through an
//! alias, say) is written anew, with a warning, and nothing that reads differently is printed.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

use super::config::InjectorConfig;
use super::workload::WorkloadKind;
use super::yaml::edit::{self, TextEdit};
use super::yaml::emit::{self, Layout};
use super::yaml::tree::{self, Stream};
use super::yaml::value::{self, canonical};
use super::{mutate, MutationError};

/// Documents are numbered from 1, as people count them; lines too.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {document}")]
    Syntax {
        document: usize,
        #[source]
        source: tree::SyntaxError,
    },
    #[error("document {document}")]
    Read {
        document: usize,
        #[source]
        source: value::ValueError,
    },
    #[error("document {document} at line {line} ({kind} {name:?})")]
    Mutation {
        document: usize,
        line: usize,
        kind: WorkloadKind,
        name: String,
        #[source]
        source: MutationError,
    },
    #[error("document {document} at line {line} ({kind} {name:?}): the patch does not apply")]
    Apply {
        document: usize,
        line: usize,
        kind: WorkloadKind,
        name: String,
        #[source]
        source: json_patch::PatchError,
    },
    /// A bug: the output would not read as the mutated document.
    #[error("document {document}: the output does not read back as the mutated document")]
    Verify { document: usize },
}

/// The result of injecting into one input.
#[derive(Debug, Default)]
pub struct Injected {
    /// Every non-empty document as kubectl reads it, after the mutation.
    pub documents: Vec<Value>,
    pub warnings: Vec<String>,
    /// The output text.
    pub text: String,
}

/// Where one document is and what it becomes.
struct Planned {
    /// Index in the parsed stream, number from 1.
    index: usize,
    number: usize,
    value: Value,
    ops: Vec<PatchOperation>,
}

/// Injects into every document of `input` (YAML, multi-document, or JSON).
pub fn inject_str(input: &str, config: &InjectorConfig) -> Result<Injected, InjectError> {
    let stream = tree::parse(input).map_err(|source| InjectError::Syntax {
        document: source.document,
        source,
    })?;
    let mut out = Injected::default();
    let mut planned = Vec::new();
    for (index, doc) in stream.documents.iter().enumerate() {
        let number = index + 1;
        let Some(root) = doc.root else { continue };
        let read = value::read(&stream, root).map_err(|source| InjectError::Read {
            document: number,
            source,
        })?;
        out.warnings.extend(
            read.warnings
                .into_iter()
                .map(|w| format!("document {number}, {w}")),
        );
        let mut value = read.value;
        if value.is_null() {
            continue; // An empty document, such as one after a trailing `---`.
        }
        let mut ops = Vec::new();
        out.warnings.extend(mutation_of(
            &value,
            config,
            number,
            doc.line,
            &mut Vec::new(),
            &mut ops,
        )?);
        if !ops.is_empty() {
            json_patch::patch(&mut value, &ops).map_err(|source| {
                let (kind, name) = describe(&value);
                InjectError::Apply {
                    document: number,
                    line: doc.line,
                    kind,
                    name,
                    source,
                }
            })?;
        }
        out.documents.push(value.clone());
        if !ops.is_empty() {
            planned.push(Planned {
                index,
                number,
                value,
                ops,
            });
        }
    }
    out.text = write(input, &stream, &planned, &mut out.warnings)?;
    Ok(out)
}

/// The output text: edits in place where possible, documents written anew otherwise; checked
/// by reading it back.
fn write(
    input: &str,
    stream: &Stream,
    planned: &[Planned],
    warnings: &mut Vec<String>,
) -> Result<String, InjectError> {
    if planned.is_empty() {
        return Ok(input.to_owned());
    }
    let mut anew = vec![false; planned.len()];
    let mut reasons: Vec<Option<String>> = vec![None; planned.len()];
    // Two rounds: in place, then the documents that failed written anew.
    for _round in 0..2 {
        let mut edits: Vec<TextEdit> = Vec::new();
        for (i, p) in planned.iter().enumerate() {
            let doc = &stream.documents[p.index];
            let placed = if anew[i] {
                None
            } else {
                match edit::edits(input, stream, doc, &p.ops, &p.value) {
                    Ok(e) => Some(e),
                    Err(why) => {
                        reasons[i] = Some(why.to_string());
                        anew[i] = true;
                        None
                    }
                }
            };
            match placed {
                Some(e) => edits.extend(e),
                None => edits.push(rewrite(input, stream, p)),
            }
        }
        let text = edit::apply(input, edits).unwrap_or_default();
        let reread = tree::parse(&text).ok();
        let wrong: Vec<usize> = planned
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                !reread
                    .as_ref()
                    .is_some_and(|s| reads_as(s, p.index, &p.value))
            })
            .map(|(i, _)| i)
            .collect();
        if wrong.is_empty() {
            for (i, p) in planned.iter().enumerate() {
                if anew[i] {
                    warnings.push(format!(
                        "document {}: written anew, without its comments and layout ({})",
                        p.number,
                        reasons[i]
                            .as_deref()
                            .unwrap_or("the edits did not read back")
                    ));
                }
            }
            return Ok(text);
        }
        if let Some(&i) = wrong.iter().find(|i| anew[**i]) {
            return Err(InjectError::Verify {
                document: planned[i].number,
            });
        }
        for i in wrong {
            anew[i] = true;
        }
    }
    Err(InjectError::Verify {
        document: planned.first().map_or(0, |p| p.number),
    })
}

/// Whether document `index` of `stream` reads as `want`.
fn reads_as(stream: &Stream, index: usize, want: &Value) -> bool {
    let Some(root) = stream.documents.get(index).and_then(|d| d.root) else {
        return false;
    };
    value::read(stream, root).is_ok_and(|r| canonical(&r.value) == canonical(want))
}

/// The whole document replaced by its mutated value: block YAML, or JSON if it was written so.
fn rewrite(input: &str, stream: &Stream, p: &Planned) -> TextEdit {
    let doc = &stream.documents[p.index];
    let Some(root) = doc.root.map(|r| &stream.nodes[r]) else {
        return TextEdit {
            start: doc.region.0,
            end: doc.region.0,
            text: String::new(),
        };
    };
    let flow = input[root.start..root.end.max(root.start)].starts_with(['{', '[']);
    let mut text = if flow {
        emit::pretty(&p.value, 0)
    } else {
        emit::document(&p.value, Layout::default())
            .trim_end_matches('\n')
            .to_owned()
    };
    // A root that shares its line with `---` (or a tag) starts on the next line.
    let line_start = input[..root.start].rfind('\n').map_or(0, |i| i + 1);
    if !flow && !input[line_start..root.start].trim().is_empty() {
        text.insert(0, '\n');
    }
    if input.contains("\r\n") {
        text = text.replace('\n', "\r\n");
    }
    TextEdit {
        start: root.start,
        end: root.end.max(root.start),
        text,
    }
}

fn describe(object: &Value) -> (WorkloadKind, String) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    (
        WorkloadKind::from_api_version(api_version, kind).unwrap_or(WorkloadKind::Pod),
        name,
    )
}

/// The webhook's patch for `object` (on CREATE), its paths prefixed by `prefix` (the way into
/// a `List`), appended to `ops`. Returns the warnings.
fn mutation_of(
    object: &Value,
    config: &InjectorConfig,
    document: usize,
    line: usize,
    prefix: &mut Vec<String>,
    ops: &mut Vec<PatchOperation>,
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
        if let Some(items) = object.get("items").and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                prefix.extend(["items".to_owned(), i.to_string()]);
                warnings.extend(mutation_of(item, config, document, line, prefix, ops)?);
                prefix.truncate(prefix.len() - 2);
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
    let mutation = mutate(kind, &object.to_string(), config, false).map_err(|source| {
        InjectError::Mutation {
            document,
            line,
            kind,
            name: name.clone(),
            source,
        }
    })?;
    ops.extend(mutation.patch.0.into_iter().map(|op| prefixed(op, prefix)));
    Ok(mutation
        .warnings
        .into_iter()
        .map(|w| format!("document {document}, {kind} {name:?}: {w}"))
        .collect())
}

fn prefixed(op: PatchOperation, prefix: &[String]) -> PatchOperation {
    if prefix.is_empty() {
        return op;
    }
    let with = |path: &PointerBuf| {
        PointerBuf::from_tokens(
            prefix
                .iter()
                .map(String::as_str)
                .chain(
                    path.tokens()
                        .map(|t| t.decoded().into_owned())
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str),
                )
                .collect::<Vec<_>>(),
        )
    };
    match op {
        PatchOperation::Add(o) => PatchOperation::Add(AddOperation {
            path: with(&o.path),
            value: o.value,
        }),
        PatchOperation::Replace(o) => PatchOperation::Replace(ReplaceOperation {
            path: with(&o.path),
            value: o.value,
        }),
        PatchOperation::Remove(o) => PatchOperation::Remove(RemoveOperation {
            path: with(&o.path),
        }),
        other => other,
    }
}

/// Every non-empty document of `input` as kubectl reads it (YAML 1.1, aliases and merge keys
/// resolved), without mutating anything.
pub fn read_str(input: &str) -> Result<Vec<Value>, InjectError> {
    let stream = tree::parse(input).map_err(|source| InjectError::Syntax {
        document: source.document,
        source,
    })?;
    let mut out = Vec::new();
    for (index, doc) in stream.documents.iter().enumerate() {
        let Some(root) = doc.root else { continue };
        let read = value::read(&stream, root).map_err(|source| InjectError::Read {
            document: index + 1,
            source,
        })?;
        if !read.value.is_null() {
            out.push(read.value);
        }
    }
    Ok(out)
}

/// Renders the output (kept for callers of the former API: the text is made by [`inject_str`]).
pub fn render(injected: &Injected) -> Result<String, InjectError> {
    Ok(injected.text.clone())
}
