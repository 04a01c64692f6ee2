//! The tree: containers, scalars and references to tensor entries, stored as
//! an arena of [`Node`]s and encoded as the JSON subset docs/SPEC.md defines.
//!
//! Identity: every *memoizable* node (bytes, containers, tensors) gets the next
//! memo number in document order (a container before its children) the first
//! time it appears; a later appearance of the same object is `{"$ref": n}`.

use crate::dtype::Dtype;
use crate::error::{FormatError, Result};
use crate::syntax::{
    is_class_name, is_date, is_datetime, is_decimal, is_identifier, is_import_name, is_timedelta,
    is_uuid,
};
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Index of a node in [`Tree::nodes`].
pub type NodeId = usize;

/// The deepest container nesting (lists, tuples, dicts, sets) a tree may have.
pub const MAX_DEPTH: usize = 50;
/// The most dimensions a tensor view may have.
pub const MAX_NDIM: usize = 64;
/// Bytes at or below this size are stored inline (base64); larger ones as a
/// `U8` tensor entry.
pub const INLINE_BYTES_MAX: usize = 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    /// An integer that fits in an i64.
    Int(i64),
    /// Any other integer, as lowercase hex digits with an optional `-`.
    BigInt(String),
    Float(f64),
    Complex(f64, f64),
    Str(String),
    /// Inline bytes (memoizable).
    Bytes(Vec<u8>),
    /// Bytes stored as a 1-D `U8` tensor entry of this name (memoizable).
    BytesEntry(String),
    List(Vec<NodeId>),
    Tuple(Vec<NodeId>),
    Set(Vec<NodeId>),
    FrozenSet(Vec<NodeId>),
    /// A `dict`: key, value pairs in insertion order.
    Dict(Vec<(NodeId, NodeId)>),
    /// A `collections.OrderedDict`.
    ODict(Vec<(NodeId, NodeId)>),
    /// A tensor or array view of an entry (memoizable).
    Tensor(TensorRef),
    /// A second appearance of the memoizable node with this memo number.
    Ref(usize),
    /// A `torch.dtype`, by its attribute name in `torch` (`"bfloat16"`).
    TorchDtype(String),
    /// A `torch.device`, as `str(device)` (`"cuda:0"`).
    TorchDevice(String),
    /// A `torch.Size`.
    TorchSize(Vec<i64>),
    /// A numpy scalar: its numpy dtype descriptor and raw bytes.
    NpScalar {
        dtype: Value,
        data: Vec<u8>,
    },
    // Version 2 (docs/SPEC.md, section 10).
    /// A class record: an instance of `shape.class` (`module:qualname`),
    /// with one value per field of the shape, in order (memoizable).
    Object {
        shape: Arc<Shape>,
        values: Vec<NodeId>,
    },
    /// A member of the enum class `module:qualname`, by its value.
    Enum {
        class: Arc<str>,
        value: NodeId,
    },
    /// A function or class by reference: its `module:qualname`.
    Callable(String),
    /// A `functools.partial` of the function `func` (memoizable).
    Partial {
        func: String,
        args: Vec<NodeId>,
        keywords: Vec<(String, NodeId)>,
    },
    /// A `datetime.datetime` in ISO 8601 (`datetime.isoformat()`), with an
    /// optional `[zone]` suffix.
    Datetime(String),
    /// A `datetime.date`, `YYYY-MM-DD`.
    Date(String),
    /// A `datetime.timedelta` in its normalised form.
    Timedelta {
        days: i64,
        seconds: i64,
        microseconds: i64,
    },
    /// A `pathlib.Path`, as `str(path)`.
    Path(String),
    /// A `uuid.UUID`, canonical lowercase text.
    Uuid(String),
    /// A `decimal.Decimal`, as `str(d)`.
    Decimal(String),
    /// A `datetime.time`, as `time.isoformat()` (fixed offsets only).
    Time(String),
    /// A `datetime.timezone`: its offset text and its name, if it has one.
    Timezone {
        offset: String,
        name: Option<String>,
    },
    /// A `pathlib.PurePosixPath` or (`windows`) `PureWindowsPath`, as `str`.
    PurePath {
        windows: bool,
        text: String,
    },
    /// An `argparse.Namespace`: its attributes in order (memoizable).
    Namespace(Vec<(String, NodeId)>),
    /// A `collections.defaultdict`: its factory (one of
    /// [`DEFAULT_FACTORIES`], or `None`) and items (memoizable).
    DefaultDict {
        factory: Option<String>,
        pairs: Vec<(NodeId, NodeId)>,
    },
    /// A `collections.Counter` (memoizable).
    Counter(Vec<(NodeId, NodeId)>),
    /// A `collections.deque` and its `maxlen` (memoizable).
    Deque {
        maxlen: Option<u64>,
        items: Vec<NodeId>,
    },
    /// A `slice(start, stop, step)` of any values.
    Slice([NodeId; 3]),
    /// A `range(start, stop, step)`.
    Range([i64; 3]),
    // Version 4 (docs/SPEC.md, section 6.7).
    /// The `collections.OrderedDict` node `target` with instance attributes
    /// (torch's state-dict `_metadata`), in order; not memoizable itself.
    Attrs {
        target: NodeId,
        attrs: Vec<(String, NodeId)>,
    },
}

impl Node {
    /// Whether this node takes a memo number.
    pub fn is_memoizable(&self) -> bool {
        matches!(
            self,
            Node::Bytes(_)
                | Node::BytesEntry(_)
                | Node::List(_)
                | Node::Tuple(_)
                | Node::Set(_)
                | Node::FrozenSet(_)
                | Node::Dict(_)
                | Node::ODict(_)
                | Node::Tensor(_)
                | Node::Object { .. }
                | Node::Partial { .. }
                | Node::Namespace(_)
                | Node::DefaultDict { .. }
                | Node::Counter(_)
                | Node::Deque { .. }
        )
    }

    /// Whether this node is one of version 2's (docs/SPEC.md, section 10).
    pub fn is_typed(&self) -> bool {
        matches!(
            self,
            Node::Object { .. }
                | Node::Enum { .. }
                | Node::Callable(_)
                | Node::Partial { .. }
                | Node::Datetime(_)
                | Node::Date(_)
                | Node::Timedelta { .. }
                | Node::Path(_)
                | Node::Uuid(_)
                | Node::Decimal(_)
                | Node::Time(_)
                | Node::Timezone { .. }
                | Node::PurePath { .. }
                | Node::Namespace(_)
                | Node::DefaultDict { .. }
                | Node::Counter(_)
                | Node::Deque { .. }
                | Node::Slice(_)
                | Node::Range(_)
        )
    }
}

/// The factories a `$defaultdict` may name: builtin types whose call runs
/// nothing else (SPEC 10.6). Any other factory is refused by a writer.
pub const DEFAULT_FACTORIES: &[&str] = &[
    "builtins:list",
    "builtins:dict",
    "builtins:set",
    "builtins:frozenset",
    "builtins:tuple",
    "builtins:int",
    "builtins:float",
    "builtins:complex",
    "builtins:str",
    "builtins:bytes",
    "builtins:bool",
    "collections:OrderedDict",
    "collections:Counter",
    "collections:deque",
];

/// The class and field names of a class record; every record of one class
/// (with the same fields) shares one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// `module:qualname`.
    pub class: String,
    pub fields: Vec<String>,
}

impl Shape {
    pub fn new(class: impl Into<String>, fields: Vec<String>) -> Arc<Shape> {
        Arc::new(Shape {
            class: class.into(),
            fields,
        })
    }
}

/// What kind of object a tensor view comes back as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// `torch.Tensor`.
    Torch,
    /// `torch.nn.Parameter`.
    Parameter,
    /// `numpy.ndarray`.
    Numpy,
}

impl TensorKind {
    pub fn tag(&self) -> &'static str {
        match self {
            TensorKind::Torch => "$tensor",
            TensorKind::Parameter => "$parameter",
            TensorKind::Numpy => "$ndarray",
        }
    }
}

/// A view of (part of) one tensor entry's bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Strides in bytes; `None` means C-contiguous.
    pub strides: Option<Vec<i64>>,
    /// Byte offset of element 0 from the entry's first byte.
    pub offset: u64,
}

/// A tensor or array in the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub kind: TensorKind,
    /// The safetensors entry holding the bytes.
    pub entry: String,
    /// `None`: the short form, the whole entry with its own dtype and shape.
    pub view: Option<View>,
    /// `None`: the default (false for tensors, true for parameters).
    pub requires_grad: Option<bool>,
    /// The numpy dtype descriptor when `dtype` alone does not say it
    /// (big-endian, datetime, strings, records, long double).
    pub np_dtype: Option<Value>,
    /// The device the tensor was saved from (informational).
    pub device: Option<String>,
    /// Version 3: the entry whose storage this tensor views. `entry` then
    /// holds the tensor's own row-major bytes (what a plain safetensors
    /// reader sees), and `view` is relative to the first byte of `base`.
    pub base: Option<String>,
}

impl TensorRef {
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
            .unwrap_or(self.kind == TensorKind::Parameter)
    }
}

/// C-contiguous strides in bytes.
pub fn contiguous_strides(shape: &[u64], itemsize: u64) -> Option<Vec<i64>> {
    let mut out = vec![0i64; shape.len()];
    let mut acc: u64 = itemsize;
    for i in (0..shape.len()).rev() {
        out[i] = i64::try_from(acc).ok()?;
        acc = acc.checked_mul(shape[i].max(1))?;
    }
    Some(out)
}

/// The byte range `[lo, hi)` a view reaches relative to its offset origin,
/// or `None` on overflow. An empty view (a zero dimension) reaches nothing
/// and gives `Some(None)`.
pub fn view_extent(view: &View) -> Option<Option<(i128, i128)>> {
    let itemsize = i128::from(view.dtype.itemsize());
    if view.shape.contains(&0) {
        return Some(None);
    }
    let strides = match &view.strides {
        Some(s) => s.clone(),
        None => contiguous_strides(&view.shape, view.dtype.itemsize())?,
    };
    let mut lo = i128::from(view.offset);
    let mut hi = i128::from(view.offset) + itemsize;
    for (&n, &s) in view.shape.iter().zip(&strides) {
        let span = (i128::from(n) - 1).checked_mul(i128::from(s))?;
        if span < 0 {
            lo = lo.checked_add(span)?;
        } else {
            hi = hi.checked_add(span)?;
        }
    }
    Some(Some((lo, hi)))
}

/// True when `strides` (bytes) lay `shape` out row-major without gaps
/// (dimensions of size 1 may have any stride).
pub fn is_dense(shape: &[u64], strides: &[i64], itemsize: u64) -> bool {
    let mut acc = itemsize;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        if n != 1 && i64::try_from(acc).ok() != Some(s) {
            return false;
        }
        acc = match acc.checked_mul(n) {
            Some(a) => a,
            None => return false,
        };
    }
    true
}

/// The row-major bytes of a view of `bytes`: element 0 at byte `offset`,
/// byte `strides`. `None` when the view reaches outside `bytes` or overflows.
pub fn gather(
    bytes: &[u8],
    itemsize: u64,
    shape: &[u64],
    strides: &[i64],
    offset: i64,
) -> Option<Vec<u8>> {
    if shape.contains(&0) {
        return Some(Vec::new());
    }
    let mut lo = i128::from(offset);
    let mut hi = lo + i128::from(itemsize);
    for (&n, &s) in shape.iter().zip(strides) {
        let span = (i128::from(n) - 1).checked_mul(i128::from(s))?;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if lo < 0 || hi > bytes.len() as i128 {
        return None;
    }
    // Trailing dimensions laid out densely are copied as one run.
    let mut k = shape.len();
    let mut run = itemsize;
    while k > 0 && (shape[k - 1] == 1 || i64::try_from(run).ok() == Some(strides[k - 1])) {
        run = run.checked_mul(shape[k - 1])?;
        k -= 1;
    }
    let total = shape.iter().try_fold(itemsize, |a, &n| a.checked_mul(n))?;
    let mut out = Vec::with_capacity(usize::try_from(total).ok()?);
    let run = usize::try_from(run).ok()?;
    let mut index = vec![0u64; k];
    let mut pos = offset;
    loop {
        let p = usize::try_from(pos).ok()?;
        out.extend_from_slice(bytes.get(p..p + run)?);
        // The next index of the outer `k` dimensions, odometer style.
        let mut d = k;
        loop {
            if d == 0 {
                return Some(out);
            }
            d -= 1;
            index[d] += 1;
            pos += strides[d];
            if index[d] < shape[d] {
                break;
            }
            pos -= strides[d] * shape[d] as i64;
            index[d] = 0;
        }
    }
}

/// The tree: an arena of nodes and its root.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub root: NodeId,
    /// Memo number -> node, filled by [`Tree::index_memo`] and the decoder.
    pub memo: Vec<NodeId>,
}

impl Tree {
    /// Adds a node and returns its id.
    pub fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Follows `Ref`s to the node they name.
    pub fn resolve(&self, id: NodeId) -> NodeId {
        match &self.nodes[id] {
            Node::Ref(n) => self.memo.get(*n).copied().unwrap_or(id),
            // The container itself (its attributes ride along).
            Node::Attrs { target, .. } => *target,
            _ => id,
        }
    }

    /// Recomputes `memo` by walking the tree in document order.
    pub fn index_memo(&mut self) {
        let mut memo = Vec::new();
        let mut stack = vec![self.root];
        while let Some(id) = stack.pop() {
            let node = &self.nodes[id];
            if node.is_memoizable() {
                memo.push(id);
            }
            self.push_children_rev(id, &mut stack);
        }
        self.memo = memo;
    }

    /// Pushes the direct children of `id` onto `stack`, last first (so they
    /// pop in document order).
    pub(crate) fn push_children_rev(&self, id: NodeId, stack: &mut Vec<NodeId>) {
        match &self.nodes[id] {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => {
                stack.extend(v.iter().rev())
            }
            Node::Dict(p) | Node::ODict(p) => {
                for (k, v) in p.iter().rev() {
                    stack.push(*v);
                    stack.push(*k);
                }
            }
            Node::Object { values, .. } => stack.extend(values.iter().rev()),
            Node::Namespace(a) => stack.extend(a.iter().rev().map(|(_, v)| *v)),
            Node::DefaultDict { pairs: p, .. } | Node::Counter(p) => {
                for (k, v) in p.iter().rev() {
                    stack.push(*v);
                    stack.push(*k);
                }
            }
            Node::Deque { items, .. } => stack.extend(items.iter().rev()),
            Node::Slice(v) => stack.extend(v.iter().rev()),
            Node::Attrs { target, attrs } => {
                stack.extend(attrs.iter().rev().map(|(_, v)| *v));
                stack.push(*target);
            }
            Node::Enum { value, .. } => stack.push(*value),
            Node::Partial { args, keywords, .. } => {
                stack.extend(keywords.iter().rev().map(|(_, v)| *v));
                stack.extend(args.iter().rev());
            }
            _ => {}
        }
    }

    /// Direct children in document order (keys before values).
    pub fn children(&self, id: NodeId) -> Vec<NodeId> {
        match &self.nodes[id] {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => v.clone(),
            Node::Dict(p) | Node::ODict(p) => p.iter().flat_map(|(k, v)| [*k, *v]).collect(),
            Node::Object { values, .. } => values.clone(),
            Node::Namespace(a) => a.iter().map(|(_, v)| *v).collect(),
            Node::DefaultDict { pairs: p, .. } | Node::Counter(p) => {
                p.iter().flat_map(|(k, v)| [*k, *v]).collect()
            }
            Node::Deque { items, .. } => items.clone(),
            Node::Slice(v) => v.to_vec(),
            Node::Attrs { target, attrs } => std::iter::once(*target)
                .chain(attrs.iter().map(|(_, v)| *v))
                .collect(),
            Node::Enum { value, .. } => vec![*value],
            Node::Partial { args, keywords, .. } => args
                .iter()
                .copied()
                .chain(keywords.iter().map(|(_, v)| *v))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every tensor reference (first appearances only) in document order.
    pub fn tensors(&self) -> Vec<&TensorRef> {
        self.memo
            .iter()
            .filter_map(|&id| match &self.nodes[id] {
                Node::Tensor(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// Every entry name the tree uses (tensors and large bytes), in document order.
    pub fn entry_names(&self) -> Vec<&str> {
        self.memo
            .iter()
            .filter_map(|&id| match &self.nodes[id] {
                Node::Tensor(t) => Some(t.entry.as_str()),
                Node::BytesEntry(e) => Some(e.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Encodes the tree as JSON.
    pub fn to_json(&self) -> Result<String> {
        let mut out = Vec::with_capacity(64 + self.nodes.len() * 32);
        let mut ser = serde_json::Serializer::new(&mut out);
        let shapes = RefCell::default();
        Enc::new(self, self.root, &shapes)
            .serialize(&mut ser)
            .map_err(|e| FormatError::unsupported("tree", e.to_string()))?;
        String::from_utf8(out).map_err(|e| FormatError::unsupported("tree", e.to_string()))
    }

    /// Serializes the node (and its subtree) as a JSON value.
    pub fn node_to_value(&self, id: NodeId) -> Result<Value> {
        let shapes = RefCell::default();
        serde_json::to_value(Enc::new(self, id, &shapes))
            .map_err(|e| FormatError::unsupported("tree", e.to_string()))
    }

    /// Decodes a tree from JSON, checking every rule of the spec that needs no
    /// knowledge of the entries. `file` names the source in errors.
    pub fn from_json(json: &str, file: &str) -> Result<Tree> {
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

    /// A human-readable place for errors: `tree["a"][0]`.
    pub fn place_of_path(parts: &[String]) -> String {
        let mut s = String::from("tree");
        for p in parts {
            s.push_str(p);
        }
        s
    }
}

// ---------------------------------------------------------------- encoding

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

// ---------------------------------------------------------------- decoding

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

/// The standard-library containers of section 10.6 that hold nodes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StdKind {
    Namespace,
    DefaultDict,
    Counter,
    Deque,
    Slice,
    Range,
}

impl StdKind {
    fn of(tag: &str) -> Option<Self> {
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

struct StdSeed<'a, 'f> {
    dec: &'a mut Decoder<'f>,
    depth: usize,
    kind: StdKind,
}

impl<'de> DeserializeSeed<'de> for StdSeed<'_, '_> {
    type Value = NodeId;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<NodeId, D::Error> {
        d.deserialize_seq(self)
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
struct AttrsSeed<'a, 'f> {
    dec: &'a mut Decoder<'f>,
    depth: usize,
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

/// The version-2 nodes that hold other nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum TypedKind {
    Object,
    Enum,
    Partial,
}

impl TypedKind {
    fn of(tag: &str) -> Option<Self> {
        match tag {
            "$object" => Some(TypedKind::Object),
            "$enum" => Some(TypedKind::Enum),
            "$partial" => Some(TypedKind::Partial),
            _ => None,
        }
    }
}

/// `$object`, `$enum` and `$partial`: arrays that start with a name.
struct TypedSeed<'a, 'f> {
    dec: &'a mut Decoder<'f>,
    depth: usize,
    kind: TypedKind,
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

fn parse_float<E: de::Error>(dec: &mut Decoder<'_>, v: &Value) -> std::result::Result<f64, E> {
    match v {
        Value::Number(n) if n.is_f64() => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Value::Object(m) if m.len() == 1 => match m.get("$float") {
            Some(Value::String(h)) => float_bits(dec, h),
            _ => Err(dec.fail("expected a float")),
        },
        _ => Err(dec.fail("expected a float (a number with a fraction or exponent)")),
    }
}

fn float_bits<E: de::Error>(dec: &mut Decoder<'_>, h: &str) -> std::result::Result<f64, E> {
    let ok = h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let bits = if ok {
        u64::from_str_radix(h, 16).ok()
    } else {
        None
    };
    match bits {
        Some(b) if !f64::from_bits(b).is_finite() => Ok(f64::from_bits(b)),
        Some(_) => Err(dec.fail("$float bits must encode a NaN or an infinity")),
        None => Err(dec.fail("$float must be 16 lowercase hex digits")),
    }
}

fn as_str<'v, E: de::Error>(
    dec: &mut Decoder<'_>,
    v: &'v Value,
    what: &str,
) -> std::result::Result<&'v str, E> {
    v.as_str()
        .ok_or_else(|| dec.fail(format!("{what} must be a string")))
}

fn b64<E: de::Error>(dec: &mut Decoder<'_>, s: &str) -> std::result::Result<Vec<u8>, E> {
    B64.decode(s)
        .map_err(|e| dec.fail(format!("invalid base64: {e}")))
}

fn leaf<E: de::Error>(dec: &mut Decoder<'_>, tag: &str, v: Value) -> std::result::Result<Node, E> {
    Ok(match tag {
        "$int" => {
            let s = as_str(dec, &v, "$int")?;
            let digits = s.strip_prefix('-').unwrap_or(s);
            let ok = !(digits.is_empty() || digits.len() > 1 && digits.starts_with('0'))
                && digits
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !ok {
                return Err(dec.fail("$int must be lowercase hex digits with an optional '-'"));
            }
            // Values that fit in an i64 must be written as plain integers.
            if let Ok(i) = i64::from_str_radix(s, 16) {
                let _ = i;
                return Err(dec.fail("$int holds a value that fits in an i64"));
            }
            Node::BigInt(s.to_string())
        }
        "$float" => {
            let s = as_str(dec, &v, "$float")?;
            Node::Float(float_bits(dec, s)?)
        }
        "$complex" => match v.as_array() {
            Some(a) if a.len() == 2 => {
                let re = parse_float(dec, &a[0])?;
                let im = parse_float(dec, &a[1])?;
                Node::Complex(re, im)
            }
            _ => return Err(dec.fail("$complex must be [real, imag]")),
        },
        "$bytes" => {
            let s = as_str(dec, &v, "$bytes")?;
            Node::Bytes(b64(dec, s)?)
        }
        "$bytes_entry" => Node::BytesEntry(as_str(dec, &v, "$bytes_entry")?.to_string()),
        "$ref" => {
            let n = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| dec.fail("$ref must be a non-negative integer"))?;
            if n >= dec.tree.memo.len() {
                return Err(dec.fail(format!(
                    "$ref {n} names no earlier object ({} so far)",
                    dec.tree.memo.len()
                )));
            }
            if dec.open_immutable[n] {
                return Err(dec.fail(format!(
                    "$ref {n} makes a cycle through a tuple, set or frozenset"
                )));
            }
            Node::Ref(n)
        }
        "$torch_dtype" => {
            let s = as_str(dec, &v, "$torch_dtype")?;
            // A closed table: the name is never looked up in `torch` itself
            // (an attribute lookup there imports lazy submodules).
            if !crate::dtype::is_torch_dtype_name(s) {
                return Err(dec.fail(format!(
                    "$torch_dtype {s:?} is not a torch dtype: expected one of {}",
                    crate::dtype::TORCH_DTYPE_NAMES.join(", ")
                )));
            }
            Node::TorchDtype(s.to_string())
        }
        "$torch_device" => {
            let s = as_str(dec, &v, "$torch_device")?;
            if !crate::dtype::is_torch_device(s) {
                return Err(dec.fail(format!(
                    "$torch_device {s:?} is not a torch device: expected a type ({}), \
                     optionally followed by `:` and an index",
                    crate::dtype::TORCH_DEVICE_TYPES.join(", ")
                )));
            }
            Node::TorchDevice(s.to_string())
        }
        "$torch_size" => {
            let dims: Option<Vec<i64>> = v
                .as_array()
                .map(|a| a.iter().map(Value::as_i64).collect())
                .unwrap_or(None);
            match dims {
                Some(d) if d.len() <= MAX_NDIM => Node::TorchSize(d),
                _ => return Err(dec.fail("$torch_size must be a list of at most 64 integers")),
            }
        }
        "$np_scalar" => {
            let Value::Object(m) = v else {
                return Err(dec.fail("$np_scalar must be {\"dtype\": ..., \"data\": base64}"));
            };
            if m.len() != 2 || !m.contains_key("dtype") {
                return Err(dec.fail("$np_scalar must have exactly the members dtype and data"));
            }
            let data = match m.get("data") {
                Some(Value::String(s)) => b64(dec, s)?,
                _ => return Err(dec.fail("$np_scalar data must be a base64 string")),
            };
            let dtype = m.get("dtype").cloned().unwrap_or(Value::Null);
            check_np_dtype(dec, &dtype)?;
            Node::NpScalar { dtype, data }
        }
        "$tensor" | "$parameter" | "$ndarray" => {
            let kind = match tag {
                "$tensor" => TensorKind::Torch,
                "$parameter" => TensorKind::Parameter,
                _ => TensorKind::Numpy,
            };
            Node::Tensor(tensor_ref(dec, kind, v)?)
        }
        "$callable" => {
            let name = as_str(dec, &v, "$callable")?;
            if !is_import_name(name) {
                return Err(dec.fail(format!(
                    "$callable names {name:?}, which is not a `module:qualname` of identifiers"
                )));
            }
            Node::Callable(name.to_string())
        }
        "$datetime" => {
            let t = as_str(dec, &v, "$datetime")?;
            if !is_datetime(t) {
                return Err(dec.fail(format!("$datetime {t:?} is not an ISO 8601 date and time")));
            }
            Node::Datetime(t.to_string())
        }
        "$date" => {
            let t = as_str(dec, &v, "$date")?;
            if !is_date(t) {
                return Err(dec.fail(format!("$date {t:?} is not YYYY-MM-DD")));
            }
            Node::Date(t.to_string())
        }
        "$timedelta" => {
            let parts: Option<Vec<i64>> = v
                .as_array()
                .map(|a| a.iter().map(Value::as_i64).collect())
                .unwrap_or(None);
            match parts.as_deref() {
                Some(&[days, seconds, microseconds])
                    if is_timedelta(days, seconds, microseconds) =>
                {
                    Node::Timedelta {
                        days,
                        seconds,
                        microseconds,
                    }
                }
                _ => {
                    return Err(dec.fail(
                        "$timedelta must be [days, seconds, microseconds] in timedelta's ranges",
                    ))
                }
            }
        }
        "$path" => Node::Path(as_str(dec, &v, "$path")?.to_string()),
        "$time" => {
            let t = as_str(dec, &v, "$time")?;
            if !crate::syntax::is_time(t) {
                return Err(dec.fail(format!(
                    "$time {t:?} is not HH:MM:SS[.ffffff] with an optional UTC offset"
                )));
            }
            Node::Time(t.to_string())
        }
        "$timezone" => match &v {
            Value::Array(a)
                if a.len() == 2
                    && a[0].as_str().is_some_and(crate::syntax::is_utc_offset)
                    && (a[1].is_null() || a[1].as_str().is_some_and(|n| n.len() <= 255)) =>
            {
                Node::Timezone {
                    offset: a[0].as_str().unwrap_or_default().to_string(),
                    name: a[1].as_str().map(str::to_string),
                }
            }
            _ => {
                return Err(dec.fail(
                    "$timezone must be [OFFSET, NAME]: a UTC offset `+HH:MM[:SS[.ffffff]]` under 24 hours and a name (at most 255 bytes) or null",
                ))
            }
        },
        "$pure_path" => match &v {
            Value::Array(a)
                if a.len() == 2
                    && matches!(a[0].as_str(), Some("posix" | "windows"))
                    && a[1].is_string() =>
            {
                Node::PurePath {
                    windows: a[0].as_str() == Some("windows"),
                    text: a[1].as_str().unwrap_or_default().to_string(),
                }
            }
            _ => return Err(dec.fail("$pure_path must be [\"posix\" or \"windows\", TEXT]")),
        },
        "$uuid" => {
            let t = as_str(dec, &v, "$uuid")?;
            if !is_uuid(t) {
                return Err(dec.fail(format!("$uuid {t:?} is not a lowercase 8-4-4-4-12 UUID")));
            }
            Node::Uuid(t.to_string())
        }
        "$decimal" => {
            let t = as_str(dec, &v, "$decimal")?;
            if !is_decimal(t) {
                return Err(dec.fail(format!("$decimal {t:?} is not a decimal number")));
            }
            Node::Decimal(t.to_string())
        }
        other => return Err(dec.fail(format!("unknown tag `{other}`"))),
    })
}

fn check_np_dtype<E: de::Error>(dec: &mut Decoder<'_>, v: &Value) -> std::result::Result<(), E> {
    // A numpy dtype descriptor: a string, or a list describing a record.
    // Its meaning is numpy's; readers check that it has no object fields
    // and that its item size matches before using it.
    match v {
        Value::String(_) | Value::Array(_) => Ok(()),
        _ => Err(dec.fail("np_dtype must be a string or a list")),
    }
}

fn tensor_ref<E: de::Error>(
    dec: &mut Decoder<'_>,
    kind: TensorKind,
    v: Value,
) -> std::result::Result<TensorRef, E> {
    let m = match v {
        Value::String(entry) => {
            return Ok(TensorRef {
                kind,
                entry,
                view: None,
                requires_grad: None,
                np_dtype: None,
                device: None,
                base: None,
            })
        }
        Value::Object(m) => m,
        _ => return Err(dec.fail("a tensor must be an entry name or an object")),
    };
    for k in m.keys() {
        if !matches!(
            k.as_str(),
            "entry"
                | "base"
                | "dtype"
                | "shape"
                | "strides"
                | "offset"
                | "requires_grad"
                | "np_dtype"
                | "device"
        ) {
            return Err(dec.fail(format!("unknown tensor member `{k}`")));
        }
    }
    let entry = match m.get("entry") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(dec.fail("tensor member `entry` must be a string")),
    };
    let base = match m.get("base") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(dec.fail("tensor member `base` must be a string")),
    };
    let view = match (m.get("dtype"), m.get("shape")) {
        (None, None) => {
            if m.contains_key("strides") || m.contains_key("offset") {
                return Err(dec.fail("strides and offset need dtype and shape"));
            }
            None
        }
        (Some(d), Some(s)) => {
            let code = as_str(dec, d, "dtype")?;
            let dtype =
                Dtype::parse(code).ok_or_else(|| dec.fail(format!("unknown dtype `{code}`")))?;
            let shape = u64_list(dec, s, "shape")?;
            let strides = match m.get("strides") {
                None => None,
                Some(Value::Array(a)) => {
                    let s: Option<Vec<i64>> = a.iter().map(Value::as_i64).collect();
                    match s {
                        Some(s) if s.len() == shape.len() => Some(s),
                        _ => {
                            return Err(
                                dec.fail("strides must be a list of integers, one per dimension")
                            )
                        }
                    }
                }
                Some(_) => return Err(dec.fail("strides must be a list")),
            };
            let offset = match m.get("offset") {
                None => 0,
                Some(o) => o
                    .as_u64()
                    .ok_or_else(|| dec.fail("offset must be a non-negative integer"))?,
            };
            Some(View {
                dtype,
                shape,
                strides,
                offset,
            })
        }
        _ => return Err(dec.fail("dtype and shape come together")),
    };
    if base.is_some() && view.is_none() {
        return Err(dec.fail("a tensor with `base` needs dtype and shape"));
    }
    let requires_grad = match m.get("requires_grad") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(dec.fail("requires_grad must be a boolean")),
    };
    if requires_grad.is_some() && kind == TensorKind::Numpy {
        return Err(dec.fail("requires_grad is for torch tensors"));
    }
    let np_dtype = m.get("np_dtype").cloned();
    if let Some(d) = &np_dtype {
        if kind != TensorKind::Numpy {
            return Err(dec.fail("np_dtype is for numpy arrays"));
        }
        if view.is_none() {
            return Err(dec.fail("np_dtype needs dtype and shape"));
        }
        check_np_dtype(dec, d)?;
    }
    if let Some(View {
        dtype: Dtype::Raw(_),
        ..
    }) = &view
    {
        if np_dtype.is_none() {
            return Err(dec.fail("a RAW dtype needs np_dtype"));
        }
    }
    let device = match m.get("device") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(dec.fail("device must be a string")),
    };
    Ok(TensorRef {
        kind,
        entry,
        view,
        requires_grad,
        np_dtype,
        device,
        base,
    })
}

fn u64_list<E: de::Error>(
    dec: &mut Decoder<'_>,
    v: &Value,
    what: &str,
) -> std::result::Result<Vec<u64>, E> {
    let list: Option<Vec<u64>> = v
        .as_array()
        .map(|a| a.iter().map(Value::as_u64).collect())
        .unwrap_or(None);
    match list {
        Some(l) if l.len() <= MAX_NDIM => Ok(l),
        Some(_) => Err(dec.limit("number of dimensions", MAX_NDIM as u64)),
        None => Err(dec.fail(format!("{what} must be a list of non-negative integers"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(json: &str) -> Tree {
        let t = Tree::from_json(json, "<t>").unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(t.to_json().unwrap(), json);
        t
    }

    #[test]
    fn scalars_and_containers() {
        round_trip(r#"{"$dict":["a",1,"b",[1.5,-0.0,null,true,"x"],3,{"$tuple":[]}]}"#);
        round_trip(r#"{"$float":"7ff8000000000000"}"#);
        round_trip(r#"{"$complex":[1.0,{"$float":"fff0000000000000"}]}"#);
        round_trip(r#"{"$int":"-1ffffffffffffffff"}"#);
        round_trip(r#"[{"$bytes":"AAE="},{"$ref":0},{"$ref":1}]"#);
        round_trip(r#"{"$tensor":"w"}"#);
        round_trip(
            r#"{"$ndarray":{"dtype":"F32","entry":"a","offset":4,"shape":[2,3],"strides":[4,8]}}"#,
        );
    }

    #[test]
    fn memo_numbers_follow_document_order() {
        let t = round_trip(r#"[[1],{"$dict":["k",[2]]},{"$ref":2}]"#);
        assert_eq!(t.memo.len(), 4);
        let Node::List(items) = &t.nodes[t.memo[3]] else {
            panic!("memo 3 is the list [2]")
        };
        assert_eq!(t.nodes[items[0]], Node::Int(2));
        assert!(matches!(
            t.nodes[t.resolve(t.nodes.len() - 1)],
            Node::Dict(_)
        ));
    }

    #[test]
    fn rejects() {
        for bad in [
            r#"{}"#,
            r#"{"$dict":["a"]}"#,
            r#"{"$tuple":[],"$list":[]}"#,
            r#"{"$ref":0}"#,
            r#"{"$tuple":[{"$ref":0}]}"#,
            r#"{"$int":"12"}"#,
            r#"{"$int":"0x12"}"#,
            r#"{"$float":"3ff0000000000000"}"#,
            r#"{"$what":1}"#,
            r#"18446744073709551615"#,
            r#"{"$tensor":{"entry":"a","dtype":"F99","shape":[]}}"#,
            r#"{"$tensor":{"entry":"a","np_dtype":"<f4"}}"#,
            r#"{"$tensor":{"entry":"a","extra":1}}"#,
            r#"[1] [2]"#,
        ] {
            assert!(Tree::from_json(bad, "<t>").is_err(), "{bad}");
        }
    }

    #[test]
    fn torch_names_come_from_closed_tables() {
        round_trip(r#"[{"$torch_dtype":"bfloat16"},{"$torch_device":"cuda:1"}]"#);
        for (bad, what) in [
            (
                r#"[{"$torch_dtype":"_inductor"}]"#,
                "$torch_dtype \"_inductor\"",
            ),
            (r#"[{"$torch_dtype":"onnx"}]"#, "$torch_dtype \"onnx\""),
            (
                r#"[{"$torch_dtype":"nn.Module"}]"#,
                "$torch_dtype \"nn.Module\"",
            ),
            (
                r#"[{"$torch_device":"_dynamo"}]"#,
                "$torch_device \"_dynamo\"",
            ),
        ] {
            let e = Tree::from_json(bad, "f.safetensors")
                .unwrap_err()
                .to_string();
            assert!(e.contains("f.safetensors"), "{e}");
            assert!(e.contains("tree[0]"), "{e}");
            assert!(e.contains(what), "{e}");
            assert!(e.contains("expected"), "{e}");
        }
    }

    #[test]
    fn typed_nodes() {
        let t = round_trip(
            r#"{"$object":["m:Cfg","lr",0.1,"act",{"$callable":"torch._C._nn:gelu"},"norm",{"$enum":["m:Norm","layer"]},"sub",{"$object":["m:f.<locals>.Sub"]},"again",{"$ref":1}]}"#,
        );
        assert_eq!(t.required_version(), 2);
        let refs = t.named_refs(t.root);
        let names: Vec<_> = refs
            .iter()
            .map(|r| (r.kind.as_str(), r.name.as_str(), r.count))
            .collect();
        assert_eq!(
            names,
            [
                ("object", "m:Cfg", 1),
                ("callable", "torch._C._nn:gelu", 1),
                ("enum", "m:Norm", 1),
                ("object", "m:f.<locals>.Sub", 1),
            ]
        );
        assert_eq!(refs[0].fields, ["lr", "act", "norm", "sub", "again"]);
        round_trip(r#"{"$partial":["m:f",[1,[2]],["k",{"$ref":1}]]}"#);
        round_trip(
            r#"[{"$datetime":"2024-01-02T03:04:05.000001+01:00[Europe/Paris]"},{"$date":"2024-01-02"},{"$timedelta":[-1,5,7]},{"$path":"a/b"},{"$uuid":"12345678-9abc-def0-1234-56789abcdef0"},{"$decimal":"-1.50E+3"}]"#,
        );
        assert_eq!(Tree::from_json("[1]", "<t>").unwrap().required_version(), 1);
        // Later objects of a shape (class and field names) refer to it by number.
        let t = round_trip(
            r#"[{"$object":["m:P","x",1,"y",{"$enum":["m:E",1]}]},{"$object":[1,2,{"$enum":[0,2]}]},{"$object":["m:P","x",3]},{"$object":[2,4]},{"$object":["m:T","t",{"$object":["m:T","t",null]}]},{"$object":[3,{"$object":[3,null]}]}]"#,
        );
        let Node::List(items) = &t.nodes[t.root] else {
            panic!("a list")
        };
        let Node::Object { shape, values } = &t.nodes[items[1]] else {
            panic!("an object")
        };
        assert_eq!(shape.class, "m:P");
        assert_eq!(shape.fields, ["x", "y"]);
        assert_eq!(values.len(), 2);
    }

    #[test]
    fn typed_rejects() {
        for bad in [
            r#"{"$object":[]}"#,
            r#"{"$object":["nocolon"]}"#,
            r#"{"$object":["m:C","a"]}"#,
            r#"{"$object":["m:C","a",1,"a",2]}"#,
            r#"{"$object":["m:C","not-ident",1]}"#,
            r#"{"$object":["m:C",1,1]}"#,
            r#"{"$object":["m:C","x",{"$ref":0}]}"#,
            r#"{"$object":["m:C","x",[{"$ref":0}]]}"#,
            r#"{"$enum":["m:E"]}"#,
            r#"{"$enum":["m:E",1,2]}"#,
            r#"{"$callable":"m:f.<locals>.g"}"#,
            r#"{"$callable":"os.system"}"#,
            r#"{"$partial":["m:f",[]]}"#,
            r#"{"$partial":["m:f",[],[],[]]}"#,
            r#"{"$partial":["m:f",[{"$ref":0}],[]]}"#,
            r#"{"$partial":["m:f.<locals>.g",[],[]]}"#,
            r#"{"$datetime":"2024-01-02"}"#,
            r#"{"$date":"2024-1-2"}"#,
            r#"{"$timedelta":[0,86400,0]}"#,
            r#"{"$timedelta":[0,0]}"#,
            r#"{"$uuid":"x"}"#,
            r#"{"$decimal":"1e"}"#,
            r#"{"$path":1}"#,
            r#"[{"$object":["m:P","x",1]},{"$object":[0]}]"#,
            r#"[{"$object":["m:P","x",1]},{"$object":[0,1,2]}]"#,
            r#"[{"$object":["m:P","x",1]},{"$object":[1,1]}]"#,
            r#"[{"$enum":["m:E",1]},{"$object":[0,1]}]"#,
            r#"[{"$object":["m:P","x",1]},{"$enum":[0,1]}]"#,
            r#"{"$object":["m:T","t",{"$object":[0,null]}]}"#,
            r#"{"$object":[0]}"#,
        ] {
            assert!(Tree::from_json(bad, "<t>").is_err(), "{bad}");
        }
        // Class records count towards the nesting limit.
        let deep =
            r#"{"$object":["m:C","x","#.repeat(MAX_DEPTH + 1) + "1" + &"]}".repeat(MAX_DEPTH + 1);
        let e = Tree::from_json(&deep, "<t>").unwrap_err();
        assert_eq!(e.code(), "limit_exceeded", "{e}");
    }

    #[test]
    fn cycles_through_lists_are_fine() {
        round_trip(r#"[{"$ref":0}]"#);
        round_trip(r#"{"$dict":["self",{"$ref":0}]}"#);
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        let e = Tree::from_json(&deep, "<t>").unwrap_err();
        assert_eq!(e.code(), "limit_exceeded", "{e}");
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        Tree::from_json(&ok, "<t>").unwrap();
        let very = "[".repeat(100_000);
        assert!(Tree::from_json(&very, "<t>").is_err());
    }

    #[test]
    fn extents() {
        let v = View {
            dtype: Dtype::F32,
            shape: vec![2, 3],
            strides: Some(vec![4, 8]),
            offset: 4,
        };
        assert_eq!(view_extent(&v), Some(Some((4, 4 + 4 + 16 + 4))));
        let neg = View {
            dtype: Dtype::I8,
            shape: vec![3],
            strides: Some(vec![-1]),
            offset: 2,
        };
        assert_eq!(view_extent(&neg), Some(Some((0, 3))));
    }
}
