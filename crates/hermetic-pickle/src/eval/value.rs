//! The evaluator's value graph: an arena of [`Value`]s addressed by [`Id`].
//!
//! Containers hold ids, never values, so a shared object (a memo entry that
//! is fetched twice, a tied weight) is one node referenced twice, cycles
//! are ordinary edges, and dropping the arena never recurses.

use super::error::Budget;
use std::borrow::Cow;

mod arena;
mod dtype;

pub use arena::Arena;
pub use dtype::*;

/// Index of a node in an [`Arena`].
pub type Id = u32;

/// `None`, `True` and `False` are interned at these ids.
pub const NONE: Id = 0;
pub const TRUE: Id = 1;
pub const FALSE: Id = 2;

/// A Python `str`. The bytes are UTF-8, except that lone surrogates (which
/// CPython accepts in pickles, `surrogatepass`) are encoded as three-byte
/// sequences; `utf8` says whether there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Str<'a> {
    pub bytes: Cow<'a, [u8]>,
    pub utf8: bool,
}

impl Str<'_> {
    /// The text, when it holds no lone surrogate.
    pub fn as_str(&self) -> Option<&str> {
        if self.utf8 {
            std::str::from_utf8(&self.bytes).ok()
        } else {
            None
        }
    }

    /// The text with lone surrogates replaced by U+FFFD.
    pub fn lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

/// Which mapping type a dict node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DictKind {
    Dict,
    OrderedDict,
    Counter,
}

/// A `dict`, `collections.OrderedDict` or `collections.Counter`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dict {
    pub kind: DictKind,
    /// Key/value pairs in insertion order. A key set twice appears twice;
    /// consumers apply Python's "last value, first position" rule.
    pub items: Vec<(Id, Id)>,
    /// Instance attributes set by BUILD (a state dict's `_metadata`).
    pub state: Option<Id>,
}

/// A global the machine resolved. Only [`Known`] globals have a meaning;
/// foreign ones exist only in the opaque modes, as inert references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Global {
    Known(Known),
    Foreign { module: String, name: String },
}

/// Every global with a Rust meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Known {
    Set,
    FrozenSet,
    Complex,
    Slice,
    Range,
    ByteArray,
    Bytes,
    Int,
    Float,
    Bool,
    Str,
    List,
    Tuple,
    Dict,
    OrderedDict,
    Counter,
    CodecsEncode,
    TorchSize,
    TorchDevice,
    TorchTensor,
    Parameter,
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    RebuildMetaNoStorage,
    /// `torch.FloatStorage` and the other legacy typed storage classes.
    StorageType(TorchDtype),
    /// `torch.UntypedStorage`: bytes.
    UntypedStorage,
    TorchDtype(TorchDtype),
    /// `torch.strided`, `torch.contiguous_format`, `torch.per_tensor_affine`, ...
    TorchEnum(&'static str),
    /// `torch.serialization._get_layout(name)`: a layout by its name.
    GetLayout,
    NpReconstruct,
    NpNdarray,
    NpDtype,
    NpScalar,
    NpFromBuffer,
    /// `joblib.numpy_pickle.NumpyArrayWrapper`, in a joblib dump: the array's
    /// bytes follow its BUILD in the file (joblib's `load_build`).
    JoblibWrapper,
}

impl Known {
    /// The canonical `module.name` (for messages).
    pub fn qualname(self) -> String {
        let s = match self {
            Known::Set => "builtins.set",
            Known::FrozenSet => "builtins.frozenset",
            Known::Complex => "builtins.complex",
            Known::Slice => "builtins.slice",
            Known::Range => "builtins.range",
            Known::ByteArray => "builtins.bytearray",
            Known::Bytes => "builtins.bytes",
            Known::Int => "builtins.int",
            Known::Float => "builtins.float",
            Known::Bool => "builtins.bool",
            Known::Str => "builtins.str",
            Known::List => "builtins.list",
            Known::Tuple => "builtins.tuple",
            Known::Dict => "builtins.dict",
            Known::OrderedDict => "collections.OrderedDict",
            Known::Counter => "collections.Counter",
            Known::CodecsEncode => "_codecs.encode",
            Known::TorchSize => "torch.Size",
            Known::TorchDevice => "torch.device",
            Known::TorchTensor => "torch.Tensor",
            Known::Parameter => "torch.nn.parameter.Parameter",
            Known::RebuildTensor => "torch._utils._rebuild_tensor",
            Known::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2",
            Known::RebuildTensorV3 => "torch._utils._rebuild_tensor_v3",
            Known::RebuildParameter => "torch._utils._rebuild_parameter",
            Known::RebuildParameterWithState => "torch._utils._rebuild_parameter_with_state",
            Known::RebuildFromTypeV2 => "torch._tensor._rebuild_from_type_v2",
            Known::RebuildMetaNoStorage => "torch._utils._rebuild_meta_tensor_no_storage",
            Known::StorageType(d) => return format!("torch.{}", d.storage_class()),
            Known::UntypedStorage => "torch.UntypedStorage",
            Known::TorchDtype(d) => return format!("torch.{}", d.name()),
            Known::TorchEnum(n) => return format!("torch.{n}"),
            Known::GetLayout => "torch.serialization._get_layout",
            Known::NpReconstruct => "numpy._core.multiarray._reconstruct",
            Known::NpNdarray => "numpy.ndarray",
            Known::NpDtype => "numpy.dtype",
            Known::JoblibWrapper => "joblib.numpy_pickle.NumpyArrayWrapper",
            Known::NpScalar => "numpy._core.multiarray.scalar",
            Known::NpFromBuffer => "numpy._core.numeric._frombuffer",
        };
        s.to_string()
    }
}

/// A typed view of a storage: the storage's index in the load's storage
/// table, the element type it is used with, and (for legacy storage views)
/// the byte range of the storage it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageView {
    pub index: u32,
    pub dtype: TorchDtype,
    pub byte_offset: u64,
    pub nbytes: u64,
}

/// A torch tensor or `nn.Parameter`: a strided view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// `None` for meta tensors, which have no data.
    pub storage: Option<StorageView>,
    pub dtype: TorchDtype,
    /// Offset of element 0 in elements of `dtype` from the view's start.
    pub offset: u64,
    pub shape: Vec<u64>,
    /// Strides in elements; never negative.
    pub stride: Vec<u64>,
    pub requires_grad: bool,
    pub parameter: bool,
    /// `{"conj": bool, "neg": bool}` from `_rebuild_tensor_v2`'s metadata.
    pub metadata: Option<Id>,
    /// Python attributes restored on the object (`_rebuild_parameter_with_state`,
    /// `_rebuild_from_type_v2`): a dict, or a `(dict, slots)` tuple.
    pub state: Option<Id>,
}

impl Tensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Bytes of the elements the tensor has (not of its storage).
    pub fn nbytes(&self) -> u64 {
        self.numel().saturating_mul(self.dtype.itemsize())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Made {
    /// `REDUCE`, `OBJ` or `INST`: the callable was called with `args`.
    Call,
    /// `NEWOBJ`/`NEWOBJ_EX`/`copyreg.__newobj__`: `cls.__new__(cls, *args)`.
    New,
    /// `copyreg._reconstructor(cls, base, state)` (protocols 0 and 1).
    Reconstructor,
}

/// In the opaque modes, a foreign object recorded instead of built: what
/// would have been called with what, and the state it would have received.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// The callable or class node (usually a foreign [`Global`]).
    pub class: Id,
    pub made: Made,
    /// For [`Made::Reconstructor`] the state `copyreg._reconstructor` passes.
    pub args: Option<Id>,
    pub kwargs: Option<Id>,
    /// For [`Made::Reconstructor`]: the base class whose `__new__` runs.
    pub base: Option<Id>,
    /// What BUILD handed to `__setstate__` (the last one, if several).
    pub state: Option<Id>,
    /// Items APPENDS/ADDITEMS gave it (list subclasses).
    pub list_items: Vec<Id>,
    /// Items SETITEMS gave it (dict subclasses).
    pub dict_items: Vec<(Id, Id)>,
}

/// A node of the value graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`: little-endian two's complement, minimal.
    BigInt(Box<[u8]>),
    Float(f64),
    Complex(f64, f64),
    Str(Str<'a>),
    Bytes(Cow<'a, [u8]>),
    ByteArray(Cow<'a, [u8]>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Set(Vec<Id>),
    FrozenSet(Vec<Id>),
    Dict(Box<Dict>),
    /// start, stop, step
    Slice([Id; 3]),
    /// start, stop, step: ints (`Int` or `BigInt`; range takes any int).
    Range([Id; 3]),
    Global(Box<Global>),
    TorchDtype(TorchDtype),
    TorchSize(Vec<i64>),
    /// `str(device)`: `cpu`, `cuda:0`.
    TorchDevice(Box<str>),
    /// A torch singleton such as `torch.strided`, by its name in `torch`.
    TorchEnum(&'static str),
    Storage(StorageView),
    Tensor(Box<Tensor>),
    Array(Box<NdArray<'a>>),
    NpDtype(Box<NpDtype>),
    NpScalar(Box<NpScalar<'a>>),
    Object(Box<Object>),
}

impl Value<'_> {
    /// A short description for messages ("a tuple", "a tensor").
    pub fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) | Value::BigInt(_) => "an int".into(),
            Value::Float(_) => "a float".into(),
            Value::Complex(..) => "a complex".into(),
            Value::Str(_) => "a str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::ByteArray(_) => "a bytearray".into(),
            Value::List(_) => "a list".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::Set(_) => "a set".into(),
            Value::FrozenSet(_) => "a frozenset".into(),
            Value::Dict(d) => match d.kind {
                DictKind::Dict => "a dict".into(),
                DictKind::OrderedDict => "an OrderedDict".into(),
                DictKind::Counter => "a Counter".into(),
            },
            Value::Slice(_) => "a slice".into(),
            Value::Range(_) => "a range".into(),
            Value::Global(g) => match &**g {
                Global::Known(k) => format!("the global {}", k.qualname()),
                Global::Foreign { module, name } => format!("the global {module}.{name}"),
            },
            Value::TorchDtype(_) => "a torch.dtype".into(),
            Value::TorchSize(_) => "a torch.Size".into(),
            Value::TorchDevice(_) => "a torch.device".into(),
            Value::TorchEnum(n) => format!("torch.{n}"),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
            Value::Array(_) => "a numpy array".into(),
            Value::NpDtype(_) => "a numpy dtype".into(),
            Value::NpScalar(_) => "a numpy scalar".into(),
            Value::Object(_) => "an opaque object".into(),
        }
    }

    /// The same node, owning all its data.
    pub fn into_owned(self) -> Value<'static> {
        fn own(c: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
            Cow::Owned(c.into_owned())
        }
        match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::BigInt(b) => Value::BigInt(b),
            Value::Float(f) => Value::Float(f),
            Value::Complex(a, b) => Value::Complex(a, b),
            Value::Str(s) => Value::Str(Str {
                bytes: own(s.bytes),
                utf8: s.utf8,
            }),
            Value::Bytes(b) => Value::Bytes(own(b)),
            Value::ByteArray(b) => Value::ByteArray(own(b)),
            Value::List(v) => Value::List(v),
            Value::Tuple(v) => Value::Tuple(v),
            Value::Set(v) => Value::Set(v),
            Value::FrozenSet(v) => Value::FrozenSet(v),
            Value::Dict(d) => Value::Dict(d),
            Value::Slice(s) => Value::Slice(s),
            Value::Range(r) => Value::Range(r),
            Value::Global(g) => Value::Global(g),
            Value::TorchDtype(d) => Value::TorchDtype(d),
            Value::TorchSize(s) => Value::TorchSize(s),
            Value::TorchDevice(d) => Value::TorchDevice(d),
            Value::TorchEnum(e) => Value::TorchEnum(e),
            Value::Storage(s) => Value::Storage(s),
            Value::Tensor(t) => Value::Tensor(t),
            Value::Array(a) => {
                let a = *a;
                Value::Array(Box::new(NdArray {
                    readonly: a.readonly,
                    dtype: a.dtype,
                    shape: a.shape,
                    fortran: a.fortran,
                    data: match a.data {
                        ArrayData::Pending => ArrayData::Pending,
                        ArrayData::Joblib(p) => ArrayData::Joblib(p),
                        ArrayData::Bytes(b) => ArrayData::Bytes(own(b)),
                        ArrayData::Objects(v) => ArrayData::Objects(v),
                    },
                }))
            }
            Value::NpDtype(d) => Value::NpDtype(d),
            Value::NpScalar(s) => {
                let s = *s;
                Value::NpScalar(Box::new(NpScalar {
                    dtype: s.dtype,
                    data: own(s.data),
                }))
            }
            Value::Object(o) => Value::Object(o),
        }
    }

    /// Rewrites every id the node holds.
    pub(crate) fn remap(&mut self, f: impl Fn(Id) -> Id) {
        let all = |v: &mut Vec<Id>| v.iter_mut().for_each(|x| *x = f(*x));
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => all(v),
            Value::Dict(d) => {
                d.items.iter_mut().for_each(|(k, v)| {
                    *k = f(*k);
                    *v = f(*v);
                });
                d.state = d.state.map(&f);
            }
            Value::Slice(s) | Value::Range(s) => s.iter_mut().for_each(|x| *x = f(*x)),
            Value::Tensor(t) => {
                t.metadata = t.metadata.map(&f);
                t.state = t.state.map(&f);
            }
            Value::Array(a) => {
                if let ArrayData::Objects(v) = &mut a.data {
                    all(v);
                }
            }
            Value::Object(o) => {
                o.class = f(o.class);
                o.args = o.args.map(&f);
                o.kwargs = o.kwargs.map(&f);
                o.base = o.base.map(&f);
                o.state = o.state.map(&f);
                all(&mut o.list_items);
                o.dict_items.iter_mut().for_each(|(k, v)| {
                    *k = f(*k);
                    *v = f(*v);
                });
            }
            _ => {}
        }
    }

    /// Bytes this node owns on the heap (for the memory budget).
    fn heap_bytes(&self) -> u64 {
        let ids = |n: usize| (n as u64) * 4;
        match self {
            Value::BigInt(b) => b.len() as u64,
            Value::Str(s) => owned(&s.bytes),
            Value::Bytes(b) | Value::ByteArray(b) => owned(b),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                ids(v.capacity())
            }
            Value::Dict(d) => 32 + ids(2 * d.items.capacity()),
            Value::Global(_) => 64,
            Value::TorchSize(v) => 8 * v.len() as u64,
            Value::TorchDevice(s) => s.len() as u64,
            Value::Tensor(t) => 96 + 16 * t.shape.len() as u64,
            Value::Array(a) => {
                64 + 8 * a.shape.len() as u64
                    + match &a.data {
                        ArrayData::Bytes(b) => owned(b),
                        ArrayData::Objects(v) => ids(v.len()),
                        ArrayData::Pending | ArrayData::Joblib(_) => 0,
                    }
            }
            Value::NpDtype(_) => 64,
            Value::NpScalar(s) => 64 + owned(&s.data),
            Value::Object(o) => 64 + ids(o.list_items.len()) + ids(2 * o.dict_items.len()),
            _ => 0,
        }
    }
}

/// Heap bytes a buffer owns (borrowed ones cost nothing).
#[allow(clippy::ptr_arg)]
fn owned(c: &Cow<'_, [u8]>) -> u64 {
    match c {
        Cow::Borrowed(_) => 0,
        Cow::Owned(v) => v.len() as u64,
    }
}

#[cfg(test)]
mod tests;
