//! Encoding a tree as JSON: shapes numbered as they are first written,
//! non-finite floats as `$float` bits.

use super::node::{Node, Shape};
use super::tensor::{TensorKind, TensorRef};
use super::{NodeId, Tree, B64, MAX_DEPTH};
use crate::error::{FormatError, Result};
use base64::Engine as _;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// [`Tree::to_json`].
pub(super) fn to_json(tree: &Tree) -> Result<String> {
    let mut out = Vec::with_capacity(64 + tree.nodes.len() * 32);
    let mut ser = serde_json::Serializer::new(&mut out);
    let shapes = RefCell::default();
    Enc::new(tree, tree.root, &shapes)
        .serialize(&mut ser)
        .map_err(|e| FormatError::unsupported("tree", e.to_string()))?;
    String::from_utf8(out).map_err(|e| FormatError::unsupported("tree", e.to_string()))
}

/// [`Tree::node_to_value`].
pub(super) fn node_to_value(tree: &Tree, id: NodeId) -> Result<Value> {
    let shapes = RefCell::default();
    serde_json::to_value(Enc::new(tree, id, &shapes))
        .map_err(|e| FormatError::unsupported("tree", e.to_string()))
}

fn float_value(x: f64) -> FloatEnc {
    FloatEnc(x)
}

struct FloatEnc(f64);

impl Serialize for FloatEnc {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            s.serialize_f64(self.0)
        } else {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("$float", &format!("{:016x}", self.0.to_bits()))?;
            m.end()
        }
    }
}

/// Shapes written so far: by address (the fast path), and by content.
#[derive(Default)]
struct ShapeTable {
    by_ptr: HashMap<usize, usize>,
    objects: HashMap<Shape, usize>,
    enums: HashMap<String, usize>,
    count: usize,
}

struct Enc<'a> {
    tree: &'a Tree,
    id: NodeId,
    depth: usize,
    shapes: &'a RefCell<ShapeTable>,
}

impl<'a> Enc<'a> {
    fn new(tree: &'a Tree, id: NodeId, shapes: &'a RefCell<ShapeTable>) -> Self {
        Enc {
            tree,
            id,
            depth: 0,
            shapes,
        }
    }

    fn child(&self, id: NodeId) -> Self {
        Enc {
            tree: self.tree,
            id,
            depth: self.depth + 1,
            shapes: self.shapes,
        }
    }

    /// The number of a completed `$object` shape equal to this one, if any.
    fn shape(&self, shape: &Arc<Shape>) -> Option<usize> {
        let mut t = self.shapes.borrow_mut();
        let ptr = Arc::as_ptr(shape) as usize;
        if let Some(&n) = t.by_ptr.get(&ptr) {
            return Some(n);
        }
        let n = t.objects.get(&**shape).copied()?;
        t.by_ptr.insert(ptr, n);
        Some(n)
    }

    /// A `$object` written in full has ended: it defines the next shape (the
    /// first definition of equal shapes is the one later objects use).
    fn shape_done(&self, shape: &Arc<Shape>) {
        let mut t = self.shapes.borrow_mut();
        let n = t.count;
        t.count += 1;
        if !t.objects.contains_key(&**shape) {
            t.objects.insert((**shape).clone(), n);
            t.by_ptr.insert(Arc::as_ptr(shape) as usize, n);
        }
    }

    /// Like [`Enc::shape`] for an enum class.
    fn shape_of_enum(&self, class: &str) -> Option<usize> {
        self.shapes.borrow().enums.get(class).copied()
    }

    /// Like [`Enc::shape_done`] for an enum class.
    fn enum_done(&self, class: &str) {
        let mut t = self.shapes.borrow_mut();
        let n = t.count;
        t.count += 1;
        t.enums.entry(class.to_string()).or_insert(n);
    }
}

/// A `$object` that defines its shape: class, then field name, value pairs.
struct ObjectEnc<'r, 'a>(&'r Enc<'a>, &'r Shape, &'r [NodeId]);
impl Serialize for ObjectEnc<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(1 + self.2.len() * 2))?;
        seq.serialize_element(&self.1.class)?;
        for (name, v) in self.1.fields.iter().zip(self.2) {
            seq.serialize_element(name)?;
            seq.serialize_element(&self.0.child(*v))?;
        }
        seq.end()
    }
}

/// A `$object` whose shape was written before: its number, then the values.
struct ShapeRef<'r, 'a>(&'r Enc<'a>, usize, &'r [NodeId]);
impl Serialize for ShapeRef<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(1 + self.2.len()))?;
        seq.serialize_element(&self.1)?;
        for v in self.2 {
            seq.serialize_element(&self.0.child(*v))?;
        }
        seq.end()
    }
}

struct Seq<'r, 'a>(&'r Enc<'a>, &'r [NodeId]);
impl Serialize for Seq<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for &c in self.1 {
            seq.serialize_element(&self.0.child(c))?;
        }
        seq.end()
    }
}

struct Pairs<'r, 'a>(&'r Enc<'a>, &'r [(NodeId, NodeId)]);
impl Serialize for Pairs<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len() * 2))?;
        for &(k, v) in self.1 {
            seq.serialize_element(&self.0.child(k))?;
            seq.serialize_element(&self.0.child(v))?;
        }
        seq.end()
    }
}

/// A class record's array: the class name, then field name, value pairs.
struct Fields<'r, 'a>(&'r Enc<'a>, Option<&'r str>, &'r [(String, NodeId)]);
impl Serialize for Fields<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let head = usize::from(self.1.is_some());
        let mut seq = s.serialize_seq(Some(head + self.2.len() * 2))?;
        if let Some(class) = self.1 {
            seq.serialize_element(class)?;
        }
        for (name, v) in self.2 {
            seq.serialize_element(name)?;
            seq.serialize_element(&self.0.child(*v))?;
        }
        seq.end()
    }
}

/// An array that starts with one plain JSON value, then pairs or items.
struct Headed<'r, 'a>(&'r Enc<'a>, Value, &'r [(NodeId, NodeId)], &'r [NodeId]);
impl Serialize for Headed<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(1 + self.2.len() * 2 + self.3.len()))?;
        seq.serialize_element(&self.1)?;
        for &(k, v) in self.2 {
            seq.serialize_element(&self.0.child(k))?;
            seq.serialize_element(&self.0.child(v))?;
        }
        for &c in self.3 {
            seq.serialize_element(&self.0.child(c))?;
        }
        seq.end()
    }
}

/// `$attrs`: the target node, then attribute name, value pairs.
struct AttrsEnc<'r, 'a>(&'r Enc<'a>, NodeId, &'r [(String, NodeId)]);
impl Serialize for AttrsEnc<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(1 + self.2.len() * 2))?;
        seq.serialize_element(&self.0.child(self.1))?;
        for (name, v) in self.2 {
            seq.serialize_element(name)?;
            seq.serialize_element(&self.0.child(*v))?;
        }
        seq.end()
    }
}

fn tagged<S: Serializer, T: Serialize + ?Sized>(
    s: S,
    tag: &str,
    v: &T,
) -> std::result::Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(tag, v)?;
    m.end()
}

fn tensor_value(t: &TensorRef) -> Value {
    let short = t.view.is_none()
        && t.base.is_none()
        && t.np_dtype.is_none()
        && t.device.is_none()
        && t.requires_grad
            .is_none_or(|r| r == (t.kind == TensorKind::Parameter));
    if short {
        return Value::String(t.entry.clone());
    }
    let mut m = serde_json::Map::new();
    m.insert("entry".into(), Value::String(t.entry.clone()));
    if let Some(b) = &t.base {
        m.insert("base".into(), Value::String(b.clone()));
    }
    if let Some(v) = &t.view {
        m.insert("dtype".into(), Value::String(v.dtype.code()));
        m.insert("shape".into(), Value::from(v.shape.clone()));
        if let Some(s) = &v.strides {
            m.insert("strides".into(), Value::from(s.clone()));
        }
        if v.offset != 0 {
            m.insert("offset".into(), Value::from(v.offset));
        }
    }
    if let Some(r) = t.requires_grad {
        m.insert("requires_grad".into(), Value::Bool(r));
    }
    if let Some(d) = &t.np_dtype {
        m.insert("np_dtype".into(), d.clone());
    }
    if let Some(d) = &t.device {
        m.insert("device".into(), Value::String(d.clone()));
    }
    Value::Object(m)
}

impl Serialize for Enc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if self.depth > MAX_DEPTH * 2 + 4 {
            return Err(S::Error::custom(format!(
                "nesting deeper than {MAX_DEPTH} containers"
            )));
        }
        match &self.tree.nodes[self.id] {
            Node::None => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(i) => s.serialize_i64(*i),
            Node::BigInt(h) => tagged(s, "$int", h),
            Node::Float(x) => float_value(*x).serialize(s),
            Node::Complex(re, im) => tagged(s, "$complex", &(float_value(*re), float_value(*im))),
            Node::Str(x) => s.serialize_str(x),
            Node::Bytes(b) => tagged(s, "$bytes", &B64.encode(b)),
            Node::BytesEntry(e) => tagged(s, "$bytes_entry", e),
            Node::List(v) => Seq(self, v).serialize(s),
            Node::Tuple(v) => tagged(s, "$tuple", &Seq(self, v)),
            Node::Set(v) => tagged(s, "$set", &Seq(self, v)),
            Node::FrozenSet(v) => tagged(s, "$frozenset", &Seq(self, v)),
            Node::Dict(p) => tagged(s, "$dict", &Pairs(self, p)),
            Node::ODict(p) => tagged(s, "$odict", &Pairs(self, p)),
            Node::Attrs { target, attrs } => tagged(s, "$attrs", &AttrsEnc(self, *target, attrs)),
            Node::Namespace(a) => tagged(s, "$namespace", &Fields(self, None, a)),
            Node::DefaultDict { factory, pairs } => tagged(
                s,
                "$defaultdict",
                &Headed(self, factory.as_deref().into(), pairs, &[]),
            ),
            Node::Counter(p) => tagged(s, "$counter", &Pairs(self, p)),
            Node::Deque { maxlen, items } => {
                tagged(s, "$deque", &Headed(self, (*maxlen).into(), &[], items))
            }
            Node::Slice(v) => tagged(s, "$slice", &Seq(self, v)),
            Node::Range(r) => tagged(s, "$range", r),
            Node::Time(t) => tagged(s, "$time", t),
            Node::Timezone { offset, name } => tagged(s, "$timezone", &(offset, name)),
            Node::PurePath { windows, text } => tagged(
                s,
                "$pure_path",
                &(if *windows { "windows" } else { "posix" }, text),
            ),
            Node::Tensor(t) => tagged(s, t.kind.tag(), &tensor_value(t)),
            Node::Ref(n) => tagged(s, "$ref", n),
            Node::TorchDtype(d) => tagged(s, "$torch_dtype", d),
            Node::TorchDevice(d) => tagged(s, "$torch_device", d),
            Node::TorchSize(v) => tagged(s, "$torch_size", v),
            Node::NpScalar { dtype, data } => {
                let mut m = serde_json::Map::new();
                m.insert("dtype".into(), dtype.clone());
                m.insert("data".into(), Value::String(B64.encode(data)));
                tagged(s, "$np_scalar", &Value::Object(m))
            }
            Node::Object { shape, values } => match self.shape(shape) {
                Some(n) => tagged(s, "$object", &ShapeRef(self, n, values)),
                None => {
                    let r = tagged(s, "$object", &ObjectEnc(self, shape, values));
                    self.shape_done(shape);
                    r
                }
            },
            Node::Enum { class, value } => match self.shape_of_enum(class) {
                Some(n) => tagged(s, "$enum", &(n, self.child(*value))),
                None => {
                    let r = tagged(s, "$enum", &(&**class, self.child(*value)));
                    self.enum_done(class);
                    r
                }
            },
            Node::Callable(name) => tagged(s, "$callable", name),
            Node::Partial {
                func,
                args,
                keywords,
            } => tagged(
                s,
                "$partial",
                &(func, Seq(self, args), Fields(self, None, keywords)),
            ),
            Node::Datetime(t) => tagged(s, "$datetime", t),
            Node::Date(t) => tagged(s, "$date", t),
            Node::Timedelta {
                days,
                seconds,
                microseconds,
            } => tagged(s, "$timedelta", &[days, seconds, microseconds]),
            Node::Path(t) => tagged(s, "$path", t),
            Node::Uuid(t) => tagged(s, "$uuid", t),
            Node::Decimal(t) => tagged(s, "$decimal", t),
        }
    }
}
