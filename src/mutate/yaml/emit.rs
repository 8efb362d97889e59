//! JSON values written as block YAML that a YAML 1.1 reader (kubectl) reads back identically:
//! a string is left plain only when go-yaml v2 would read it back as that same string, so `"no"`,
//! `"0755"` or `"1_000"` are quoted; numbers, booleans and nulls are written plain.

use serde_json::Value;

use super::scalar::{resolve_plain, Scalar};

/// How the document around an insertion is indented, so what is added looks like its siblings.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Columns between a key and the keys of its mapping value.
    pub step: usize,
    /// Whether a sequence under a key is indented (`key:\n  - a`) or not (`key:\n- a`).
    pub indent_sequences: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            step: 2,
            indent_sequences: false,
        }
    }
}

/// `key: value` as block lines, the first at column `indent`; ends with a newline.
pub fn entry(key: &str, value: &Value, indent: usize, layout: Layout) -> String {
    entry_raw(&scalar_string(key), value, indent, layout)
}

/// [`entry`] with the key's text as written (quoting kept).
pub fn entry_raw(raw_key: &str, value: &Value, indent: usize, layout: Layout) -> String {
    let mut out = " ".repeat(indent);
    out.push_str(raw_key);
    out.push(':');
    after_key(value, indent, layout, &mut out);
    out
}

/// A sequence item: `- ` at column `dash`, its content at column `content`; ends with a newline.
pub fn item(value: &Value, dash: usize, content: usize, layout: Layout) -> String {
    let mut out = " ".repeat(dash);
    out.push('-');
    out.push_str(&" ".repeat(content.saturating_sub(dash + 1).max(1)));
    item_body(value, content, layout, &mut out);
    out
}

/// A value that starts mid-line at column `col` (a sequence item's content); ends with a newline.
pub fn item_body(value: &Value, col: usize, layout: Layout, out: &mut String) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            for (i, (k, v)) in named_first(m).enumerate() {
                let e = entry(k, v, col, layout);
                out.push_str(if i == 0 {
                    e.trim_start_matches(' ')
                } else {
                    &e
                });
            }
        }
        // Nested sequences are rare in pod specs: written as JSON, which YAML reads as is.
        Value::Array(_) => {
            out.push_str(&flow(value));
            out.push('\n');
        }
        _ => {
            out.push_str(&inline(value));
            out.push('\n');
        }
    }
}

/// A whole document at column 0 (used when a document is written anew).
pub fn document(value: &Value, layout: Layout) -> String {
    match value {
        Value::Object(m) if !m.is_empty() => {
            m.iter().map(|(k, v)| entry(k, v, 0, layout)).collect()
        }
        Value::Array(a) if !a.is_empty() => a.iter().map(|v| item(v, 0, 2, layout)).collect(),
        _ => format!("{}\n", inline(value)),
    }
}

fn after_key(value: &Value, indent: usize, layout: Layout, out: &mut String) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            for (k, v) in named_first(m) {
                out.push_str(&entry(k, v, indent + layout.step, layout));
            }
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            let dash = if layout.indent_sequences {
                indent + layout.step
            } else {
                indent
            };
            for v in a {
                out.push_str(&item(v, dash, dash + 2, layout));
            }
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(value));
            out.push('\n');
        }
    }
}

/// A mapping's members with `name` first, as people write containers and volumes.
fn named_first(m: &serde_json::Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    m.iter()
        .filter(|(k, _)| *k == "name")
        .chain(m.iter().filter(|(k, _)| *k != "name"))
}

/// JSON spread over lines (for JSON input), continuation lines indented by `indent`.
pub fn pretty(value: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match value {
        Value::Array(a) if !a.is_empty() => {
            let inner: Vec<String> = a
                .iter()
                .map(|v| format!("{pad}  {}", pretty(v, indent + 2)))
                .collect();
            format!("[\n{}\n{pad}]", inner.join(",\n"))
        }
        Value::Object(m) if !m.is_empty() => {
            let inner: Vec<String> = named_first(m)
                .map(|(k, v)| format!("{pad}  {}: {}", double_quoted(k), pretty(v, indent + 2)))
                .collect();
            format!("{{\n{}\n{pad}}}", inner.join(",\n"))
        }
        _ => flow(value),
    }
}

/// A scalar (or an empty collection) on one line.
pub fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s),
        Value::Array(_) | Value::Object(_) => flow(value),
    }
}

/// JSON, which is valid YAML flow style with every string double-quoted.
pub fn flow(value: &Value) -> String {
    match value {
        Value::String(s) => double_quoted(s),
        Value::Array(a) => format!("[{}]", a.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            named_first(m)
                .map(|(k, v)| format!("{}: {}", double_quoted(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => inline(value),
    }
}

/// A string as a YAML scalar: plain when that reads back as this string, else quoted.
pub fn scalar_string(s: &str) -> String {
    if plain_is_safe(s) {
        s.to_owned()
    } else if s
        .chars()
        .all(|c| printable(c) && c != '\n' && c != '\r' && c != '\t')
    {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        double_quoted(s)
    }
}

/// Characters a YAML 1.1 stream may hold as they are (libyaml's check).
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'..)
}

/// A double-quoted scalar, with the escapes both YAML 1.1 and JSON know.
pub fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => {
                // JSON has no 8-digit escape: a surrogate pair, which YAML decodes too.
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// Whether `s` written plain reads back as the string `s` under YAML 1.1 (go-yaml v2) and is
/// plain syntax in block context.
pub fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if resolve_plain(s) != Scalar::Str(s.to_owned()) {
        return false;
    }
    let second = s.chars().nth(1);
    let starts_ok = match first {
        '-' => second.is_some_and(|c| c != ' '),
        '?' | ':' | ',' | '[' | ']' | '{' | '}' | '#' | '&' | '*' | '!' | '|' | '>' | '\''
        | '"' | '%' | '@' | '`' => false,
        _ => true,
    };
    starts_ok
        && !s.starts_with("---")
        && !s.starts_with("...")
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && s.chars()
            .all(|c| printable(c) && !matches!(c, '\t' | '\n' | '\r' | '\u{85}' | '\u{feff}'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_yaml_1_1_reads_otherwise_are_quoted() {
        for s in [
            "no", "Yes", "on", "y", "N", "0755", "1_000", "1e3", "~", "null", "", "-1", ".5", "<<",
        ] {
            assert!(scalar_string(s).starts_with('\''), "{s}");
        }
        for s in [
            "migrate",
            "--env",
            "file:///etc/atlas/atlas.hcl",
            "1:20",
            "k8s",
            "yEs",
        ] {
            assert_eq!(scalar_string(s), s);
        }
        assert_eq!(scalar_string("a\nb"), "\"a\\nb\"");
        assert_eq!(scalar_string("it's: x"), "'it''s: x'");
    }

    #[test]
    fn blocks() {
        let v = json!({"name": "m", "args": ["no", "x"], "env": [], "r": {"a": 1}});
        assert_eq!(
            item(&v, 2, 4, Layout::default()),
            "  - name: m\n    args:\n    - 'no'\n    - x\n    env: []\n    r:\n      a: 1\n"
        );
    }
}
