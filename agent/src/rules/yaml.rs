//! A YAML tree that remembers where each node came from, so rule errors can
//! name `file:line:col` down to a token inside a condition string.
//!
//! serde-based YAML loaders drop positions once a value is built; the rule
//! loader needs them after parsing (macros are expanded and fields checked
//! long after the document is read), so it walks this tree instead.
use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event as YEvent, MarkedEventReceiver, Parser},
    scanner::{Marker, TScalarStyle},
};

/// 1-based line and column, and the byte offset in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar {
        value: String,
        quoted: bool,
        pos: Pos,
    },
    Seq(Vec<Node>, Pos),
    Map(Vec<(Node, Node)>, Pos),
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq(_, pos) | Node::Map(_, pos) => *pos,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A plain, unquoted `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { value, quoted: false, .. }
            if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Seq(..) => "a list",
            Node::Map(..) => "a mapping",
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries, _) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Parses one YAML document; `Ok(None)` for an empty file.
///
/// Falco's YAML reader accepts a flow list whose closing `]` sits at its
/// key's indentation; the strict reader here does not. When that is the
/// only problem, such lines are indented and the file read again: only
/// those lines change, so every other position stays exact.
pub fn parse(src: &str) -> Result<Option<Node>, (Pos, String)> {
    match parse_strict(src) {
        Err((_, msg)) if msg.contains("indentation") => {
            let relaxed: String = src
                .split_inclusive('\n')
                .map(|l| {
                    let t = l.trim();
                    if matches!(t, "]" | "}" | "]," | "},") {
                        format!("  {l}")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            match parse_strict(&relaxed) {
                Ok(n) => Ok(n),
                Err(_) => parse_strict(src),
            }
        }
        other => other,
    }
}

fn parse_strict(src: &str) -> Result<Option<Node>, (Pos, String)> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(src);
    parser
        .load(&mut b, false)
        .map_err(|e| (pos(*e.marker()), e.info().to_string()))?;
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.root)
}

fn pos(m: Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
        index: m.index(),
    }
}

/// Most nodes a document may expand to, aliases included: a few
/// kilobytes of anchors and aliases can otherwise stand for billions of
/// nodes ("billion laughs") and hang a reload.
pub const MAX_NODES: usize = 1_000_000;
/// Deepest nesting of lists and mappings.
pub const MAX_DEPTH: usize = 128;

enum Open {
    /// Items, position, anchor, node count when it opened.
    Seq(Vec<Node>, Pos, usize, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Pos, usize, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
    /// Anchored nodes and their sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes built so far, aliases counted at their full size.
    nodes: usize,
    error: Option<(Pos, String)>,
}

impl Builder {
    /// Counts `n` more nodes; false (and an error) past the budget.
    fn spend(&mut self, n: usize, mark: Marker) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.error.get_or_insert((
                pos(mark),
                format!("the document expands to more than {MAX_NODES} nodes (anchors and aliases used over and over?); refused"),
            ));
            return false;
        }
        true
    }

    fn add(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(items, ..)) => items.push(node),
            Some(Open::Map(entries, key, ..)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: YEvent, mark: Marker) {
        // Past an error, the rest of the document is only read through.
        if self.error.is_some() {
            return;
        }
        match ev {
            YEvent::Scalar(value, style, anchor, _) => {
                if !self.spend(1, mark) {
                    return;
                }
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.add(
                    Node::Scalar {
                        value,
                        quoted,
                        pos: pos(mark),
                    },
                    anchor,
                    1,
                );
            }
            YEvent::SequenceStart(anchor, _) | YEvent::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.error.get_or_insert((
                        pos(mark),
                        format!("lists and mappings nested more than {MAX_DEPTH} deep; refused"),
                    ));
                    return;
                }
                if !self.spend(1, mark) {
                    return;
                }
                let start = self.nodes - 1;
                if matches!(ev, YEvent::SequenceStart(..)) {
                    self.stack
                        .push(Open::Seq(Vec::new(), pos(mark), anchor, start));
                } else {
                    self.stack
                        .push(Open::Map(Vec::new(), None, pos(mark), anchor, start));
                }
            }
            YEvent::SequenceEnd | YEvent::MappingEnd => match self.stack.pop() {
                Some(Open::Seq(items, p, anchor, start)) => {
                    let size = self.nodes - start;
                    self.add(Node::Seq(items, p), anchor, size)
                }
                Some(Open::Map(entries, _, p, anchor, start)) => {
                    let size = self.nodes - start;
                    self.add(Node::Map(entries, p), anchor, size)
                }
                None => {}
            },
            YEvent::Alias(id) => match self.anchors.get(&id).map(|(_, size)| *size) {
                Some(size) => {
                    // Counted before the copy is made.
                    if !self.spend(size, mark) {
                        return;
                    }
                    let n = self.anchors[&id].0.clone();
                    self.add(n, 0, size)
                }
                None => {
                    self.error
                        .get_or_insert((pos(mark), "alias to an unknown anchor".to_string()));
                }
            },
            YEvent::Nothing
            | YEvent::StreamStart
            | YEvent::StreamEnd
            | YEvent::DocumentStart
            | YEvent::DocumentEnd => {}
        }
    }
}

/// Where byte `offset` of a scalar's value lies in the source.
///
/// Folding and indentation make the value differ from the source text, so
/// the two are walked side by side: a run of whitespace in the value
/// matches any run of whitespace (newlines, indentation) in the source, and
/// every other character is looked for in order.
pub fn locate(src: &str, scalar_pos: Pos, value: &str, offset: usize) -> Pos {
    let rest = src.get(scalar_pos.index..).unwrap_or("");
    let mut raw = rest.char_indices().peekable();
    // Block scalars start at their indicator line: skip it.
    if rest.starts_with('|') || rest.starts_with('>') {
        for (_, c) in raw.by_ref() {
            if c == '\n' {
                break;
            }
        }
    } else if rest.starts_with('"') || rest.starts_with('\'') {
        raw.next();
    }
    let mut at = 0;
    for (i, c) in value.char_indices() {
        if i >= offset {
            break;
        }
        if c.is_whitespace() {
            while raw.peek().is_some_and(|(_, r)| r.is_whitespace()) {
                raw.next();
            }
            continue;
        }
        for (_, r) in raw.by_ref() {
            if r == c {
                break;
            }
        }
    }
    while raw.peek().is_some_and(|(_, r)| {
        r.is_whitespace()
            && offset < value.len()
            && !value[offset..].starts_with(char::is_whitespace)
    }) {
        raw.next();
    }
    if let Some((i, _)) = raw.peek() {
        at = *i;
    } else if !rest.is_empty() {
        at = rest.len();
    }
    position_of(src, scalar_pos.index + at)
}

/// Line and column of a byte index.
pub fn position_of(src: &str, index: usize) -> Pos {
    let index = index.min(src.len());
    let before = &src[..index];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line,
        col: before[line_start..].chars().count() + 1,
        index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_at<'a>(n: &'a Node, path: &[&str]) -> &'a Node {
        let mut n = n;
        for k in path {
            n = match n {
                Node::Seq(items, _) => &items[k.parse::<usize>().unwrap()],
                _ => n.get(k).unwrap(),
            };
        }
        n
    }

    #[test]
    fn positions_of_nodes_and_of_tokens_inside_scalars() {
        let src = "- rule: a\n  condition: >\n    evt.type = execve\n    and proc.nme = x\n- macro: m\n  condition: proc.name in (a, b)\n";
        let root = parse(src).unwrap().unwrap();
        let cond = scalar_at(&root, &["0", "condition"]);
        let Node::Scalar { value, pos: p, .. } = cond else {
            panic!()
        };
        assert_eq!(value, "evt.type = execve and proc.nme = x\n");
        let off = value.find("proc.nme").unwrap();
        let at = locate(src, *p, value, off);
        assert_eq!((at.line, at.col), (4, 9));
        let plain = scalar_at(&root, &["1", "condition"]);
        let Node::Scalar { value, pos: p, .. } = plain else {
            panic!()
        };
        assert_eq!((p.line, p.col), (6, 14));
        let at = locate(src, *p, value, value.find('b').unwrap());
        assert_eq!((at.line, at.col), (6, 31));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (p, msg) = parse("- rule: a\n  desc: [unclosed\n").unwrap_err();
        assert!(p.line >= 2, "{p:?} {msg}");
    }

    #[test]
    fn closing_bracket_at_key_indentation_is_accepted() {
        let root = parse("- list: a\n  items: [\n    x,\n    y\n  ]\n")
            .unwrap()
            .unwrap();
        let Node::Seq(items, _) = &root else { panic!() };
        let Node::Seq(v, _) = items[0].get("items").unwrap() else {
            panic!()
        };
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        // Each level doubles: 2^40 nodes from a few hundred bytes.
        let mut src = String::from("a0: &a0 [x, x]\n");
        for i in 1..40 {
            src.push_str(&format!("a{i}: &a{i} [*a{}, *a{}]\n", i - 1, i - 1));
        }
        let t = std::time::Instant::now();
        let (_, msg) = parse_strict(&src).unwrap_err();
        assert!(msg.contains("more than 1000000 nodes"), "{msg}");
        assert!(t.elapsed().as_secs() < 5);
        let deep = "[".repeat(150) + &"]".repeat(150);
        let (_, msg) = parse_strict(&deep).unwrap_err();
        assert!(msg.contains("nested more than 128"), "{msg}");
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        assert_eq!(root.get("a"), root.get("b"));
    }
}
