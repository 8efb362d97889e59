//! A node as the JSON kubectl sends: go-yaml v2's decoding into `interface{}` (aliases expanded,
//! merge keys applied in order, later keys overwriting earlier ones) followed by sigs.k8s.io/yaml's
//! conversion (map keys become strings, integral floats are written as integers by Go's JSON).

use serde_json::{Map, Number, Value};

use super::scalar::{resolve_plain, Scalar};
use super::tree::{Kind, NodeId, Stream, Style};

/// Aliases can make a small text expand exponentially ("billion laughs"): a cap on the values made.
const MAX_VALUES: usize = 2_000_000;
const MAX_DEPTH: usize = 500;
const CORE: &str = "tag:yaml.org,2002:";

#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ValueError {
    pub line: usize,
    pub message: String,
}

/// The reading of one document: its value and what kubectl accepts silently but the user should
/// know (a key written twice: kubectl keeps the last).
#[derive(Debug)]
pub struct Read {
    pub value: Value,
    pub warnings: Vec<String>,
}

struct Reader<'s> {
    stream: &'s Stream,
    made: usize,
    warnings: Vec<String>,
}

/// Reads the value of node `id`.
pub fn read(stream: &Stream, id: NodeId) -> Result<Read, ValueError> {
    let mut reader = Reader {
        stream,
        made: 0,
        warnings: Vec::new(),
    };
    let value = reader.node(id, 0)?;
    Ok(Read {
        value,
        warnings: reader.warnings,
    })
}

/// What a scalar node means: its style and tag decide whether it is resolved.
pub fn scalar_of(value: &str, style: Style, tag: Option<&str>) -> Result<Scalar, String> {
    let Some(tag) = tag else {
        return Ok(match style {
            Style::Plain => resolve_plain(value),
            _ => Scalar::Str(value.to_owned()),
        });
    };
    let Some(core) = tag.strip_prefix(CORE) else {
        // A tag of the user's own (`!foo`): v2 keeps the text.
        return Ok(Scalar::Str(value.to_owned()));
    };
    let resolved = resolve_plain(value);
    let fits = match (core, &resolved) {
        ("str", _) => return Ok(Scalar::Str(value.to_owned())),
        ("int", Scalar::Int(_) | Scalar::Uint(_)) => true,
        ("float", Scalar::Float(_)) => true,
        ("float", Scalar::Int(i)) => return Ok(Scalar::Float(*i as f64)),
        ("bool", Scalar::Bool(_)) | ("null", Scalar::Null) => true,
        ("timestamp", Scalar::Str(_)) => true,
        ("merge", Scalar::Merge) => true,
        _ => false,
    };
    if fits {
        Ok(resolved)
    } else {
        Err(format!("cannot decode `{value}` as a !!{core}"))
    }
}

impl Reader<'_> {
    fn error(&self, id: NodeId, message: impl Into<String>) -> ValueError {
        ValueError {
            line: self.stream.nodes[id].line,
            message: message.into(),
        }
    }

    fn node(&mut self, id: NodeId, depth: usize) -> Result<Value, ValueError> {
        self.made += 1;
        if self.made > MAX_VALUES || depth > MAX_DEPTH {
            return Err(self.error(id, "the aliases expand to too large a document"));
        }
        let stream = self.stream;
        match &stream.nodes[id].kind {
            Kind::Alias(target) => self.node(*target, depth + 1),
            Kind::Scalar { value, style, tag } => {
                let scalar =
                    scalar_of(value, *style, tag.as_deref()).map_err(|m| self.error(id, m))?;
                to_json(scalar).map_err(|m| self.error(id, m))
            }
            Kind::Seq { items, .. } => items
                .iter()
                .map(|i| self.node(*i, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Kind::Map { entries, .. } => {
                let mut map = Map::new();
                let mut written = std::collections::HashSet::new();
                for (k, v) in entries {
                    if self.is_merge(*k) {
                        self.merge(*v, &mut map, depth + 1)?;
                        continue;
                    }
                    let key = self.key(*k)?;
                    let value = self.node(*v, depth + 1)?;
                    if !written.insert(key.clone()) {
                        self.warnings.push(format!(
                            "line {}: key {key:?} is written twice in one mapping; kubectl keeps the last",
                            stream.nodes[*k].line
                        ));
                    }
                    map.insert(key, value);
                }
                Ok(Value::Object(map))
            }
        }
    }

    fn is_merge(&self, id: NodeId) -> bool {
        matches!(&self.stream.nodes[id].kind,
            Kind::Scalar { value, style: Style::Plain, tag } if value == "<<"
                && tag.as_deref().is_none_or(|t| t == "tag:yaml.org,2002:merge"))
    }

    /// A merge key's value: a mapping, or a list of them where earlier ones win.
    fn merge(
        &mut self,
        id: NodeId,
        into: &mut Map<String, Value>,
        depth: usize,
    ) -> Result<(), ValueError> {
        let stream = self.stream;
        let target = |id: NodeId| match &stream.nodes[id].kind {
            Kind::Alias(t) => *t,
            _ => id,
        };
        let maps: Vec<NodeId> = match &stream.nodes[target(id)].kind {
            Kind::Map { .. } => vec![id],
            Kind::Seq { items, .. } if !matches!(stream.nodes[id].kind, Kind::Alias(_)) => {
                items.iter().rev().copied().collect()
            }
            _ => {
                return Err(self.error(
                    id,
                    "map merge requires map or sequence of maps as the value",
                ))
            }
        };
        for m in maps {
            if !matches!(stream.nodes[target(m)].kind, Kind::Map { .. }) {
                return Err(
                    self.error(m, "map merge requires map or sequence of maps as the value")
                );
            }
            if let Value::Object(merged) = self.node(m, depth + 1)? {
                into.extend(merged);
            }
        }
        Ok(())
    }

    fn key(&mut self, id: NodeId) -> Result<String, ValueError> {
        key_string(self.stream, id).map_err(|m| self.error(id, m))
    }
}

/// A key as sigs.k8s.io/yaml writes it in JSON.
pub fn key_string(stream: &Stream, id: NodeId) -> Result<String, String> {
    let node = match &stream.nodes[id].kind {
        Kind::Alias(t) => *t,
        _ => id,
    };
    let Kind::Scalar { value, style, tag } = &stream.nodes[node].kind else {
        return Err("a mapping key must be a scalar".into());
    };
    let scalar = scalar_of(value, *style, tag.as_deref())?;
    Ok(match scalar {
        Scalar::Str(s) => s,
        Scalar::Int(i) => i.to_string(),
        Scalar::Uint(u) => u.to_string(),
        Scalar::Bool(b) => b.to_string(),
        // Go formats float keys with 32-bit precision; `.inf`/`.nan` keep their YAML names.
        Scalar::Float(f) if f.is_nan() => ".nan".into(),
        Scalar::Float(f) if f.is_infinite() => if f > 0.0 { ".inf" } else { "-.inf" }.into(),
        Scalar::Float(f) => format!("{}", f as f32),
        Scalar::Null | Scalar::Merge => return Err(format!("unsupported map key {value:?}")),
    })
}

/// A scalar as Go's JSON encoder writes it.
pub fn to_json(scalar: Scalar) -> Result<Value, String> {
    Ok(match scalar {
        Scalar::Null | Scalar::Merge => Value::Null,
        Scalar::Bool(b) => Value::Bool(b),
        Scalar::Int(i) => Value::from(i),
        Scalar::Uint(u) => Value::from(u),
        Scalar::Str(s) => Value::String(s),
        Scalar::Float(f) => float(f).ok_or_else(|| {
            "kubectl cannot convert .inf or .nan to JSON (json: unsupported value)".to_owned()
        })?,
    })
}

/// Go writes an integral float without a fraction, so the API server reads an integer.
fn float(f: f64) -> Option<Value> {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        return Some(Value::from(f as i64));
    }
    Number::from_f64(f).map(Value::Number)
}

/// `value` with integral floats as integers, as kubectl would send it: for comparisons.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (None, None, Some(f)) => float(f).unwrap_or(Value::Null),
            _ => value.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        _ => value.clone(),
    }
}
