//! `$object`, `$enum` and `$partial` (docs/SPEC.md, section 10).

use super::{read_fields, DecShape, Decoder, NodeSeed, Seg};
use crate::syntax::{is_class_name, is_import_name};
use crate::tree::node::{Node, Shape};
use crate::tree::{NodeId, MAX_DEPTH};
use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// The version-2 nodes that hold other nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum TypedKind {
    Object,
    Enum,
    Partial,
}

impl TypedKind {
    pub(super) fn of(tag: &str) -> Option<Self> {
        match tag {
            "$object" => Some(TypedKind::Object),
            "$enum" => Some(TypedKind::Enum),
            "$partial" => Some(TypedKind::Partial),
            _ => None,
        }
    }
}

/// `$object`, `$enum` and `$partial`: arrays that start with a name.
pub(super) struct TypedSeed<'a, 'f> {
    pub(super) dec: &'a mut Decoder<'f>,
    pub(super) depth: usize,
    pub(super) kind: TypedKind,
}

impl<'de> DeserializeSeed<'de> for TypedSeed<'_, '_> {
    type Value = NodeId;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<NodeId, D::Error> {
        d.deserialize_seq(self)
    }
}

/// Reads the leading name of a `$object`, `$enum` or `$partial` array.
fn read_name<'de, A: SeqAccess<'de>>(
    dec: &mut Decoder<'_>,
    seq: &mut A,
    tag: &str,
    importable: bool,
) -> std::result::Result<String, A::Error> {
    let name = match seq.next_element::<Value>()? {
        Some(Value::String(s)) => s,
        _ => return Err(dec.fail(format!("{tag} must start with a `module:qualname` string"))),
    };
    let ok = if importable {
        is_import_name(&name)
    } else {
        is_class_name(&name)
    };
    if !ok {
        return Err(dec.fail(format!(
            "{tag} names {name:?}, which is not a `module:qualname` of identifiers{}",
            if importable {
                " (without <locals>)"
            } else {
                ""
            }
        )));
    }
    Ok(name)
}

/// The head of a `$object` or `$enum`: a class name (which defines the next
/// shape) or the number of an earlier shape of the same kind.
enum Head {
    Name(String),
    Shape(usize),
}

fn read_head<'de, A: SeqAccess<'de>>(
    dec: &mut Decoder<'_>,
    seq: &mut A,
    tag: &str,
    kind: TypedKind,
) -> std::result::Result<Head, A::Error> {
    match seq.next_element::<Value>()? {
        Some(Value::String(name)) => {
            if !is_class_name(&name) {
                return Err(dec.fail(format!(
                    "{tag} names {name:?}, which is not a `module:qualname` of identifiers"
                )));
            }
            Ok(Head::Name(name))
        }
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(i)
                if dec.shapes.get(i).is_some_and(|s| {
                    matches!(
                        (s, kind),
                        (DecShape::Object(_), TypedKind::Object)
                            | (DecShape::Enum(_), TypedKind::Enum)
                    )
                }) =>
            {
                Ok(Head::Shape(i))
            }
            _ => Err(dec.fail(format!(
                "{tag} refers to shape {n}, which is not an earlier {tag} shape"
            ))),
        },
        _ => Err(dec.fail(format!(
            "{tag} must start with a `module:qualname` string or a shape number"
        ))),
    }
}

/// The positional arguments of a `$partial`.
struct ArgsSeed<'a, 'f> {
    dec: &'a mut Decoder<'f>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ArgsSeed<'_, '_> {
    type Value = Vec<NodeId>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Vec<NodeId>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArgsSeed<'_, '_> {
    type Value = Vec<NodeId>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of positional arguments")
    }
    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Vec<NodeId>, A::Error> {
        let mut out = Vec::new();
        loop {
            self.dec.path.push(Seg::Arg(out.len()));
            let item = seq.next_element_seed(NodeSeed {
                dec: &mut *self.dec,
                depth: self.depth,
            })?;
            self.dec.path.pop();
            match item {
                Some(i) => out.push(i),
                None => return Ok(out),
            }
        }
    }
}

/// The keyword arguments of a `$partial`.
struct KeywordsSeed<'a, 'f> {
    dec: &'a mut Decoder<'f>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for KeywordsSeed<'_, '_> {
    type Value = Vec<(String, NodeId)>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for KeywordsSeed<'_, '_> {
    type Value = Vec<(String, NodeId)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of keyword, value pairs")
    }
    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        read_fields(self.dec, &mut seq, self.depth, "keyword")
    }
}

impl<'de> Visitor<'de> for TypedSeed<'_, '_> {
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
            TypedKind::Object => {
                let memo = dec.register(id, true);
                let (shape, values) = match read_head(dec, &mut seq, "$object", self.kind)? {
                    Head::Name(class) => {
                        // The shape takes its number once its fields are read.
                        let fields = read_fields(dec, &mut seq, depth, "field")?;
                        let (names, values): (Vec<String>, Vec<NodeId>) =
                            fields.into_iter().unzip();
                        let shape = Shape::new(class, names);
                        dec.shapes.push(DecShape::Object(shape.clone()));
                        (shape, values)
                    }
                    Head::Shape(i) => {
                        let DecShape::Object(shape) = &dec.shapes[i] else {
                            unreachable!("read_head checked the kind")
                        };
                        let shape = shape.clone();
                        let n = shape.fields.len();
                        let mut values = Vec::with_capacity(n);
                        for k in 0..n {
                            dec.path.push(Seg::ShapeField(i, k));
                            let v = seq.next_element_seed(NodeSeed {
                                dec: &mut *dec,
                                depth,
                            })?;
                            let Some(v) = v else {
                                return Err(dec
                                    .fail(format!("$object of shape {i} needs {n} field values")));
                            };
                            dec.path.pop();
                            values.push(v);
                        }
                        if seq.next_element::<IgnoredAny>()?.is_some() {
                            return Err(dec.fail(format!(
                                "$object of shape {i} has more than its {n} field values"
                            )));
                        }
                        (shape, values)
                    }
                };
                dec.open_immutable[memo] = false;
                Node::Object { shape, values }
            }
            TypedKind::Enum => {
                let (class, new): (Arc<str>, bool) =
                    match read_head(dec, &mut seq, "$enum", self.kind)? {
                        Head::Name(class) => (Arc::from(class), true),
                        Head::Shape(i) => match &dec.shapes[i] {
                            DecShape::Enum(c) => (c.clone(), false),
                            DecShape::Object(_) => unreachable!("read_head checked the kind"),
                        },
                    };
                dec.path.push(Seg::Text(".value"));
                let value = seq.next_element_seed(NodeSeed {
                    dec: &mut *dec,
                    depth,
                })?;
                dec.path.pop();
                let Some(value) = value else {
                    return Err(dec.fail("$enum must be [class, value]"));
                };
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(dec.fail("$enum must be [class, value]"));
                }
                if new {
                    dec.shapes.push(DecShape::Enum(class.clone()));
                }
                Node::Enum { class, value }
            }
            TypedKind::Partial => {
                let memo = dec.register(id, true);
                let func = read_name(dec, &mut seq, "$partial", true)?;
                let args = seq.next_element_seed(ArgsSeed {
                    dec: &mut *dec,
                    depth,
                })?;
                let keywords = seq.next_element_seed(KeywordsSeed {
                    dec: &mut *dec,
                    depth,
                })?;
                let (Some(args), Some(keywords)) = (args, keywords) else {
                    return Err(dec.fail("$partial must be [function, [args...], [keywords...]]"));
                };
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(dec.fail("$partial must be [function, [args...], [keywords...]]"));
                }
                dec.open_immutable[memo] = false;
                Node::Partial {
                    func,
                    args,
                    keywords,
                }
            }
        };
        dec.tree.nodes[id] = node;
        Ok(id)
    }
}
