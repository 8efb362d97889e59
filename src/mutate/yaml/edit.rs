//! A JSON patch applied to a document's text: each `add`/`replace`/`remove` becomes an insertion
//! (or a replacement of the one node it targets) next to what the user wrote, with the
//! indentation of its siblings, so comments, key order and quoting stay as written. A patch shape
//! this cannot place is reported as unsupported; the caller then writes the document anew. The
//! caller also re-reads the result and compares it with the patched value, so a wrong placement
//! is never printed.

use std::collections::HashMap;

use json_patch::jsonptr::Pointer;
use json_patch::PatchOperation;
use serde_json::Value;

use super::emit::{self, Layout};
use super::tree::{Document, Kind, NodeId, Stream};
use super::value::key_string;

/// Replace `start..end` of the text with `text` (an insertion when they are equal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEdit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Why a patch cannot be applied as text edits (the document is then written anew).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

fn unsupported<T>(why: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(why.into()))
}

/// Applies edits to `text`. Edits must not overlap.
pub fn apply(text: &str, mut edits: Vec<TextEdit>) -> Result<String, Unsupported> {
    // Insertions at the same place (the end of a nested block is also the end of its parents):
    // the more indented first, since it belongs to the innermost block, which ends there.
    let indent = |e: &TextEdit| e.text.len() - e.text.trim_start_matches(' ').len();
    edits.sort_by_key(|e| (e.start, e.end, std::cmp::Reverse(indent(e))));
    let mut out =
        String::with_capacity(text.len() + edits.iter().map(|e| e.text.len()).sum::<usize>());
    let mut at = 0;
    for e in edits {
        if e.start < at || e.end < e.start || e.end > text.len() {
            return unsupported("two changes touch the same text");
        }
        out.push_str(&text[at..e.start]);
        out.push_str(&e.text);
        at = e.end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// The text edits that apply `ops` (paths from the document's root) to `doc`.
///
/// A change inside a flow collection (`spec: {template: ...}`, `volumes: [...]`) written as the
/// value of a block mapping or sequence rewrites that one collection as block YAML, from
/// `patched` (the document's value after the patch); a flow document (JSON) stays flow.
pub fn edits(
    text: &str,
    stream: &Stream,
    doc: &Document,
    ops: &[PatchOperation],
    patched: &Value,
) -> Result<Vec<TextEdit>, Unsupported> {
    let mut editor = Editor {
        text,
        stream,
        doc,
        patched,
        rewritten: Vec::new(),
        layout: Layout::default(),
        crlf: text.contains("\r\n"),
        removed: HashMap::new(),
        edits: Vec::new(),
    };
    if let Some(root) = doc.root {
        editor.layout = detect_layout(&editor, root);
    }
    for op in ops {
        editor.op(op)?;
    }
    Ok(editor.edits)
}

struct Editor<'a> {
    text: &'a str,
    stream: &'a Stream,
    doc: &'a Document,
    patched: &'a Value,
    /// Flow collections already rewritten as block YAML.
    rewritten: Vec<NodeId>,
    layout: Layout,
    crlf: bool,
    /// Items removed so far from each sequence (original indices): later indices skip them.
    removed: HashMap<NodeId, Vec<usize>>,
    edits: Vec<TextEdit>,
}

fn tokens(path: &Pointer) -> Vec<String> {
    path.tokens().map(|t| t.decoded().into_owned()).collect()
}

impl Editor<'_> {
    fn node(&self, id: NodeId) -> &super::tree::Node {
        &self.stream.nodes[id]
    }

    fn push(&mut self, start: usize, end: usize, text: String) {
        let mut text = if self.crlf {
            text.replace('\n', "\r\n")
        } else {
            text
        };
        // Appending after a last line that has no line break.
        if start == self.text.len()
            && !self.text.is_empty()
            && !self.text.ends_with('\n')
            && text.ends_with('\n')
        {
            text.insert_str(0, if self.crlf { "\r\n" } else { "\n" });
        }
        self.edits.push(TextEdit { start, end, text });
    }

    fn op(&mut self, op: &PatchOperation) -> Result<(), Unsupported> {
        let (path, value) = match op {
            PatchOperation::Add(o) => (&o.path, Some(&o.value)),
            PatchOperation::Replace(o) => (&o.path, Some(&o.value)),
            PatchOperation::Remove(o) => (&o.path, None),
            _ => return unsupported("a patch operation other than add, replace or remove"),
        };
        let mut tokens = tokens(path);
        let Some(last) = tokens.pop() else {
            return unsupported("a change of the whole document");
        };
        let path = self.locate(&tokens)?;
        if let Some(j) = path
            .iter()
            .position(|id| self.is_flow(*id))
            .filter(|j| *j > 0)
        {
            return self.rewrite_flow(path[j - 1], path[j], &tokens[..j]);
        }
        let parent = path[path.len() - 1];
        let is_add = matches!(op, PatchOperation::Add(_));
        match (&self.node(parent).kind, value) {
            (Kind::Map { entries, .. }, value) => {
                let found = entries
                    .iter()
                    .rev()
                    .find(|(k, _)| key_string(self.stream, *k).ok().as_deref() == Some(&last))
                    .copied();
                match (found, value) {
                    (Some((k, v)), Some(value)) => self.replace_entry(parent, k, v, value),
                    (None, Some(value)) if is_add => self.insert_entry(parent, &last, value),
                    (Some((k, v)), None) => self.remove_entry(parent, k, v),
                    _ => unsupported("a change of a member that is not there"),
                }
            }
            (Kind::Seq { items, .. }, value) => {
                let len = items.len() - self.removed.get(&parent).map_or(0, Vec::len);
                let index = if last == "-" {
                    len
                } else {
                    last.parse::<usize>()
                        .map_err(|_| Unsupported(format!("bad index {last}")))?
                };
                let original = self.original_index(parent, index);
                match value {
                    Some(value) if is_add => self.insert_item(parent, original, value),
                    Some(value) => match original {
                        Some(i) => self.replace_item(parent, i, value),
                        None => unsupported("a replaced item that is not there"),
                    },
                    None => match original {
                        Some(i) => self.remove_item(parent, i),
                        None => unsupported("a removed item that is not there"),
                    },
                }
            }
            _ => unsupported("a change inside a scalar"),
        }
    }

    fn is_flow(&self, id: NodeId) -> bool {
        matches!(
            self.node(id).kind,
            Kind::Seq { flow: true, .. } | Kind::Map { flow: true, .. }
        )
    }

    /// Rewrites the flow collection `flow`, a member of the block collection `parent`, as block
    /// YAML holding its patched value (at `tokens` in the document).
    fn rewrite_flow(
        &mut self,
        parent: NodeId,
        flow: NodeId,
        tokens: &[String],
    ) -> Result<(), Unsupported> {
        if self.rewritten.contains(&flow) {
            return Ok(());
        }
        self.rewritten.push(flow);
        let pointer: String = tokens
            .iter()
            .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
            .collect();
        let value = self
            .patched
            .pointer(&pointer)
            .cloned()
            .ok_or_else(|| Unsupported("the patched value is missing".into()))?;
        match &self.node(parent).kind {
            Kind::Map { entries, .. } => {
                let Some((k, _)) = entries.iter().find(|(_, v)| *v == flow).copied() else {
                    return unsupported("a flow value without its key");
                };
                self.replace_entry(parent, k, flow, &value)
            }
            Kind::Seq { items, .. } => {
                let Some(i) = items.iter().position(|v| *v == flow) else {
                    return unsupported("a flow item not in its sequence");
                };
                self.replace_item(parent, i, &value)
            }
            _ => unsupported("a flow collection inside a scalar"),
        }
    }

    /// A comment after `pos` on its line (`  # ...`), to keep when the line is rewritten.
    fn trailing_comment(&self, pos: usize) -> Option<String> {
        let rest = &self.text[pos..];
        let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
        let line = line.trim_end_matches('\r');
        let trimmed = line.trim_start();
        trimmed.starts_with('#').then(|| format!("  {trimmed}"))
    }

    /// Puts a kept comment at the end of the first line of `text`.
    fn with_comment(text: String, comment: Option<String>) -> String {
        match (comment, text.find('\n')) {
            (Some(c), Some(i)) => format!("{}{c}{}", &text[..i], &text[i..]),
            _ => text,
        }
    }

    /// The original index of the item now at `index`, `None` past the end.
    fn original_index(&self, seq: NodeId, index: usize) -> Option<usize> {
        let Kind::Seq { items, .. } = &self.node(seq).kind else {
            return None;
        };
        let removed = self.removed.get(&seq);
        (0..items.len())
            .filter(|i| removed.is_none_or(|r| !r.contains(i)))
            .nth(index)
    }

    /// The node at `tokens`, reached through members written in this mapping (not merged in)
    /// and through no alias or aliased node, whose text change would change other places too.
    fn locate(&self, tokens: &[String]) -> Result<Vec<NodeId>, Unsupported> {
        let Some(mut id) = self.doc.root else {
            return unsupported("an empty document");
        };
        let mut path = vec![id];
        for token in tokens.iter().map(Some).chain([None]) {
            if self.doc.aliased.contains(&id) {
                return unsupported("the change is inside an anchored node that an alias repeats");
            }
            let Some(token) = token else { break };
            id = match &self.node(id).kind {
                Kind::Map { entries, .. } => {
                    let mut found = entries.iter().filter(|(k, _)| {
                        key_string(self.stream, *k).ok().as_deref() == Some(token)
                    });
                    match (found.next(), found.next()) {
                        (Some((_, v)), None) => *v,
                        (Some(_), Some(_)) => {
                            return unsupported(format!("key {token:?} is written twice"))
                        }
                        (None, _) => {
                            return unsupported(format!(
                                "{token:?} comes from a merge key or is missing"
                            ))
                        }
                    }
                }
                Kind::Seq { items, .. } => {
                    let i: usize = token
                        .parse()
                        .map_err(|_| Unsupported(format!("bad index {token}")))?;
                    *items
                        .get(i)
                        .ok_or_else(|| Unsupported(format!("no item {i}")))?
                }
                Kind::Alias(_) => return unsupported("the change goes through an alias"),
                Kind::Scalar { .. } => return unsupported("the change goes through a scalar"),
            };
            path.push(id);
        }
        if matches!(self.node(id).kind, Kind::Alias(_)) {
            return unsupported("the change goes through an alias");
        }
        Ok(path)
    }

    // --- positions -------------------------------------------------------------------------

    fn line_start(&self, pos: usize) -> usize {
        self.text[..pos].rfind('\n').map_or(0, |i| i + 1)
    }

    /// Where the line holding `pos - 1` (the end of some content) ends, after its line break.
    fn after_line(&self, pos: usize) -> usize {
        if pos > 0 && self.text.as_bytes()[pos - 1] == b'\n' {
            return pos;
        }
        self.text[pos..]
            .find('\n')
            .map_or(self.text.len(), |i| pos + i + 1)
    }

    fn col(&self, pos: usize) -> usize {
        self.text[self.line_start(pos)..pos].chars().count()
    }

    fn first_on_line(&self, pos: usize) -> bool {
        self.text[self.line_start(pos)..pos]
            .chars()
            .all(|c| c == ' ' || c == '\t')
    }

    /// The `-` before a block sequence item.
    fn dash(&self, item: NodeId) -> Result<usize, Unsupported> {
        let start = self.node(item).start;
        let before = self.text[..start].trim_end_matches([' ', '\t', '\n', '\r']);
        if before.ends_with('-') {
            Ok(before.len() - 1)
        } else {
            unsupported("a sequence item without its dash")
        }
    }

    fn last_end(&self, ids: &[NodeId]) -> usize {
        ids.iter().map(|i| self.node(*i).end).max().unwrap_or(0)
    }

    // --- mappings ----------------------------------------------------------------------------

    fn insert_entry(&mut self, map: NodeId, key: &str, value: &Value) -> Result<(), Unsupported> {
        let Kind::Map { entries, flow } = &self.node(map).kind else {
            return unsupported("not a mapping");
        };
        if *flow {
            let piece = format!("{}: ", emit::double_quoted(key));
            return self.insert_flow(map, &piece, value, None);
        }
        let Some((first, _)) = entries.first() else {
            return unsupported("an empty block mapping");
        };
        let indent = self.node(*first).col;
        let at = self.after_line(self.node(map).end);
        let text = emit::entry(key, value, indent, self.layout);
        self.push(at, at, text);
        Ok(())
    }

    fn replace_entry(
        &mut self,
        map: NodeId,
        k: NodeId,
        v: NodeId,
        value: &Value,
    ) -> Result<(), Unsupported> {
        let flow = matches!(self.node(map).kind, Kind::Map { flow: true, .. });
        let (vs, ve) = (self.node(v).start, self.node(v).end);
        let simple = !matches!(value, Value::Object(m) if !m.is_empty())
            && !matches!(value, Value::Array(a) if !a.is_empty());
        let inline_scalar = matches!(
            &self.node(v).kind,
            Kind::Scalar {
                style: super::tree::Style::Plain | super::tree::Style::Quoted,
                ..
            }
        ) && ve > vs;
        if flow {
            if !inline_scalar
                && !matches!(
                    self.node(v).kind,
                    Kind::Map { flow: true, .. } | Kind::Seq { flow: true, .. }
                )
            {
                return unsupported("a flow member whose value cannot be replaced");
            }
            self.push(vs, ve, emit::flow(value));
            return Ok(());
        }
        if simple && inline_scalar {
            self.push(vs, ve, emit::inline(value));
            return Ok(());
        }
        let ks = self.node(k).start;
        if !self.first_on_line(ks) {
            return unsupported("a key that does not start its line");
        }
        let raw_key = self.text[ks..self.node(k).end].to_owned();
        let indent = self.node(k).col;
        let content_end = ve.max(self.node(k).end);
        let end = self.after_line(content_end);
        let comment = self.trailing_comment(content_end);
        let text = Self::with_comment(
            emit::entry_raw(&raw_key, value, indent, self.layout),
            comment,
        );
        self.push(self.line_start(ks), end, text);
        Ok(())
    }

    fn remove_entry(&mut self, map: NodeId, k: NodeId, v: NodeId) -> Result<(), Unsupported> {
        let Kind::Map { entries, flow } = &self.node(map).kind else {
            return unsupported("not a mapping");
        };
        if *flow || entries.len() < 2 {
            return unsupported("removing from a flow mapping or its last member");
        }
        let ks = self.node(k).start;
        if !self.first_on_line(ks) {
            return unsupported("a key that does not start its line");
        }
        let end = self.after_line(self.node(v).end.max(self.node(k).end));
        self.push(self.line_start(ks), end, String::new());
        Ok(())
    }

    // --- sequences ---------------------------------------------------------------------------

    fn insert_item(
        &mut self,
        seq: NodeId,
        before: Option<usize>,
        value: &Value,
    ) -> Result<(), Unsupported> {
        let Kind::Seq { items, flow } = &self.node(seq).kind else {
            return unsupported("not a sequence");
        };
        let items = items.clone();
        if *flow {
            return match before {
                Some(i) => {
                    let at = self.node(items[i]).start;
                    self.push(at, at, format!("{}, ", emit::flow(value)));
                    Ok(())
                }
                None => self.insert_flow(seq, "", value, Some(())),
            };
        }
        let Some(first) = items.first() else {
            return unsupported("an empty block sequence");
        };
        let dash = self.dash(*first)?;
        let dash_col = self.col(dash);
        let content_col = self.node(*first).col;
        let text = emit::item(value, dash_col, content_col, self.layout);
        let at = match before {
            Some(i) => {
                let d = self.dash(items[i])?;
                if !self.first_on_line(d) {
                    return unsupported("an item that does not start its line");
                }
                self.line_start(d)
            }
            None => self.after_line(self.last_end(&items).max(self.node(seq).end)),
        };
        self.push(at, at, text);
        Ok(())
    }

    fn replace_item(&mut self, seq: NodeId, i: usize, value: &Value) -> Result<(), Unsupported> {
        let Kind::Seq { items, flow } = &self.node(seq).kind else {
            return unsupported("not a sequence");
        };
        let item = items[i];
        let (start, end) = (self.node(item).start, self.node(item).end);
        if *flow {
            self.push(start, end, emit::flow(value));
            return Ok(());
        }
        let mut text = String::new();
        emit::item_body(value, self.node(item).col, self.layout, &mut text);
        let comment = self.trailing_comment(end);
        let end = self.after_line(end);
        self.push(start, end, Self::with_comment(text, comment));
        Ok(())
    }

    fn remove_item(&mut self, seq: NodeId, i: usize) -> Result<(), Unsupported> {
        let Kind::Seq { items, flow } = &self.node(seq).kind else {
            return unsupported("not a sequence");
        };
        if *flow {
            return unsupported("removing from a flow sequence");
        }
        let item = items[i];
        let d = self.dash(item)?;
        if !self.first_on_line(d) {
            return unsupported("an item that does not start its line");
        }
        let end = self.after_line(self.node(item).end);
        self.push(self.line_start(d), end, String::new());
        self.removed.entry(seq).or_default().push(i);
        Ok(())
    }

    // --- flow collections --------------------------------------------------------------------

    /// Adds `prefix` + `value` as the last member of a flow collection: on a line of its own,
    /// JSON-style, when the collection holds one member per line; inline otherwise.
    fn insert_flow(
        &mut self,
        coll: NodeId,
        prefix: &str,
        value: &Value,
        _seq: Option<()>,
    ) -> Result<(), Unsupported> {
        let node = self.node(coll);
        let close = node.close;
        let children: Vec<NodeId> = match &node.kind {
            Kind::Seq { items, .. } => items.clone(),
            Kind::Map { entries, .. } => entries.iter().map(|(k, _)| *k).collect(),
            _ => return unsupported("not a collection"),
        };
        let before = self.text[..close].trim_end_matches([' ', '\t', '\n', '\r']);
        let trailing_comma = before.ends_with(',');
        let Some(last_child) = children.last() else {
            self.push(close, close, format!("{prefix}{}", emit::flow(value)));
            return Ok(());
        };
        let multiline =
            self.first_on_line(close) && self.node(*last_child).line != self.node(coll).line;
        if multiline && !trailing_comma {
            let indent = self.node(*last_child).col;
            let last_end = self.last_end(&children).max(match &self.node(coll).kind {
                Kind::Map { entries, .. } => {
                    self.last_end(&entries.iter().map(|(_, v)| *v).collect::<Vec<_>>())
                }
                _ => 0,
            });
            let text = format!(
                ",\n{}{prefix}{}",
                " ".repeat(indent),
                emit::pretty(value, indent)
            );
            // `push` adds a line break before text only at the very end of input; not here.
            self.edits.push(TextEdit {
                start: last_end,
                end: last_end,
                text: if self.crlf {
                    text.replace('\n', "\r\n")
                } else {
                    text
                },
            });
            return Ok(());
        }
        let sep = if trailing_comma { " " } else { ", " };
        self.push(
            before.len(),
            before.len(),
            format!("{sep}{prefix}{}", emit::flow(value)),
        );
        Ok(())
    }
}

/// The indentation the document uses: the step between a key and its children, and whether
/// sequences under a key are indented.
fn detect_layout(editor: &Editor<'_>, root: NodeId) -> Layout {
    let mut layout = Layout::default();
    let (mut step, mut seq) = (None, None);
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if step.is_some() && seq.is_some() {
            break;
        }
        match &editor.node(id).kind {
            Kind::Map {
                entries,
                flow: false,
            } => {
                for (k, v) in entries {
                    let kcol = editor.node(*k).col;
                    match &editor.node(*v).kind {
                        Kind::Map {
                            entries: inner,
                            flow: false,
                        } if step.is_none() => {
                            if let Some((ik, _)) = inner.first() {
                                let icol = editor.node(*ik).col;
                                if icol > kcol {
                                    step = Some(icol - kcol);
                                }
                            }
                        }
                        Kind::Seq { items, flow: false } if seq.is_none() => {
                            if let Some(first) = items.first() {
                                if let Ok(d) = editor.dash(*first) {
                                    seq = Some(editor.col(d) > kcol);
                                }
                            }
                        }
                        _ => {}
                    }
                    stack.push(*v);
                }
            }
            Kind::Seq { items, flow: false } => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
    if let Some(s) = step {
        layout.step = s;
    }
    if let Some(s) = seq {
        layout.indent_sequences = s;
    }
    layout
}
