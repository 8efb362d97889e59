//! A YAML stream as positioned nodes: the syntax only (values are resolved by [`super::value`]),
//! with each node's place in the text so [`super::edit`] can insert next to what the user wrote.
//! Positions are byte offsets into the input.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

pub type NodeId = usize;

/// How a scalar was written: only plain scalars are resolved to booleans, numbers and nulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    /// `|` or `>`.
    Block,
}

#[derive(Debug)]
pub enum Kind {
    Scalar {
        value: String,
        style: Style,
        /// The full tag (`tag:yaml.org,2002:str` for `!!str`), when one is written.
        tag: Option<String>,
    },
    Seq {
        items: Vec<NodeId>,
        flow: bool,
    },
    Map {
        entries: Vec<(NodeId, NodeId)>,
        flow: bool,
    },
    Alias(NodeId),
}

#[derive(Debug)]
pub struct Node {
    pub kind: Kind,
    /// Where the node starts (its anchor or tag included) and where its content ends.
    pub start: usize,
    pub end: usize,
    /// Line (from 1) and column (in characters) of `start`.
    pub line: usize,
    pub col: usize,
    /// For a flow collection, the offset of its closing bracket.
    pub close: usize,
}

/// One document of the stream.
#[derive(Debug)]
pub struct Document {
    pub root: Option<NodeId>,
    /// The document's text, from its `---` (or the previous document's end) to the next one.
    pub region: (usize, usize),
    /// The line of its first node (or of its start), from 1.
    pub line: usize,
    /// Nodes that an alias refers to: editing them would change the aliases too.
    pub aliased: HashSet<NodeId>,
}

#[derive(Debug, Default)]
pub struct Stream {
    pub nodes: Vec<Node>,
    pub documents: Vec<Document>,
}

#[derive(Debug, thiserror::Error)]
#[error("line {line} column {col}: {message}")]
pub struct SyntaxError {
    /// The document (from 1) the error is in.
    pub document: usize,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Character index → byte offset (the parser counts characters).
struct Offsets(Option<Vec<usize>>, usize);

impl Offsets {
    fn new(text: &str) -> Self {
        if text.is_ascii() {
            return Self(None, text.len());
        }
        Self(
            Some(text.char_indices().map(|(b, _)| b).collect()),
            text.len(),
        )
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.0 {
            None => char_index.min(self.1),
            Some(v) => v.get(char_index).copied().unwrap_or(self.1),
        }
    }
}

fn full_tag(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

enum EventKind {
    Content,
    Collection(bool),
    Other,
}

/// A collection being read: its node and, for a mapping, the key waiting for its value.
struct Open {
    id: NodeId,
    key: Option<NodeId>,
}

/// Parses every document of `text`.
pub fn parse(text: &str) -> Result<Stream, SyntaxError> {
    let offsets = Offsets::new(text);
    let mut stream = Stream::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, NodeId> = HashMap::new();
    let mut doc_root: Option<NodeId> = None;
    let mut doc_start = 0usize;
    let mut doc_line = 1usize;
    let mut aliased = HashSet::new();
    let at = |span: &Span| offsets.byte(span.start.index());
    let after = |span: &Span| offsets.byte(span.end.index());
    let mut document = 1usize;
    let mut prev_end = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            document,
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        let new_node = |kind: Kind, span: &Span, end: usize| Node {
            kind,
            start: at(span),
            end,
            line: span.start.line(),
            col: span.start.col(),
            close: end,
        };
        let mut made = None;
        let event_end = after(&span);
        let mut event_kind = EventKind::Other;
        match event {
            Event::DocumentStart(explicit) => {
                if explicit {
                    doc_start = at(&span);
                    event_kind = EventKind::Content;
                }
                doc_line = span.start.line();
                doc_root = None;
                anchors.clear();
            }
            Event::DocumentEnd => {
                // A `...` ends the document's text; a `---` starts the next one's.
                let end_marker = &text[at(&span)..after(&span)];
                let end = if end_marker == "..." {
                    after(&span)
                } else {
                    at(&span)
                };
                let end = if end_marker.is_empty() {
                    text.len()
                } else {
                    end
                };
                stream.documents.push(Document {
                    root: doc_root.take(),
                    region: (doc_start, end),
                    line: doc_line,
                    aliased: std::mem::take(&mut aliased),
                });
                doc_start = end;
                document += 1;
            }
            Event::Scalar(value, style, anchor, tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    _ => Style::Block,
                };
                let kind = Kind::Scalar {
                    value: value.into_owned(),
                    style,
                    tag: tag.as_deref().map(full_tag),
                };
                let id = stream.nodes.len();
                let mut node = new_node(kind, &span, after(&span));
                if span.start.index() == span.end.index() {
                    // An empty value (`key:`): the parser places it at the next token, maybe
                    // lines below; it belongs right after what precedes it.
                    node.start = prev_end;
                    node.end = prev_end;
                }
                stream.nodes.push(node);
                if anchor != 0 {
                    anchors.insert(anchor, id);
                }
                made = Some(id);
                event_kind = EventKind::Content;
            }
            Event::Alias(anchor) => {
                let Some(&target) = anchors.get(&anchor) else {
                    return Err(SyntaxError {
                        document,
                        line: span.start.line(),
                        col: span.start.col() + 1,
                        message: "unknown anchor".into(),
                    });
                };
                aliased.insert(target);
                let id = stream.nodes.len();
                stream
                    .nodes
                    .push(new_node(Kind::Alias(target), &span, after(&span)));
                made = Some(id);
                event_kind = EventKind::Content;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let is_seq = matches!(event, Event::SequenceStart(..));
                let last = text[at(&span)..after(&span)].chars().last();
                let flow = matches!(last, Some('[' | '{'));
                let kind = if is_seq {
                    Kind::Seq {
                        items: Vec::new(),
                        flow,
                    }
                } else {
                    Kind::Map {
                        entries: Vec::new(),
                        flow,
                    }
                };
                let id = stream.nodes.len();
                stream.nodes.push(new_node(kind, &span, at(&span)));
                if anchor != 0 {
                    anchors.insert(anchor, id);
                }
                attach(&mut stream, &mut stack, &mut doc_root, id);
                stack.push(Open { id, key: None });
                event_kind = EventKind::Collection(flow);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = stack.pop() {
                    let node = &mut stream.nodes[open.id];
                    let flow = matches!(
                        node.kind,
                        Kind::Seq { flow: true, .. } | Kind::Map { flow: true, .. }
                    );
                    event_kind = EventKind::Collection(flow);
                    if flow {
                        node.close = at(&span);
                        node.end = after(&span);
                    } else {
                        let children: Vec<NodeId> = match &node.kind {
                            Kind::Seq { items, .. } => items.clone(),
                            Kind::Map { entries, .. } => {
                                entries.iter().flat_map(|(k, v)| [*k, *v]).collect()
                            }
                            _ => Vec::new(),
                        };
                        let end = children
                            .iter()
                            .map(|c| stream.nodes[*c].end)
                            .max()
                            .unwrap_or(stream.nodes[open.id].start);
                        let node = &mut stream.nodes[open.id];
                        node.end = end;
                        node.close = end;
                    }
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        if let Some(id) = made {
            attach(&mut stream, &mut stack, &mut doc_root, id);
        }
        // Block collections' events sit at the next token: only real content moves the mark.
        let content = match &event_kind {
            EventKind::Content => true,
            EventKind::Collection(flow) => *flow,
            EventKind::Other => false,
        };
        if content {
            prev_end = prev_end.max(event_end);
        }
    }
    Ok(stream)
}

/// Adds a finished node to the collection being read, or makes it the document's root.
fn attach(stream: &mut Stream, stack: &mut [Open], root: &mut Option<NodeId>, id: NodeId) {
    let Some(open) = stack.last_mut() else {
        *root = Some(id);
        return;
    };
    match &mut stream.nodes[open.id].kind {
        Kind::Seq { items, .. } => items.push(id),
        Kind::Map { entries, .. } => match open.key.take() {
            None => open.key = Some(id),
            Some(key) => entries.push((key, id)),
        },
        _ => {}
    }
}
