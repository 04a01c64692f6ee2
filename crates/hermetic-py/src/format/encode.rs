//! Python objects -> a hermetic plan. The walk reads dicts, lists, tuples
//! and sets through the C API, in document order, and hands every tensor
//! view to the planner; only per-tensor facts (dtype, strides, storage) come
//! from the helpers module.

use crate::errors::{format_error, FormatError};
use hermetic_format::{
    gather, is_class_name, is_date, is_datetime, is_decimal, is_identifier, is_import_name,
    is_uuid, path_name, Dtype, EntryOrigin, EntrySource, Node, NodeId, PathPart, Plan, Planner,
    Shape, TensorKind, ViewSpec, DEFAULT_FACTORIES, INLINE_BYTES_MAX, MAX_DEPTH,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple, PyType,
};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

mod tensors;
mod typed;

pub(crate) use tensors::PySource;

struct Types<'py> {
    tensor: Option<Bound<'py, PyType>>,
    parameter: Option<Bound<'py, PyType>>,
    torch_base: Option<Bound<'py, PyType>>,
    dtype: Option<Bound<'py, PyType>>,
    device: Option<Bound<'py, PyType>>,
    size: Option<Bound<'py, PyType>>,
    ndarray: Option<Bound<'py, PyType>>,
    np_generic: Option<Bound<'py, PyType>>,
    odict: Bound<'py, PyType>,
    /// The standard-library containers of SPEC 10.6, by exact type.
    namespace: Bound<'py, PyType>,
    defaultdict: Bound<'py, PyType>,
    counter: Bound<'py, PyType>,
    deque: Bound<'py, PyType>,
    slice: Bound<'py, PyType>,
    range: Bound<'py, PyType>,
}

fn class<'py>(module: &Option<Bound<'py, PyAny>>, path: &[&str]) -> Option<Bound<'py, PyType>> {
    let mut obj = module.clone()?;
    for p in path {
        obj = obj.getattr(*p).ok()?;
    }
    obj.downcast_into::<PyType>().ok()
}

impl<'py> Types<'py> {
    fn new(py: Python<'py>) -> PyResult<Self> {
        // Only frameworks already imported can have made the objects we see.
        let modules = py.import("sys")?.getattr("modules")?;
        let get = |name: &str| modules.get_item(name).ok();
        let torch = get("torch");
        let np = get("numpy");
        Ok(Types {
            tensor: class(&torch, &["Tensor"]),
            parameter: class(&torch, &["nn", "Parameter"]),
            torch_base: class(&torch, &["Tensor"]),
            dtype: class(&torch, &["dtype"]),
            device: class(&torch, &["device"]),
            size: class(&torch, &["Size"]),
            ndarray: class(&np, &["ndarray"]),
            np_generic: class(&np, &["generic"]),
            odict: py
                .import("collections")?
                .getattr("OrderedDict")?
                .downcast_into::<PyType>()?,
            namespace: py
                .import("argparse")?
                .getattr("Namespace")?
                .downcast_into::<PyType>()?,
            defaultdict: py
                .import("collections")?
                .getattr("defaultdict")?
                .downcast_into::<PyType>()?,
            counter: py
                .import("collections")?
                .getattr("Counter")?
                .downcast_into::<PyType>()?,
            deque: py
                .import("collections")?
                .getattr("deque")?
                .downcast_into::<PyType>()?,
            slice: py.get_type::<pyo3::types::PySlice>(),
            range: py
                .import("builtins")?
                .getattr("range")?
                .downcast_into::<PyType>()?,
        })
    }
}

fn is(t: &Bound<'_, PyType>, c: &Option<Bound<'_, PyType>>) -> bool {
    c.as_ref().is_some_and(|c| t.is(c))
}

/// Where a storage's bytes come from.
pub(crate) enum Storage<'py> {
    /// A CPU torch storage: a tensor that keeps it alive, its address and size.
    Cpu(Bound<'py, PyAny>, usize, usize),
    /// Sliced by a helper (`_np_span` when the flag is set, else `_torch_span`).
    Helper(bool, Bound<'py, PyAny>),
}

/// How instances of one Python class are stored (asked of the helpers once
/// per class, then cached for the walk).
enum ClassInfo<'py> {
    /// A dataclass, attrs class or NamedTuple: a class record of these
    /// fields (name, and the interned attribute name to read).
    Object {
        shape: Arc<Shape>,
        attrs: Vec<Bound<'py, PyString>>,
    },
    /// An enum member, by its value.
    Enum {
        name: Arc<str>,
    },
    /// The instances are functions or classes, stored by reference.
    ByRef,
    /// `functools.partial`.
    Partial,
    Datetime,
    Date,
    Timedelta,
    Path,
    Uuid,
    Decimal,
    Time,
    Timezone,
    PurePath(bool),
    /// Not storable (the generic error explains).
    Unsupported,
}

/// Walks one Python tree.
pub(crate) struct Encoder<'py> {
    py: Python<'py>,
    helpers: Bound<'py, PyAny>,
    types: Types<'py>,
    planner: Planner,
    /// id(obj) -> (memo number, immutable container still being walked).
    memo: HashMap<usize, (usize, bool)>,
    memo_count: usize,
    /// id(tensor or array) -> its node, for the alias of one reached again.
    tensor_nodes: HashMap<usize, NodeId>,
    path: Vec<PathPart>,
    storage_keys: HashMap<(String, u64), u64>,
    /// Per storage key: where its bytes come from.
    storages: Vec<Storage<'py>>,
    bytes: Vec<Bound<'py, PyBytes>>,
    /// type pointer -> (the type, kept alive; index into `class_infos`).
    classes: HashMap<usize, (Bound<'py, PyType>, usize)>,
    class_infos: Vec<Rc<ClassInfo<'py>>>,
    /// object pointer -> (the object, kept alive; its `module:qualname`).
    callables: HashMap<usize, (Bound<'py, PyAny>, String)>,
}

impl<'py> Encoder<'py> {
    pub(crate) fn new(py: Python<'py>) -> PyResult<Self> {
        Ok(Encoder {
            py,
            helpers: crate::bridge::module(py)?.into_any(),
            types: Types::new(py)?,
            planner: Planner::new(),
            memo: HashMap::new(),
            memo_count: 0,
            tensor_nodes: HashMap::new(),
            path: Vec::new(),
            storage_keys: HashMap::new(),
            storages: Vec::new(),
            bytes: Vec::new(),
            classes: HashMap::new(),
            class_infos: Vec::new(),
            callables: HashMap::new(),
        })
    }

    fn place(&self) -> String {
        hermetic_format::path_place(&self.path)
    }

    fn fail(&self, detail: impl std::fmt::Display) -> PyErr {
        FormatError::new_err(format!("cannot save {}: {detail}", self.place()))
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.planner.tree.push(node)
    }

    pub(crate) fn walk_root(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<NodeId> {
        self.walk(obj, 0)
    }

    /// Registers a memoizable object; `Err(node)` if it was seen before.
    fn memoize(
        &mut self,
        obj: &Bound<'py, PyAny>,
        immutable: bool,
    ) -> PyResult<Result<usize, NodeId>> {
        let id = obj.as_ptr() as usize;
        if let Some(&(n, open)) = self.memo.get(&id) {
            if open {
                return Err(self.fail(
                    "it contains itself through a tuple or frozenset, which cannot be rebuilt",
                ));
            }
            return Ok(Err(self.push(Node::Ref(n))));
        }
        let n = self.memo_count;
        self.memo_count += 1;
        self.memo.insert(id, (n, immutable));
        Ok(Ok(n))
    }

    fn close(&mut self, obj: &Bound<'py, PyAny>) {
        if let Some(e) = self.memo.get_mut(&(obj.as_ptr() as usize)) {
            e.1 = false;
        }
    }

    fn key_part(&self, key: &Bound<'py, PyAny>) -> PyResult<PathPart> {
        if key.is_exact_instance_of::<PyString>() {
            return Ok(PathPart::Key(
                key.downcast::<PyString>()?.to_cow()?.into_owned(),
            ));
        }
        if key.is_exact_instance_of::<PyInt>() {
            if let Ok(i) = key.extract::<i64>() {
                return Ok(PathPart::Index(i));
            }
        }
        Ok(PathPart::Other(key.repr()?.to_cow()?.into_owned()))
    }

    fn walk(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<NodeId> {
        let t = obj.get_type();
        if obj.is_none() {
            return Ok(self.push(Node::None));
        }
        if obj.is_exact_instance_of::<PyBool>() {
            return Ok(self.push(Node::Bool(obj.extract()?)));
        }
        if obj.is_exact_instance_of::<PyInt>() {
            let node = match obj.extract::<i64>() {
                Ok(i) => Node::Int(i),
                Err(_) => Node::BigInt(obj.call_method1("__format__", ("x",))?.extract()?),
            };
            return Ok(self.push(node));
        }
        if obj.is_exact_instance_of::<PyFloat>() {
            return Ok(self.push(Node::Float(obj.downcast::<PyFloat>()?.value())));
        }
        if obj.is_exact_instance_of::<PyString>() {
            let s = match obj.downcast::<PyString>()?.to_str() {
                Ok(s) => s.to_string(),
                Err(_) => return Err(self.fail("the string is not valid Unicode (lone surrogate)")),
            };
            return Ok(self.push(Node::Str(s)));
        }
        if obj.is_exact_instance_of::<PyComplex>() {
            let c = obj.downcast::<PyComplex>()?;
            return Ok(self.push(Node::Complex(c.real(), c.imag())));
        }
        if obj.is_exact_instance_of::<PyBytes>() {
            if let Err(r) = self.memoize(obj, false)? {
                return Ok(r);
            }
            let b = obj.downcast::<PyBytes>()?;
            let data = b.as_bytes();
            if data.len() <= INLINE_BYTES_MAX {
                return Ok(self.push(Node::Bytes(data.to_vec())));
            }
            let (id, slot) = self
                .planner
                .add_bytes(path_name(&self.path), data.len() as u64);
            debug_assert_eq!(slot, self.bytes.len());
            self.bytes.push(b.clone());
            return Ok(id);
        }
        let container = obj.is_exact_instance_of::<PyList>()
            || obj.is_exact_instance_of::<PyTuple>()
            || obj.is_exact_instance_of::<PyDict>()
            || obj.is_exact_instance_of::<PySet>()
            || obj.is_exact_instance_of::<PyFrozenSet>()
            || t.is(&self.types.odict);
        if container {
            if depth >= MAX_DEPTH {
                return Err(self.fail(format!("containers nest deeper than {MAX_DEPTH} levels")));
            }
            let immutable = obj.is_exact_instance_of::<PyTuple>()
                || obj.is_exact_instance_of::<PyFrozenSet>()
                || obj.is_exact_instance_of::<PySet>();
            if let Err(r) = self.memoize(obj, immutable)? {
                return Ok(r);
            }
            let node = self.walk_container(obj, depth + 1)?;
            self.close(obj);
            let id = self.push(node);
            if t.is(&self.types.odict) {
                return self.odict_attrs(obj, id, depth);
            }
            return Ok(id);
        }
        if let Some(id) = self.stdlib(obj, &t, depth)? {
            return Ok(id);
        }
        if is(&t, &self.types.tensor) || is(&t, &self.types.parameter) {
            if let Err(r) = self.memoize(obj, false)? {
                // The same tensor under another name (a tied weight): a
                // plain reader finds it through `__metadata__`.
                if let Some(&of) = self.tensor_nodes.get(&(obj.as_ptr() as usize)) {
                    self.planner.add_alias(path_name(&self.path), of);
                }
                return Ok(r);
            }
            let kind = if is(&t, &self.types.parameter) {
                TensorKind::Parameter
            } else {
                TensorKind::Torch
            };
            let id = self.torch_tensor(obj, kind)?;
            self.tensor_nodes.insert(obj.as_ptr() as usize, id);
            return Ok(id);
        }
        if is(&t, &self.types.ndarray) {
            if let Err(r) = self.memoize(obj, false)? {
                if let Some(&of) = self.tensor_nodes.get(&(obj.as_ptr() as usize)) {
                    self.planner.add_alias(path_name(&self.path), of);
                }
                return Ok(r);
            }
            let id = self.ndarray(obj)?;
            self.tensor_nodes.insert(obj.as_ptr() as usize, id);
            return Ok(id);
        }
        if let Some(g) = &self.types.np_generic {
            if obj.is_instance(g)? {
                let (dtype, data): (String, Vec<u8>) = self
                    .helpers
                    .call_method1("_np_scalar_info", (obj,))
                    .and_then(|r| r.extract())
                    .map_err(|e| self.fail(e.value(self.py).to_string()))?;
                let dtype = serde_json::from_str(&dtype).map_err(|e| self.fail(e))?;
                return Ok(self.push(Node::NpScalar { dtype, data }));
            }
        }
        if is(&t, &self.types.dtype) {
            let s: String = obj.str()?.extract()?;
            let name = s.strip_prefix("torch.").unwrap_or(&s);
            if !hermetic_format::is_torch_dtype_name(name) {
                return Err(self.fail(format!(
                    "{s} is not a torch dtype the format knows (docs/SPEC.md, 6.2)"
                )));
            }
            return Ok(self.push(Node::TorchDtype(name.to_string())));
        }
        if is(&t, &self.types.device) {
            let s: String = obj.str()?.extract()?;
            if !hermetic_format::is_torch_device(&s) {
                return Err(self.fail(format!(
                    "torch.device({s:?}) has a device type the format does not know \
                     (docs/SPEC.md, 6.2)"
                )));
            }
            return Ok(self.push(Node::TorchDevice(s)));
        }
        if is(&t, &self.types.size) {
            return Ok(self.push(Node::TorchSize(obj.extract()?)));
        }
        if let Some(node) = self.typed(obj, &t, depth)? {
            return Ok(node);
        }
        let what = if self
            .types
            .torch_base
            .as_ref()
            .is_some_and(|b| obj.is_instance(b).unwrap_or(false))
        {
            "a tensor subclass"
        } else {
            "an object"
        };
        let module = t.module()?.to_cow()?.into_owned();
        let qualname = t.qualname()?.to_cow()?.into_owned();
        let hint = match (module.as_str(), qualname.as_str()) {
            _ if obj.is_instance(&self.types.namespace).unwrap_or(false) => {
                "; a subclass of argparse.Namespace: store argparse.Namespace(**vars(args))"
            }
            _ if obj.is_instance(&self.types.deque).unwrap_or(false) => {
                "; a subclass of collections.deque: store collections.deque(d, d.maxlen)"
            }
            _ if obj.is_instance_of::<PyDict>() => "; a dict subclass: store dict(d)",
            _ => "",
        };
        Err(self.fail(format!(
            "{what} of type {module}.{qualname} cannot be stored (hermetic stores containers, \
             scalars, tensors, arrays, dataclass, attrs and NamedTuple instances, enums, \
             datetime values, pathlib paths, uuid and decimal values, argparse.Namespace, \
             defaultdict, Counter, deque, slice and range, and functions and classes by \
             reference; it never pickles){hint}"
        )))
    }

    fn walk_items(&mut self, items: &Bound<'py, PyAny>, depth: usize) -> PyResult<Vec<NodeId>> {
        let mut out = Vec::new();
        for (i, item) in items.try_iter()?.enumerate() {
            self.path.push(PathPart::Index(i as i64));
            let r = self.walk(&item?, depth);
            self.path.pop();
            out.push(r?);
        }
        Ok(out)
    }

    fn walk_container(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<Node> {
        if let Ok(l) = obj.downcast_exact::<PyList>() {
            return Ok(Node::List(self.walk_items(l.as_any(), depth)?));
        }
        if let Ok(tup) = obj.downcast_exact::<PyTuple>() {
            return Ok(Node::Tuple(self.walk_items(tup.as_any(), depth)?));
        }
        if let Ok(s) = obj.downcast_exact::<PySet>() {
            return Ok(Node::Set(self.walk_items(s.as_any(), depth)?));
        }
        if let Ok(s) = obj.downcast_exact::<PyFrozenSet>() {
            return Ok(Node::FrozenSet(self.walk_items(s.as_any(), depth)?));
        }
        let dict = obj.downcast::<PyDict>()?;
        let mut pairs = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let part = self.key_part(&k)?;
            self.path.push(PathPart::Other("<key>".into()));
            let kid = self.walk(&k, depth);
            self.path.pop();
            let kid = kid?;
            self.path.push(part);
            let vid = self.walk(&v, depth);
            self.path.pop();
            pairs.push((kid, vid?));
        }
        Ok(if obj.is_exact_instance_of::<PyDict>() {
            Node::Dict(pairs)
        } else {
            Node::ODict(pairs)
        })
    }

    /// The plan, and the source that feeds it bytes.
    pub(crate) fn finish(
        self,
        root: NodeId,
        metadata: Vec<(String, String)>,
    ) -> PyResult<(Plan, PySource<'py>)> {
        let (plan, origins) = self.planner.finish(root, metadata).map_err(format_error)?;
        let names = plan.entries.iter().map(|e| e.name.clone()).collect();
        Ok((
            plan,
            PySource {
                py: self.py,
                helpers: self.helpers,
                storages: self.storages,
                bytes: self.bytes,
                origins,
                names,
                error: None,
            },
        ))
    }
}
