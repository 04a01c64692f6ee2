//! The standard-library containers of section 10.6 and `$attrs` (6.7).

use super::{read_fields, read_pairs, Decoder, NodeSeed, Seg};
use crate::tree::node::{Node, DEFAULT_FACTORIES};
use crate::tree::{NodeId, MAX_DEPTH};
use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// The standard-library containers of section 10.6 that hold nodes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum StdKind {
    Namespace,
    DefaultDict,
    Counter,
    Deque,
    Slice,
    Range,
}

impl StdKind {
    pub(super) fn of(tag: &str) -> Option<Self> {
        Some(match tag {
            "$namespace" => StdKind::Namespace,
            "$defaultdict" => StdKind::DefaultDict,
            "$counter" => StdKind::Counter,
            "$deque" => StdKind::Deque,
            "$slice" => StdKind::Slice,
            "$range" => StdKind::Range,
            _ => return None,
        })
    }
}

pub(super) struct StdSeed<'a, 'f> {
    pub(super) dec: &'a mut Decoder<'f>,
    pub(super) depth: usize,
    pub(super) kind: StdKind,
}

impl<'de> DeserializeSeed<'de> for StdSeed<'_, '_> {
    type Value = NodeId;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<NodeId, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for StdSeed<'_, '_> {
    type Value = NodeId;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<NodeId, A::Error> {
        let dec = self.dec;
        if self.depth >= MAX_DEPTH {
            return Err(dec.limit("container nesting depth", MAX_DEPTH as u64));
        }
        let depth = self.depth + 1;
        let id = dec.tree.push(Node::None);
        let node = match self.kind {
            StdKind::Namespace => {
                dec.register(id, false);
                let attrs = read_fields(dec, &mut seq, depth, "attribute")?;
                // `ns.__class__ = ...` would change what the object is.
                if let Some((name, _)) = attrs.iter().find(|(n, _)| n.starts_with("__")) {
                    return Err(dec.fail(format!(
                        "Namespace attribute `{name}`: names starting with `__` are not instance attributes"
                    )));
                }
                Node::Namespace(attrs)
            }
            StdKind::DefaultDict => {
                dec.register(id, false);
                let factory = match seq.next_element::<Value>()? {
                    Some(Value::Null) => None,
                    Some(Value::String(f)) if DEFAULT_FACTORIES.contains(&f.as_str()) => Some(f),
                    _ => {
                        return Err(dec.fail(format!(
                            "$defaultdict must start with null or one of the factories {}",
                            DEFAULT_FACTORIES.join(", ")
                        )))
                    }
                };
                let pairs = read_pairs(dec, &mut seq, depth)?;
                Node::DefaultDict { factory, pairs }
            }
            StdKind::Counter => {
                dec.register(id, false);
                Node::Counter(read_pairs(dec, &mut seq, depth)?)
            }
            StdKind::Deque => {
                dec.register(id, false);
                let maxlen = match seq.next_element::<Value>()? {
                    Some(Value::Null) => None,
                    Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
                    _ => {
                        return Err(
                            dec.fail("$deque must start with its maxlen: null or an integer >= 0")
                        )
                    }
                };
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
                if maxlen.is_some_and(|m| (items.len() as u64) > m) {
                    return Err(dec.fail("$deque holds more items than its maxlen"));
                }
                Node::Deque { maxlen, items }
            }
            StdKind::Slice => {
                let mut parts = [0; 3];
                for (i, part) in parts.iter_mut().enumerate() {
                    dec.path.push(Seg::Index(i));
                    let v = seq.next_element_seed(NodeSeed {
                        dec: &mut *dec,
                        depth,
                    })?;
                    dec.path.pop();
                    *part = v.ok_or_else(|| dec.fail("$slice must be [start, stop, step]"))?;
                }
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(dec.fail("$slice must be [start, stop, step]"));
                }
                Node::Slice(parts)
            }
            StdKind::Range => {
                let mut r = [0i64; 3];
                for part in &mut r {
                    *part = match seq.next_element::<Value>()? {
                        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
                        _ => return Err(dec.fail("$range must be [start, stop, step] of integers")),
                    };
                }
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(dec.fail("$range must be [start, stop, step] of integers"));
                }
                if r[2] == 0 {
                    return Err(dec.fail("$range step must not be zero"));
                }
                Node::Range(r)
            }
        };
        dec.tree.nodes[id] = node;
        Ok(id)
    }
}

/// `$attrs`: `[ODICT, NAME, VALUE, ...]` (section 6.7).
pub(super) struct AttrsSeed<'a, 'f> {
    pub(super) dec: &'a mut Decoder<'f>,
    pub(super) depth: usize,
}

impl<'de> DeserializeSeed<'de> for AttrsSeed<'_, '_> {
    type Value = NodeId;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<NodeId, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AttrsSeed<'_, '_> {
    type Value = NodeId;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array: an $odict node, then attribute name, value pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<NodeId, A::Error> {
        let dec = self.dec;
        if self.depth >= MAX_DEPTH {
            return Err(dec.limit("container nesting depth", MAX_DEPTH as u64));
        }
        let depth = self.depth + 1;
        let id = dec.tree.push(Node::None);
        let target = seq.next_element_seed(NodeSeed {
            dec: &mut *dec,
            depth,
        })?;
        let Some(target) = target.filter(|&t| matches!(dec.tree.nodes[t], Node::ODict(_))) else {
            // Not a `$ref` either: attributes are set where the object is made.
            return Err(dec.fail("$attrs must start with an $odict node"));
        };
        let attrs = read_fields(dec, &mut seq, depth, "attribute")?;
        if attrs.is_empty() {
            return Err(dec.fail("$attrs without attributes"));
        }
        if let Some((name, _)) = attrs.iter().find(|(n, _)| n.starts_with("__")) {
            return Err(dec.fail(format!(
                "attribute `{name}`: names starting with `__` are not instance attributes"
            )));
        }
        dec.tree.nodes[id] = Node::Attrs { target, attrs };
        Ok(id)
    }
}
