//! The nodes of a tree: scalars, containers, references and the typed nodes
//! of version 2 (docs/SPEC.md, section 10).

use super::tensor::TensorRef;
use super::NodeId;
use serde_json::Value;
use std::sync::Arc;

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
