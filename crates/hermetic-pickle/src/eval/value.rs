//! The evaluator's value graph: an arena of [`Value`]s addressed by [`Id`].
//!
//! Containers hold ids, never values, so a shared object (a memo entry that
//! is fetched twice, a tied weight) is one node referenced twice, cycles
//! are ordinary edges, and dropping the arena never recurses.

use super::error::Budget;
use std::borrow::Cow;

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

/// Byte order of a numpy dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    Little,
    Big,
    /// `|`: single bytes, strings, records.
    NotApplicable,
}

impl ByteOrder {
    pub fn char(self) -> char {
        match self {
            ByteOrder::Little => '<',
            ByteOrder::Big => '>',
            ByteOrder::NotApplicable => '|',
        }
    }
}

/// One field of a structured numpy dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct NpField {
    pub name: String,
    pub dtype: NpDtype,
    pub offset: u64,
    pub title: Option<String>,
}

/// A numpy dtype, as much of it as data needs.
#[derive(Clone, Debug, PartialEq)]
pub enum NpDtype {
    /// A scalar type: kind is numpy's `dtype.kind` (`b i u f c S U V O M m`),
    /// `itemsize` in bytes; `unit` is the datetime unit and multiplier.
    Scalar {
        kind: u8,
        itemsize: u64,
        order: ByteOrder,
        unit: Option<(String, i64)>,
    },
    Record {
        fields: Vec<NpField>,
        itemsize: u64,
        aligned: bool,
    },
    SubArray {
        base: Box<NpDtype>,
        shape: Vec<u64>,
    },
}

/// How deep structured and sub-array dtypes may nest.
pub const MAX_DTYPE_DEPTH: usize = 32;

impl NpDtype {
    pub fn itemsize(&self) -> u64 {
        match self {
            NpDtype::Scalar { itemsize, .. } | NpDtype::Record { itemsize, .. } => *itemsize,
            NpDtype::SubArray { base, shape } => shape
                .iter()
                .fold(base.itemsize(), |a, &d| a.saturating_mul(d)),
        }
    }

    /// Whether any part of it holds Python objects.
    pub fn has_object(&self) -> bool {
        match self {
            NpDtype::Scalar { kind, .. } => *kind == b'O',
            NpDtype::Record { fields, .. } => fields.iter().any(|f| f.dtype.has_object()),
            NpDtype::SubArray { base, .. } => base.has_object(),
        }
    }

    /// Whether every part is little-endian or has no byte order (what
    /// `joblib.load` leaves as it is on the machines hermetic runs on).
    pub fn native_order(&self) -> bool {
        match self {
            NpDtype::Scalar { order, .. } => *order != ByteOrder::Big,
            NpDtype::Record { fields, .. } => fields.iter().all(|f| f.dtype.native_order()),
            NpDtype::SubArray { base, .. } => base.native_order(),
        }
    }

    /// The object dtype.
    pub fn object() -> NpDtype {
        NpDtype::Scalar {
            kind: b'O',
            itemsize: 8,
            order: ByteOrder::NotApplicable,
            unit: None,
        }
    }

    /// numpy's `dtype.str` for scalar types (`<f8`, `|b1`, `<M8[ns]`), or
    /// `dtype.descr`-style text for others.
    pub fn descr(&self) -> String {
        match self {
            NpDtype::Scalar {
                kind,
                itemsize,
                order,
                unit,
            } => {
                let size = if *kind == b'U' {
                    *itemsize / 4
                } else {
                    *itemsize
                };
                let mut s = format!("{}{}{}", order.char(), *kind as char, size);
                if let Some((u, n)) = unit {
                    if *n == 1 {
                        s.push_str(&format!("[{u}]"));
                    } else {
                        s.push_str(&format!("[{n}{u}]"));
                    }
                }
                s
            }
            NpDtype::Record { fields, .. } => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|f| format!("({:?}, {})", f.name, f.dtype.descr()))
                    .collect();
                format!("[{}]", parts.join(", "))
            }
            NpDtype::SubArray { base, shape } => format!("({}, {:?})", base.descr(), shape),
        }
    }

    /// The nesting depth.
    pub fn depth(&self) -> usize {
        match self {
            NpDtype::Scalar { .. } => 1,
            NpDtype::Record { fields, .. } => {
                1 + fields.iter().map(|f| f.dtype.depth()).max().unwrap_or(0)
            }
            NpDtype::SubArray { base, .. } => 1 + base.depth(),
        }
    }

    /// The element size a byte swap works on: the itemsize for integers and
    /// floats, half of it for complex numbers, none for everything else.
    pub fn swap_unit(&self) -> Option<u64> {
        match self {
            NpDtype::Scalar { kind, itemsize, .. } => match kind {
                b'i' | b'u' | b'f' | b'M' | b'm' if *itemsize > 1 => Some(*itemsize),
                b'c' => Some(*itemsize / 2),
                b'U' => Some(4),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The data of a numpy array.
#[derive(Clone, Debug, PartialEq)]
pub enum ArrayData<'a> {
    /// Made by `_reconstruct`, waiting for `__setstate__`.
    Pending,
    /// A joblib `NumpyArrayWrapper`: `None` until its BUILD, then whether a
    /// padding byte (joblib >= 1.2's alignment) precedes the inline bytes.
    Joblib(Option<bool>),
    /// Raw bytes in C order (or Fortran order when `fortran`).
    Bytes(Cow<'a, [u8]>),
    /// The items of an object array, in C order.
    Objects(Vec<Id>),
}

/// A numpy `ndarray`.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray<'a> {
    /// numpy's WRITEABLE flag cleared: `_frombuffer` of bytes (not a
    /// bytearray) gives a read-only array.
    pub readonly: bool,
    pub dtype: NpDtype,
    pub shape: Vec<u64>,
    pub fortran: bool,
    pub data: ArrayData<'a>,
}

impl NdArray<'_> {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A numpy scalar (`np.float64(2.5)`): its dtype and raw bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NpScalar<'a> {
    pub dtype: NpDtype,
    pub data: Cow<'a, [u8]>,
}

/// How an opaque object came to be.
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

/// The value graph.
#[derive(Debug)]
pub struct Arena<'a> {
    values: Vec<Value<'a>>,
}

impl<'a> Arena<'a> {
    pub(crate) fn new() -> Self {
        Arena {
            values: vec![Value::None, Value::Bool(true), Value::Bool(false)],
        }
    }

    /// Adds a node, charging it to `budget`.
    pub(crate) fn push(&mut self, v: Value<'a>, budget: &mut Budget) -> Result<Id, String> {
        match v {
            Value::None => return Ok(NONE),
            Value::Bool(true) => return Ok(TRUE),
            Value::Bool(false) => return Ok(FALSE),
            _ => {}
        }
        budget.charge(std::mem::size_of::<Value<'_>>() as u64 + v.heap_bytes())?;
        let id =
            Id::try_from(self.values.len()).map_err(|_| "more than 2^32 values".to_string())?;
        self.values.push(v);
        Ok(id)
    }

    pub fn get(&self, id: Id) -> &Value<'a> {
        &self.values[id as usize]
    }

    pub(crate) fn get_mut(&mut self, id: Id) -> &mut Value<'a> {
        &mut self.values[id as usize]
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Moves every node of `other` (which may borrow from a shorter-lived
    /// buffer) into this arena as owned data; returns the id mapping.
    pub(crate) fn absorb(&mut self, other: Arena<'_>) -> impl Fn(Id) -> Id {
        let base = self.values.len() as u64;
        let map = move |id: Id| -> Id {
            if id < 3 {
                id
            } else {
                (base + u64::from(id) - 3) as Id
            }
        };
        for v in other.values.into_iter().skip(3) {
            let mut v = v.into_owned();
            v.remap(map);
            self.values.push(v);
        }
        map
    }

    /// The ids a node refers to, in document order (keys before values).
    pub fn children(&self, id: Id) -> Vec<Id> {
        let mut out = Vec::new();
        self.for_each_child(id, |c| out.push(c));
        out
    }

    /// Calls `f` on every id the node refers to, in document order.
    pub fn for_each_child(&self, id: Id, mut f: impl FnMut(Id)) {
        match self.get(id) {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                v.iter().for_each(|&c| f(c))
            }
            Value::Dict(d) => {
                for &(k, v) in &d.items {
                    f(k);
                    f(v);
                }
                if let Some(s) = d.state {
                    f(s);
                }
            }
            Value::Slice(s) | Value::Range(s) => s.iter().for_each(|&c| f(c)),
            Value::Tensor(t) => {
                if let Some(m) = t.metadata {
                    f(m);
                }
                if let Some(s) = t.state {
                    f(s);
                }
            }
            Value::Array(a) => {
                if let ArrayData::Objects(v) = &a.data {
                    v.iter().for_each(|&c| f(c));
                }
            }
            Value::Object(o) => {
                f(o.class);
                for c in [o.args, o.kwargs, o.base, o.state].into_iter().flatten() {
                    f(c);
                }
                o.list_items.iter().for_each(|&c| f(c));
                for &(k, v) in &o.dict_items {
                    f(k);
                    f(v);
                }
            }
            _ => {}
        }
    }

    /// For each node, whether it is a dict or set keyed by an opaque
    /// object (or a tuple or frozenset holding one). A caller rebuilding
    /// objects fills those after the objects' BUILD states are set, as the
    /// unpickler inserts them after BUILD: a class may hash its fields.
    /// `order` is [`Arena::reachable`]'s: increasing ids, creation order.
    pub fn keyed_by_objects(&self, order: &[Id]) -> Vec<bool> {
        // Tuples come after their items; a dict before its keys (EMPTY_DICT
        // first): two passes.
        let mut holds_object = vec![false; self.values.len()];
        for &id in order {
            holds_object[id as usize] = match self.get(id) {
                Value::Object(_) => true,
                Value::Tuple(items) | Value::FrozenSet(items) => {
                    items.iter().any(|&c| holds_object[c as usize])
                }
                _ => false,
            };
        }
        let mut keyed = vec![false; self.values.len()];
        for &id in order {
            keyed[id as usize] = match self.get(id) {
                Value::Dict(d) => d.items.iter().any(|&(k, _)| holds_object[k as usize]),
                Value::Set(items) => items.iter().any(|&c| holds_object[c as usize]),
                _ => false,
            };
        }
        keyed
    }

    /// The ids reachable from `root`, in increasing order.
    pub fn reachable(&self, root: Id) -> Vec<Id> {
        self.reachable_from(&[root])
    }

    /// The nodes reachable from any of `roots`, in id order.
    pub fn reachable_from(&self, roots: &[Id]) -> Vec<Id> {
        let mut seen = vec![false; self.values.len()];
        let mut stack = roots.to_vec();
        let mut out = Vec::new();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id as usize], true) {
                continue;
            }
            out.push(id);
            self.for_each_child(id, |c| {
                if !seen[c as usize] {
                    stack.push(c)
                }
            });
        }
        out.sort_unstable();
        out
    }

    /// The text of a str node.
    pub fn str_of(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => s.as_str(),
            _ => None,
        }
    }

    /// An int node that fits an `i64` (bools count, as in Python).
    pub fn int_of(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The items of a tuple or list node.
    pub fn seq_of(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// Dict items with Python's rule for repeated keys applied to keys whose
    /// equality is plain (None, bools, ints, floats, str, bytes): the last
    /// value wins, at the first key's position. Other keys compare by identity.
    pub fn dict_items(&self, items: &[(Id, Id)]) -> Vec<(Id, Id)> {
        let mut out: Vec<(Id, Id)> = Vec::with_capacity(items.len());
        let mut index: std::collections::HashMap<KeyRepr<'_>, usize> =
            std::collections::HashMap::new();
        for &(k, v) in items {
            match index.entry(self.key_repr(k)) {
                std::collections::hash_map::Entry::Occupied(e) => out[*e.get()].1 = v,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push((k, v));
                }
            }
        }
        out
    }

    /// Set items with repeated plain items removed (the first kept).
    pub fn set_items(&self, items: &[Id]) -> Vec<Id> {
        let mut seen = std::collections::HashSet::new();
        items
            .iter()
            .copied()
            .filter(|&i| seen.insert(self.key_repr(i)))
            .collect()
    }

    fn key_repr(&self, id: Id) -> KeyRepr<'_> {
        let mut budget = MAX_KEY_PARTS;
        self.exact_key(id, &mut budget).unwrap_or(KeyRepr::Id(id))
    }

    /// The key `id` is to a dict or set, equal exactly where Python's `==`
    /// (with its identity shortcut) and `hash` make two keys one: ints,
    /// bools, integral floats and complex numbers with no imaginary part
    /// compare as numbers, tuples item by item, torch singletons and known
    /// globals by what they name, tensors and storages by identity. `None`
    /// where Rust cannot tell (instances, foreign globals, ranges, numpy
    /// values, frozensets, or a tuple past `budget` parts).
    fn exact_key(&self, id: Id, budget: &mut usize) -> Option<KeyRepr<'_>> {
        *budget = budget.checked_sub(1)?;
        Some(match self.get(id) {
            Value::None => KeyRepr::None,
            Value::Bool(b) => KeyRepr::Int(*b as i128),
            Value::Int(i) => KeyRepr::Int(*i as i128),
            Value::Float(f) | Value::Complex(f, 0.0) if f.fract() == 0.0 && f.abs() < 1e18 => {
                KeyRepr::Int(*f as i128)
            }
            Value::Float(f) | Value::Complex(f, 0.0) if !f.is_nan() => KeyRepr::Float(f.to_bits()),
            Value::Complex(re, im) if !re.is_nan() && !im.is_nan() => {
                KeyRepr::Complex((*re + 0.0).to_bits(), im.to_bits())
            }
            Value::Str(s) => KeyRepr::Str(&s.bytes),
            Value::Bytes(b) => KeyRepr::Bytes(b),
            Value::BigInt(b) => KeyRepr::Big(b),
            Value::Tuple(items) => KeyRepr::Tuple(
                items
                    .iter()
                    .map(|&i| self.exact_key(i, budget))
                    .collect::<Option<Vec<_>>>()?,
            ),
            Value::TorchSize(dims) => {
                *budget = budget.checked_sub(dims.len())?;
                KeyRepr::Tuple(dims.iter().map(|&d| KeyRepr::Int(d as i128)).collect())
            }
            Value::Global(g) => match &**g {
                Global::Known(k) => KeyRepr::Known(*k),
                Global::Foreign { .. } => return None,
            },
            Value::TorchDtype(d) => KeyRepr::TorchDtype(*d),
            Value::TorchEnum(n) => KeyRepr::Name(n),
            Value::TorchDevice(d) => KeyRepr::Device(d),
            // NaN floats (equal only to themselves), tensors and storages:
            // identity.
            Value::Float(_) | Value::Complex(..) | Value::Tensor(_) | Value::Storage(_) => {
                KeyRepr::Id(id)
            }
            _ => return None,
        })
    }

    /// The keys of a dict (or the items of a set) as Python iterates them,
    /// repeated keys merged, when Rust can compare every key exactly; else
    /// the first key it cannot compare.
    pub fn exact_keys(&self, keys: impl Iterator<Item = Id>) -> Result<Vec<Id>, Id> {
        let mut budget = MAX_KEY_PARTS;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for k in keys {
            if seen.insert(self.exact_key(k, &mut budget).ok_or(k)?) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Why `hash()` of `id` raises `TypeError`, if it certainly does: the
    /// type CPython names (`unhashable type: 'list'`), or `Err` with the
    /// type for a slice, which is hashable from Python 3.12 only. Tuples are
    /// looked through (each once, so shared ones cost nothing more).
    pub fn unhashable(&self, id: Id) -> Result<Option<&'static str>, &'static str> {
        // The keys state dicts are made of, without an allocation.
        if matches!(
            self.get(id),
            Value::Str(_) | Value::Int(_) | Value::Bytes(_) | Value::None | Value::Bool(_)
        ) {
            return Ok(None);
        }
        let mut todo = vec![id];
        let mut seen = std::collections::HashSet::new();
        while let Some(i) = todo.pop() {
            let name = match self.get(i) {
                Value::List(_) => "list",
                Value::Set(_) => "set",
                Value::ByteArray(_) => "bytearray",
                Value::Array(_) => "numpy.ndarray",
                Value::Dict(d) => match d.kind {
                    DictKind::Dict => "dict",
                    DictKind::OrderedDict => "collections.OrderedDict",
                    DictKind::Counter => "Counter",
                },
                Value::Slice(_) => return Err("slice"),
                Value::Tuple(items) => {
                    if seen.insert(i) {
                        todo.extend(items.iter().copied());
                    }
                    continue;
                }
                Value::Object(o) => match self.get(o.class) {
                    Value::Global(g) => match &**g {
                        Global::Foreign { module, name } => {
                            match (module.as_str(), name.as_str()) {
                                ("argparse", "Namespace") => "argparse.Namespace",
                                ("collections", "deque") => "collections.deque",
                                ("collections", "defaultdict") => "collections.defaultdict",
                                _ => continue,
                            }
                        }
                        Global::Known(_) => continue,
                    },
                    _ => continue,
                },
                _ => continue,
            };
            return Ok(Some(name));
        }
        Ok(None)
    }
}

/// How many parts (keys, tuple items) one dict's exact keys may take apart.
const MAX_KEY_PARTS: usize = 1 << 22;

#[derive(Hash, PartialEq, Eq)]
enum KeyRepr<'b> {
    None,
    Int(i128),
    Float(u64),
    Complex(u64, u64),
    Str(&'b [u8]),
    Bytes(&'b [u8]),
    Big(&'b [u8]),
    Tuple(Vec<KeyRepr<'b>>),
    Known(Known),
    TorchDtype(TorchDtype),
    Name(&'static str),
    Device(&'b str),
    Id(Id),
}

macro_rules! torch_dtypes {
    ($( $variant:ident = $name:literal, $size:literal, $code:literal, $swap:literal; )*) => {
        /// A torch element type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum TorchDtype { $($variant,)* }

        impl TorchDtype {
            /// Every dtype.
            pub const ALL: &'static [TorchDtype] = &[$(TorchDtype::$variant,)*];

            /// The canonical name in `torch` (`str(dtype)` without `torch.`).
            pub const fn name(self) -> &'static str {
                match self { $(TorchDtype::$variant => $name,)* }
            }

            /// Bytes per element.
            pub const fn itemsize(self) -> u64 {
                match self { $(TorchDtype::$variant => $size,)* }
            }

            /// The hermetic/safetensors dtype code (docs/SPEC.md); empty when
            /// the format has none.
            pub const fn format_code(self) -> &'static str {
                match self { $(TorchDtype::$variant => $code,)* }
            }

            /// Bytes a byte swap reverses at a time (complex numbers swap
            /// each half; single bytes never swap).
            pub const fn swap_unit(self) -> u64 {
                match self { $(TorchDtype::$variant => $swap,)* }
            }
        }
    };
}

torch_dtypes! {
    Float32 = "float32", 4, "F32", 4;
    Float64 = "float64", 8, "F64", 8;
    Float16 = "float16", 2, "F16", 2;
    BFloat16 = "bfloat16", 2, "BF16", 2;
    Complex32 = "complex32", 4, "C32", 2;
    Complex64 = "complex64", 8, "C64", 4;
    Complex128 = "complex128", 16, "C128", 8;
    BComplex32 = "bcomplex32", 4, "", 2;
    Bool = "bool", 1, "BOOL", 1;
    UInt8 = "uint8", 1, "U8", 1;
    Int8 = "int8", 1, "I8", 1;
    Int16 = "int16", 2, "I16", 2;
    Int32 = "int32", 4, "I32", 4;
    Int64 = "int64", 8, "I64", 8;
    UInt16 = "uint16", 2, "U16", 2;
    UInt32 = "uint32", 4, "U32", 4;
    UInt64 = "uint64", 8, "U64", 8;
    Float8E4M3Fn = "float8_e4m3fn", 1, "F8_E4M3", 1;
    Float8E5M2 = "float8_e5m2", 1, "F8_E5M2", 1;
    Float8E4M3Fnuz = "float8_e4m3fnuz", 1, "F8_E4M3FNUZ", 1;
    Float8E5M2Fnuz = "float8_e5m2fnuz", 1, "F8_E5M2FNUZ", 1;
    Float8E8M0Fnu = "float8_e8m0fnu", 1, "F8_E8M0", 1;
    Float4E2M1FnX2 = "float4_e2m1fn_x2", 1, "F4_E2M1_X2", 1;
    QInt8 = "qint8", 1, "", 1;
    QUInt8 = "quint8", 1, "", 1;
    QInt32 = "qint32", 4, "", 4;
    QUInt4x2 = "quint4x2", 1, "", 1;
    QUInt2x4 = "quint2x4", 1, "", 1;
    Bits1x8 = "bits1x8", 1, "BITS1X8", 1;
    Bits2x4 = "bits2x4", 1, "BITS2X4", 1;
    Bits4x2 = "bits4x2", 1, "BITS4X2", 1;
    Bits8 = "bits8", 1, "BITS8", 1;
    Bits16 = "bits16", 2, "BITS16", 2;
    Int1 = "int1", 1, "", 1;
    Int2 = "int2", 1, "", 1;
    Int3 = "int3", 1, "", 1;
    Int4 = "int4", 1, "", 1;
    Int5 = "int5", 1, "", 1;
    Int6 = "int6", 1, "", 1;
    Int7 = "int7", 1, "", 1;
    UInt1 = "uint1", 1, "", 1;
    UInt2 = "uint2", 1, "", 1;
    UInt3 = "uint3", 1, "", 1;
    UInt4 = "uint4", 1, "", 1;
    UInt5 = "uint5", 1, "", 1;
    UInt6 = "uint6", 1, "", 1;
    UInt7 = "uint7", 1, "", 1;
}

impl TorchDtype {
    /// The dtype an attribute of `torch` names, aliases included
    /// (`torch.float` is `float32`).
    pub fn from_attr(name: &str) -> Option<TorchDtype> {
        let canonical = match name {
            "float" => "float32",
            "double" => "float64",
            "half" => "float16",
            "cfloat" => "complex64",
            "cdouble" => "complex128",
            "chalf" => "complex32",
            "long" => "int64",
            "int" => "int32",
            "short" => "int16",
            other => other,
        };
        TorchDtype::ALL
            .iter()
            .copied()
            .find(|d| d.name() == canonical)
    }

    /// The dtype of a legacy storage class name (`FloatStorage`), as
    /// `torch.storage._get_dtype_from_pickle_storage_type` maps them.
    pub fn from_storage_class(name: &str) -> Option<TorchDtype> {
        Some(match name {
            "DoubleStorage" => TorchDtype::Float64,
            "FloatStorage" => TorchDtype::Float32,
            "HalfStorage" => TorchDtype::Float16,
            "LongStorage" => TorchDtype::Int64,
            "IntStorage" => TorchDtype::Int32,
            "ShortStorage" => TorchDtype::Int16,
            "CharStorage" => TorchDtype::Int8,
            "ByteStorage" => TorchDtype::UInt8,
            "BoolStorage" => TorchDtype::Bool,
            "BFloat16Storage" => TorchDtype::BFloat16,
            "ComplexDoubleStorage" => TorchDtype::Complex128,
            "ComplexFloatStorage" => TorchDtype::Complex64,
            "QInt8Storage" => TorchDtype::QInt8,
            "QInt32Storage" => TorchDtype::QInt32,
            "QUInt8Storage" => TorchDtype::QUInt8,
            "QUInt4x2Storage" => TorchDtype::QUInt4x2,
            "QUInt2x4Storage" => TorchDtype::QUInt2x4,
            _ => return None,
        })
    }

    /// The legacy storage class of this dtype, or `UntypedStorage`.
    pub fn storage_class(self) -> &'static str {
        match self {
            TorchDtype::Float64 => "DoubleStorage",
            TorchDtype::Float32 => "FloatStorage",
            TorchDtype::Float16 => "HalfStorage",
            TorchDtype::Int64 => "LongStorage",
            TorchDtype::Int32 => "IntStorage",
            TorchDtype::Int16 => "ShortStorage",
            TorchDtype::Int8 => "CharStorage",
            TorchDtype::UInt8 => "ByteStorage",
            TorchDtype::Bool => "BoolStorage",
            TorchDtype::BFloat16 => "BFloat16Storage",
            TorchDtype::Complex128 => "ComplexDoubleStorage",
            TorchDtype::Complex64 => "ComplexFloatStorage",
            TorchDtype::QInt8 => "QInt8Storage",
            TorchDtype::QInt32 => "QInt32Storage",
            TorchDtype::QUInt8 => "QUInt8Storage",
            TorchDtype::QUInt4x2 => "QUInt4x2Storage",
            TorchDtype::QUInt2x4 => "QUInt2x4Storage",
            _ => "UntypedStorage",
        }
    }
}

#[cfg(test)]
mod tests;
