//! Decoding a tree from JSON, checking every rule of the spec that needs no
//! knowledge of the entries: the decoder, plain containers and the readers
//! the other node kinds share. `stdlib.rs` reads the standard-library
//! containers, `typed.rs` class records, enums and partials, `leaf.rs` the
//! tagged nodes that hold no other node.

mod leaf;
mod stdlib;
mod typed;

use self::leaf::leaf;
use self::stdlib::{AttrsSeed, StdKind, StdSeed};
use self::typed::{TypedKind, TypedSeed};
use super::node::{Node, Shape};
use super::{NodeId, Tree, MAX_DEPTH};
use crate::error::{FormatError, Result};
use crate::syntax::is_identifier;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// [`Tree::from_json`]: the decoder reads the whole document, then checks
/// that nothing follows it.
pub(super) fn from_json(json: &str, file: &str) -> Result<Tree> {
    let mut dec = Decoder {
        // Reserving for a node per ~16 bytes of JSON (up to a cap)
        // avoids regrowing and copying the node vector many times.
        tree: Tree {
            nodes: Vec::with_capacity((json.len() / 16).min(1 << 16)),
            ..Tree::default()
        },
        path: Vec::new(),
        shapes: Vec::new(),
        open_immutable: Vec::new(),
        error: None,
        file,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let root = NodeSeed {
        dec: &mut dec,
        depth: 0,
    }
    .deserialize(&mut de);
    let root = match root {
        Ok(r) => r,
        Err(e) => {
            return Err(dec
                .error
                .take()
                .unwrap_or_else(|| FormatError::tree(file, "tree", e.to_string())))
        }
    };
    de.end()
        .map_err(|e| FormatError::tree(file, "tree", e.to_string()))?;
    dec.tree.root = root;
    Ok(dec.tree)
}

/// One step of the place being decoded; rendered only for an error.
enum Seg {
    Index(usize),
    /// A dict key, by the node decoded for it.
    Key(NodeId),
    /// A field of a class record or a keyword of a partial.
    Field(String),
    /// Field `.1` of an object of shape `.0`.
    ShapeField(usize, usize),
    /// A positional argument of a partial.
    Arg(usize),
    Text(&'static str),
}

/// Shapes: the class (and field names) of each `$object` / `$enum` whose
/// head is a name, numbered in document order (docs/SPEC.md, 10.2).
enum DecShape {
    Object(Arc<Shape>),
    Enum(Arc<str>),
}

struct Decoder<'f> {
    tree: Tree,
    /// Place of the node being decoded.
    path: Vec<Seg>,
    shapes: Vec<DecShape>,
    /// For each memo number: whether it is an immutable container still
    /// being decoded (a `$ref` to it would need a cycle through a tuple).
    open_immutable: Vec<bool>,
    error: Option<FormatError>,
    file: &'f str,
}

impl Decoder<'_> {
    fn place(&self) -> String {
        let parts: Vec<String> = self
            .path
            .iter()
            .map(|seg| match seg {
                Seg::Index(i) => format!("[{i}]"),
                Seg::Key(k) => self.key_part(*k),
                Seg::Field(f) => format!(".{f}"),
                Seg::ShapeField(i, k) => match &self.shapes[*i] {
                    DecShape::Object(s) => format!(".{}", s.fields[*k]),
                    DecShape::Enum(_) => String::new(),
                },
                Seg::Arg(i) => format!(".args[{i}]"),
                Seg::Text(t) => (*t).to_string(),
            })
            .collect();
        Tree::place_of_path(&parts)
    }

    fn fail<E: de::Error>(&mut self, detail: impl Into<String>) -> E {
        let place = self.place();
        let detail = detail.into();
        let msg = format!("{place}: {detail}");
        self.error = Some(FormatError::tree(self.file, place, detail));
        E::custom(msg)
    }

    fn limit<E: de::Error>(&mut self, what: &'static str, limit: u64) -> E {
        let place = self.place();
        self.error = Some(FormatError::Limit {
            file: self.file.to_string(),
            place: place.clone(),
            what,
            limit,
        });
        E::custom(format!("{place}: {what} exceeds {limit}"))
    }

    fn register(&mut self, id: NodeId, immutable: bool) -> usize {
        self.tree.memo.push(id);
        self.open_immutable.push(immutable);
        self.tree.memo.len() - 1
    }

    fn key_part(&self, key: NodeId) -> String {
        match &self.tree.nodes[key] {
            Node::Str(s) => format!("[{s:?}]"),
            Node::Int(i) => format!("[{i}]"),
            Node::Bool(b) => format!("[{}]", if *b { "True" } else { "False" }),
            Node::None => "[None]".into(),
            Node::Float(x) => format!("[{x}]"),
            _ => "[<key>]".into(),
        }
    }
}

struct NodeSeed<'a, 'f> {
    dec: &'a mut Decoder<'f>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_> {
    type Value = NodeId;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<NodeId, D::Error> {
        d.deserialize_any(self)
    }
}

/// What kind of container a JSON array decodes into.
#[derive(Clone, Copy, PartialEq)]
enum SeqKind {
    List,
    Tuple,
    Set,
    FrozenSet,
    Dict,
    ODict,
}

struct ContainerSeed<'a, 'f> {
    dec: &'a mut Decoder<'f>,
    depth: usize,
    kind: SeqKind,
}

impl<'de> DeserializeSeed<'de> for ContainerSeed<'_, '_> {
    type Value = NodeId;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<NodeId, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ContainerSeed<'_, '_> {
    type Value = NodeId;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<NodeId, A::Error> {
        let dec = self.dec;
        if self.depth >= MAX_DEPTH {
            return Err(dec.limit("container nesting depth", MAX_DEPTH as u64));
        }
        let id = dec.tree.push(Node::None);
        let immutable = matches!(
            self.kind,
            SeqKind::Tuple | SeqKind::Set | SeqKind::FrozenSet
        );
        let memo = dec.register(id, immutable);
        let depth = self.depth + 1;
        let node = if matches!(self.kind, SeqKind::Dict | SeqKind::ODict) {
            let pairs = read_pairs(dec, &mut seq, depth)?;
            if self.kind == SeqKind::Dict {
                Node::Dict(pairs)
            } else {
                Node::ODict(pairs)
            }
        } else {
            let mut items = Vec::new();
            loop {
                dec.path.push(Seg::Index(items.len()));
                let item = seq.next_element_seed(NodeSeed {
                    dec: &mut *dec,
                    depth,
                })?;
                dec.path.pop();
                match item {
                    Some(i) => items.push(i),
                    None => break,
                }
            }
            match self.kind {
                SeqKind::List => Node::List(items),
                SeqKind::Tuple => Node::Tuple(items),
                SeqKind::Set => Node::Set(items),
                _ => Node::FrozenSet(items),
            }
        };
        dec.tree.nodes[id] = node;
        dec.open_immutable[memo] = false;
        Ok(id)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_> {
    type Value = NodeId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a hermetic tree node")
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<NodeId, E> {
        Ok(self.dec.tree.push(Node::None))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<NodeId, E> {
        Ok(self.dec.tree.push(Node::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<NodeId, E> {
        Ok(self.dec.tree.push(Node::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<NodeId, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(self.dec.tree.push(Node::Int(i))),
            Err(_) => Err(self
                .dec
                .fail("integer literal outside the i64 range (use {\"$int\": hex})")),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<NodeId, E> {
        if !v.is_finite() {
            return Err(self.dec.fail("non-finite float literal"));
        }
        Ok(self.dec.tree.push(Node::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<NodeId, E> {
        Ok(self.dec.tree.push(Node::Str(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<NodeId, E> {
        Ok(self.dec.tree.push(Node::Str(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<NodeId, A::Error> {
        ContainerSeed {
            dec: self.dec,
            depth: self.depth,
            kind: SeqKind::List,
        }
        .visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<NodeId, A::Error> {
        let dec = self.dec;
        let Some(crate::st_header::Key(tag)) = map.next_key()? else {
            return Err(dec.fail("empty object (an object must be a tagged node)"));
        };
        let kind = match &*tag {
            "$tuple" => Some(SeqKind::Tuple),
            "$set" => Some(SeqKind::Set),
            "$frozenset" => Some(SeqKind::FrozenSet),
            "$dict" => Some(SeqKind::Dict),
            "$odict" => Some(SeqKind::ODict),
            _ => None,
        };
        let id = if &*tag == "$attrs" {
            map.next_value_seed(AttrsSeed {
                dec: &mut *dec,
                depth: self.depth,
            })?
        } else if let Some(kind) = StdKind::of(&tag) {
            map.next_value_seed(StdSeed {
                dec: &mut *dec,
                depth: self.depth,
                kind,
            })?
        } else if let Some(kind) = kind {
            map.next_value_seed(ContainerSeed {
                dec: &mut *dec,
                depth: self.depth,
                kind,
            })?
        } else if let Some(kind) = TypedKind::of(&tag) {
            map.next_value_seed(TypedSeed {
                dec: &mut *dec,
                depth: self.depth,
                kind,
            })?
        } else {
            let value: Value = map.next_value()?;
            let node = leaf(dec, &tag, value)?;
            let memoizable = node.is_memoizable();
            let id = dec.tree.push(node);
            if memoizable {
                dec.register(id, false);
            }
            id
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(dec.fail(format!("tagged node `{tag}` has more than one member")));
        }
        Ok(id)
    }
}

/// Reads `key, value` node pairs to the end of the array.
fn read_pairs<'de, A: SeqAccess<'de>>(
    dec: &mut Decoder<'_>,
    seq: &mut A,
    depth: usize,
) -> std::result::Result<Vec<(NodeId, NodeId)>, A::Error> {
    let mut pairs = Vec::new();
    loop {
        dec.path.push(Seg::Text("[<key>]"));
        let k = seq.next_element_seed(NodeSeed {
            dec: &mut *dec,
            depth,
        });
        dec.path.pop();
        let Some(k) = k? else { return Ok(pairs) };
        dec.path.push(Seg::Key(k));
        let v = seq.next_element_seed(NodeSeed {
            dec: &mut *dec,
            depth,
        })?;
        let Some(v) = v else {
            return Err(dec.fail("a dict's array must hold key, value pairs (odd length)"));
        };
        dec.path.pop();
        pairs.push((k, v));
    }
}

/// Reads `name, node` pairs to the end of the array: fields of a class
/// record or keywords of a partial. Names are identifiers, each at most once.
fn read_fields<'de, A: SeqAccess<'de>>(
    dec: &mut Decoder<'_>,
    seq: &mut A,
    depth: usize,
    what: &str,
) -> std::result::Result<Vec<(String, NodeId)>, A::Error> {
    let mut out: Vec<(String, NodeId)> = Vec::new();
    loop {
        let name = match seq.next_element::<Value>()? {
            None => return Ok(out),
            Some(Value::String(s)) if is_identifier(&s) => s,
            Some(other) => {
                return Err(dec.fail(format!("{what} name {other} is not an identifier")))
            }
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(dec.fail(format!("{what} `{name}` appears twice")));
        }
        let v = field_value(dec, seq, depth, name)?;
        out.push(v);
    }
}

/// Reads the value of the field `name` (the place names it on error).
fn field_value<'de, A: SeqAccess<'de>>(
    dec: &mut Decoder<'_>,
    seq: &mut A,
    depth: usize,
    name: String,
) -> std::result::Result<(String, NodeId), A::Error> {
    dec.path.push(Seg::Field(name));
    let v = seq.next_element_seed(NodeSeed {
        dec: &mut *dec,
        depth,
    })?;
    let Some(v) = v else {
        return Err(dec.fail("the field has no value"));
    };
    let Some(Seg::Field(name)) = dec.path.pop() else {
        unreachable!("pushed above")
    };
    Ok((name, v))
}
