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

    /// Calls a helper, turning its exception into a save error at this place.
    fn helper(&self, name: &str, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.helpers
            .call_method1(name, (obj,))
            .map_err(|e| self.fail(e.value(self.py).to_string()))
    }

    /// The cached storage rule for instances of `t`.
    fn class_info(&mut self, t: &Bound<'py, PyType>) -> PyResult<usize> {
        let key = t.as_ptr() as usize;
        if let Some((_, i)) = self.classes.get(&key) {
            return Ok(*i);
        }
        let info = self.helper("_class_info", t.as_any())?;
        let info = if info.is_none() {
            ClassInfo::Unsupported
        } else {
            let kind: String = info.get_item(0)?.extract()?;
            match kind.as_str() {
                "object" => {
                    let name: String = info.get_item(1)?.extract()?;
                    self.check_name(&name, false)?;
                    let mut fields = Vec::new();
                    let mut attrs = Vec::new();
                    for f in info.get_item(2)?.try_iter()? {
                        let f = f?;
                        let s: String = f.extract()?;
                        if !is_identifier(&s) || fields.contains(&s) {
                            return Err(self.fail(format!(
                                "{name}: field {s:?} is not an identifier, or appears twice"
                            )));
                        }
                        fields.push(s);
                        attrs.push(f.downcast_into::<PyString>()?);
                    }
                    ClassInfo::Object {
                        shape: Shape::new(name, fields),
                        attrs,
                    }
                }
                "enum" => {
                    let name: String = info.get_item(1)?.extract()?;
                    self.check_name(&name, false)?;
                    ClassInfo::Enum {
                        name: Arc::from(name),
                    }
                }
                "ref" => ClassInfo::ByRef,
                "partial" => ClassInfo::Partial,
                "datetime" => ClassInfo::Datetime,
                "date" => ClassInfo::Date,
                "timedelta" => ClassInfo::Timedelta,
                "path" => ClassInfo::Path,
                "uuid" => ClassInfo::Uuid,
                "decimal" => ClassInfo::Decimal,
                "time" => ClassInfo::Time,
                "timezone" => ClassInfo::Timezone,
                "pure_posix_path" => ClassInfo::PurePath(false),
                "pure_windows_path" => ClassInfo::PurePath(true),
                other => return Err(self.fail(format!("unknown class kind {other:?}"))),
            }
        };
        self.class_infos.push(Rc::new(info));
        let i = self.class_infos.len() - 1;
        self.classes.insert(key, (t.clone(), i));
        Ok(i)
    }

    fn check_name(&self, name: &str, importable: bool) -> PyResult<()> {
        let ok = if importable {
            is_import_name(name)
        } else {
            is_class_name(name)
        };
        if ok {
            Ok(())
        } else {
            Err(self.fail(format!(
                "{name:?} is not a `module:qualname` of identifiers, so it cannot be recorded"
            )))
        }
    }

    /// The `module:qualname` of a function or class stored by reference.
    fn callable_name(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<String> {
        let key = obj.as_ptr() as usize;
        if let Some((_, name)) = self.callables.get(&key) {
            return Ok(name.clone());
        }
        let name: String = self.helper("_callable_name", obj)?.extract()?;
        self.check_name(&name, true)?;
        self.callables.insert(key, (obj.clone(), name.clone()));
        Ok(name)
    }

    /// Reads the text form of a standard-library value and checks it.
    fn text(
        &self,
        obj: &Bound<'py, PyAny>,
        helper: Option<&str>,
        ok: fn(&str) -> bool,
        what: &str,
    ) -> PyResult<String> {
        let s = match helper {
            Some(h) => self.helper(h, obj)?,
            None => obj.str()?.into_any(),
        };
        let s: String = s
            .downcast::<PyString>()?
            .to_str()
            .map_err(|_| self.fail(format!("the {what} is not valid Unicode")))?
            .to_string();
        if !ok(&s) {
            return Err(self.fail(format!("{what} {s:?} has no representation in the format")));
        }
        Ok(s)
    }

    /// Version-2 values: class records, enums, callables, partials and
    /// standard-library values. `None` if `obj` is none of those.
    fn typed(
        &mut self,
        obj: &Bound<'py, PyAny>,
        t: &Bound<'py, PyType>,
        depth: usize,
    ) -> PyResult<Option<NodeId>> {
        let i = self.class_info(t)?;
        let info = self.class_infos[i].clone();
        let node = match &*info {
            ClassInfo::Unsupported => return Ok(None),
            ClassInfo::Object { shape, attrs } => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.fail(format!("containers nest deeper than {MAX_DEPTH} levels"))
                    );
                }
                if let Err(r) = self.memoize(obj, true)? {
                    return Ok(Some(r));
                }
                let mut values = Vec::with_capacity(attrs.len());
                for (f, attr) in shape.fields.iter().zip(attrs) {
                    let value = obj.getattr(attr).map_err(|e| {
                        self.fail(format!(
                            "{}: cannot read field `{f}`: {}",
                            shape.class,
                            e.value(self.py)
                        ))
                    })?;
                    self.path.push(PathPart::Key(f.clone()));
                    let r = self.walk(&value, depth + 1);
                    self.path.pop();
                    values.push(r?);
                }
                self.close(obj);
                Node::Object {
                    shape: shape.clone(),
                    values,
                }
            }
            ClassInfo::Enum { name } => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.fail(format!("containers nest deeper than {MAX_DEPTH} levels"))
                    );
                }
                let class = name.clone();
                let value = obj.getattr(intern!(self.py, "_value_"))?;
                let value = self.walk(&value, depth + 1)?;
                Node::Enum { class, value }
            }
            ClassInfo::ByRef => Node::Callable(self.callable_name(obj)?),
            ClassInfo::Partial => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.fail(format!("containers nest deeper than {MAX_DEPTH} levels"))
                    );
                }
                // Checks the partial has nothing but a function, args and keywords.
                self.helper("_check_partial", obj)?;
                let func = self.callable_name(&obj.getattr(intern!(self.py, "func"))?)?;
                if let Err(r) = self.memoize(obj, true)? {
                    return Ok(Some(r));
                }
                let args = obj.getattr(intern!(self.py, "args"))?;
                let mut arg_ids = Vec::new();
                for (i, a) in args.try_iter()?.enumerate() {
                    self.path.push(PathPart::Other(format!("args[{i}]")));
                    let r = self.walk(&a?, depth + 1);
                    self.path.pop();
                    arg_ids.push(r?);
                }
                let kw = obj.getattr(intern!(self.py, "keywords"))?;
                let kw = kw.downcast::<PyDict>()?;
                let mut keywords = Vec::with_capacity(kw.len());
                for (k, v) in kw.iter() {
                    let k: String = k.extract()?;
                    if !is_identifier(&k) {
                        return Err(
                            self.fail(format!("partial keyword {k:?} is not an identifier"))
                        );
                    }
                    self.path.push(PathPart::Key(k.clone()));
                    let r = self.walk(&v, depth + 1);
                    self.path.pop();
                    keywords.push((k, r?));
                }
                self.close(obj);
                Node::Partial {
                    func,
                    args: arg_ids,
                    keywords,
                }
            }
            ClassInfo::Datetime => {
                Node::Datetime(self.text(obj, Some("_datetime_text"), is_datetime, "datetime")?)
            }
            ClassInfo::Date => Node::Date(self.text(obj, None, is_date, "date")?),
            ClassInfo::Timedelta => {
                let (days, seconds, microseconds): (i64, i64, i64) = (
                    obj.getattr(intern!(self.py, "days"))?.extract()?,
                    obj.getattr(intern!(self.py, "seconds"))?.extract()?,
                    obj.getattr(intern!(self.py, "microseconds"))?.extract()?,
                );
                Node::Timedelta {
                    days,
                    seconds,
                    microseconds,
                }
            }
            ClassInfo::Path => Node::Path(self.text(obj, None, |_| true, "path")?),
            ClassInfo::PurePath(windows) => Node::PurePath {
                windows: *windows,
                text: self.text(obj, None, |_| true, "path")?,
            },
            ClassInfo::Time => {
                Node::Time(self.text(obj, Some("_time_text"), hermetic_format::is_time, "time")?)
            }
            ClassInfo::Timezone => {
                let (offset, name): (String, Option<String>) =
                    self.helper("_timezone_info", obj)?.extract()?;
                if !hermetic_format::is_utc_offset(&offset)
                    || name.as_ref().is_some_and(|n| n.len() > 255)
                {
                    return Err(self.fail(format!(
                        "timezone {offset:?} {name:?} has no representation in the format"
                    )));
                }
                Node::Timezone { offset, name }
            }
            ClassInfo::Uuid => Node::Uuid(self.text(obj, None, is_uuid, "UUID")?),
            ClassInfo::Decimal => Node::Decimal(self.text(obj, None, is_decimal, "Decimal")?),
        };
        Ok(Some(self.push(node)))
    }

    /// `argparse.Namespace`, `defaultdict`, `Counter`, `deque`, `slice` and
    /// `range` (exact types; SPEC 10.6), or `None` for anything else.
    fn stdlib(
        &mut self,
        obj: &Bound<'py, PyAny>,
        t: &Bound<'py, PyType>,
        depth: usize,
    ) -> PyResult<Option<NodeId>> {
        let py = self.py;
        let ty = &self.types;
        let mutable =
            t.is(&ty.namespace) || t.is(&ty.defaultdict) || t.is(&ty.counter) || t.is(&ty.deque);
        if t.is(&ty.range) {
            let part = |n: &str| -> PyResult<i64> {
                obj.getattr(n)?.extract::<i64>().map_err(|_| {
                    self.fail("a range whose bounds do not fit in 64 bits cannot be stored")
                })
            };
            let r = [part("start")?, part("stop")?, part("step")?];
            return Ok(Some(self.push(Node::Range(r))));
        }
        if t.is(&ty.slice) {
            let mut parts = [0; 3];
            for (i, n) in ["start", "stop", "step"].iter().enumerate() {
                self.path.push(PathPart::Other(format!(".{n}")));
                let r = self.walk(&obj.getattr(*n)?, depth + 1);
                self.path.pop();
                parts[i] = r?;
            }
            return Ok(Some(self.push(Node::Slice(parts))));
        }
        if !mutable {
            return Ok(None);
        }
        if depth >= MAX_DEPTH {
            return Err(self.fail(format!("containers nest deeper than {MAX_DEPTH} levels")));
        }
        if let Err(r) = self.memoize(obj, false)? {
            return Ok(Some(r));
        }
        let node = if t.is(&self.types.namespace) {
            let vars = obj.getattr(intern!(py, "__dict__"))?;
            let vars = vars.downcast::<PyDict>()?;
            let mut attrs = Vec::with_capacity(vars.len());
            for (k, v) in vars.iter() {
                let name = match k.extract::<String>() {
                    Ok(n) if is_identifier(&n) && !n.starts_with("__") => n,
                    _ => {
                        return Err(self.fail(format!(
                            "the Namespace attribute {} is not an identifier; store vars(args) \
                             (a dict) instead",
                            k.repr()?
                        )))
                    }
                };
                self.path.push(PathPart::Other(format!(".{name}")));
                let r = self.walk(&v, depth + 1);
                self.path.pop();
                attrs.push((name, r?));
            }
            Node::Namespace(attrs)
        } else if t.is(&self.types.deque) {
            let maxlen = obj.getattr(intern!(py, "maxlen"))?;
            let maxlen = if maxlen.is_none() {
                None
            } else {
                Some(maxlen.extract::<u64>()?)
            };
            let items = self.walk_items(obj, depth + 1)?;
            Node::Deque { maxlen, items }
        } else {
            let factory = if t.is(&self.types.defaultdict) {
                let f = obj.getattr(intern!(py, "default_factory"))?;
                if f.is_none() {
                    Some(None)
                } else {
                    let name = self.callable_name(&f).ok();
                    match name.filter(|n| DEFAULT_FACTORIES.contains(&n.as_str())) {
                        Some(n) => Some(Some(n)),
                        None => {
                            return Err(self.fail(format!(
                                "a defaultdict whose factory is {}: only builtin types ({}) \
                                 are stored, since loading one must call nothing else; store \
                                 dict(d) instead",
                                f.repr()?,
                                DEFAULT_FACTORIES.join(", ")
                            )))
                        }
                    }
                }
            } else {
                None
            };
            let dict = obj.downcast::<PyDict>()?;
            let mut pairs = Vec::with_capacity(dict.len());
            for (k, v) in dict.iter() {
                let part = self.key_part(&k)?;
                self.path.push(PathPart::Other("<key>".into()));
                let kid = self.walk(&k, depth + 1);
                self.path.pop();
                let kid = kid?;
                self.path.push(part);
                let vid = self.walk(&v, depth + 1);
                self.path.pop();
                pairs.push((kid, vid?));
            }
            match factory {
                Some(factory) => Node::DefaultDict { factory, pairs },
                None => Node::Counter(pairs),
            }
        };
        self.close(obj);
        Ok(Some(self.push(node)))
    }

    /// An OrderedDict's instance attributes (torch keeps a state dict's
    /// `_metadata` version table there): a `$attrs` node around it, or an
    /// error naming any attribute that cannot be stored; never dropped.
    fn odict_attrs(
        &mut self,
        obj: &Bound<'py, PyAny>,
        id: NodeId,
        depth: usize,
    ) -> PyResult<NodeId> {
        let Ok(vars) = obj.getattr(intern!(self.py, "__dict__")) else {
            return Ok(id);
        };
        let vars = vars.downcast::<PyDict>()?;
        if vars.is_empty() {
            return Ok(id);
        }
        let mut attrs = Vec::with_capacity(vars.len());
        for (k, v) in vars.iter() {
            let name: String = match k.extract::<String>() {
                Ok(n) if is_identifier(&n) && !n.starts_with("__") => n,
                _ => {
                    return Err(self.fail(format!(
                        "the OrderedDict has an attribute {} that cannot be stored \
                         (an identifier not starting with `__` is needed)",
                        k.repr()?
                    )))
                }
            };
            self.path.push(PathPart::Other(format!(".{name}")));
            let r = self.walk(&v, depth + 1);
            self.path.pop();
            attrs.push((name, r?));
        }
        Ok(self.push(Node::Attrs { target: id, attrs }))
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

    fn storage_key(&mut self, space: &str, ptr: u64, origin: Storage<'py>) -> u64 {
        if ptr == 0 {
            self.storages.push(origin);
            return (self.storages.len() - 1) as u64;
        }
        if let Some(&k) = self.storage_keys.get(&(space.to_string(), ptr)) {
            return k;
        }
        self.storages.push(origin);
        let k = (self.storages.len() - 1) as u64;
        self.storage_keys.insert((space.to_string(), ptr), k);
        k
    }

    fn torch_tensor(&mut self, obj: &Bound<'py, PyAny>, kind: TensorKind) -> PyResult<NodeId> {
        let info = self
            .helpers
            .call_method1("_torch_info", (obj,))
            .map_err(|e| self.fail(e.value(self.py).to_string()))?;
        #[allow(clippy::type_complexity)]
        let (code, shape, strides, offset, itemsize, device, ptr, nbytes, grad, cpu): (
            String,
            Vec<u64>,
            Vec<i64>,
            i64,
            i64,
            String,
            u64,
            u64,
            bool,
            bool,
        ) = info.extract()?;
        let dtype = Dtype::parse(&code).ok_or_else(|| self.fail(format!("dtype {code}")))?;
        let strides = strides
            .iter()
            .map(|s| s.checked_mul(itemsize))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| self.fail("strides overflow"))?;
        let pos = offset
            .checked_mul(itemsize)
            .ok_or_else(|| self.fail("offset overflows"))?;
        let origin = if cpu {
            // CPU storage: the writer reads it in place, from its address.
            Storage::Cpu(obj.clone(), ptr as usize, nbytes as usize)
        } else {
            Storage::Helper(false, obj.clone())
        };
        let key = self.storage_key(&device, if nbytes == 0 { 0 } else { ptr }, origin);
        let requires_grad = match kind {
            TensorKind::Parameter => (!grad).then_some(false),
            _ => grad.then_some(true),
        };
        let spec = ViewSpec {
            kind,
            dtype,
            shape,
            strides,
            pos,
            requires_grad,
            np_dtype: None,
            device: (device != "cpu").then_some(device),
        };
        self.planner
            .add_view(path_name(&self.path), key, nbytes, spec)
            .map_err(|e| self.fail(e))
    }

    fn ndarray(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<NodeId> {
        let info = self
            .helpers
            .call_method1("_np_info", (obj,))
            .map_err(|e| self.fail(e.value(self.py).to_string()))?;
        #[allow(clippy::type_complexity)]
        let (code, np_dtype, shape, strides, pos, root, region_len, region): (
            String,
            Option<String>,
            Vec<u64>,
            Vec<i64>,
            i64,
            u64,
            u64,
            Bound<'py, PyAny>,
        ) = info.extract()?;
        let dtype = Dtype::parse(&code).ok_or_else(|| self.fail(format!("dtype {code}")))?;
        let np_dtype = match np_dtype {
            Some(s) => Some(serde_json::from_str(&s).map_err(|e| self.fail(e))?),
            None => None,
        };
        let key = self.storage_key(
            "numpy",
            if region_len == 0 { 0 } else { root },
            Storage::Helper(true, region),
        );
        let spec = ViewSpec {
            kind: TensorKind::Numpy,
            dtype,
            shape,
            strides,
            pos,
            requires_grad: None,
            np_dtype,
            device: None,
        };
        self.planner
            .add_view(path_name(&self.path), key, region_len, spec)
            .map_err(|e| self.fail(e))
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

/// Feeds entry bytes to the writer, one entry at a time, straight from the
/// tensors' memory (a device tensor is copied to the host just before).
pub(crate) struct PySource<'py> {
    py: Python<'py>,
    helpers: Bound<'py, PyAny>,
    storages: Vec<Storage<'py>>,
    bytes: Vec<Bound<'py, PyBytes>>,
    origins: Vec<EntryOrigin>,
    names: Vec<String>,
    error: Option<PyErr>,
}

impl PySource<'_> {
    /// The Python exception behind a failed write, if there was one.
    pub(crate) fn take_error(&mut self) -> Option<PyErr> {
        self.error.take()
    }
}

/// The bytes at `ptr..ptr+len` owned by `_owner`: a C-contiguous uint8 numpy
/// array (its `__array_interface__` address and `nbytes`) or a CPU torch
/// tensor (its untyped storage's `data_ptr()` and `nbytes()`). The buffer
/// protocol is not part of the stable ABI this module targets before 3.11.
#[allow(unsafe_code)]
fn array_bytes<'a>(_owner: &'a Bound<'_, PyAny>, ptr: usize, len: usize) -> &'a [u8] {
    if len == 0 || ptr == 0 {
        return &[];
    }
    // SAFETY: `ptr` and `len` describe memory `_owner` owns (see above) and
    // that stays allocated as long as `_owner` lives; the returned slice
    // borrows `_owner`, and the GIL is held while the slice is used, so no
    // Python code can free or resize that memory meanwhile.
    unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
}

impl EntrySource for PySource<'_> {
    fn write_entry(
        &mut self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> hermetic_format::Result<()> {
        let name = self.names[index].clone();
        let fail = |detail: String| hermetic_format::FormatError::Source {
            entry: name.clone(),
            detail,
        };
        match &self.origins[index] {
            EntryOrigin::Bytes { slot } => {
                sink(self.bytes[*slot].as_bytes()).map_err(|e| fail(e.to_string()))
            }
            EntryOrigin::Storage { lo, hi, .. } if lo == hi => Ok(()),
            EntryOrigin::Gather {
                key,
                lo,
                hi,
                itemsize,
                shape,
                strides,
                offset,
            } => {
                // A view that is not one run of its storage: its row-major copy.
                let (key, lo, hi) = (*key, *lo, *hi);
                let (itemsize, offset) = (*itemsize, *offset);
                let (shape, strides) = (shape.clone(), strides.clone());
                let mut copy = None;
                self.span(index, key, lo, hi, &mut |bytes| {
                    copy = gather(bytes, itemsize, &shape, &strides, offset);
                    Ok(())
                })?;
                let copy = copy.ok_or_else(|| fail("the view reaches outside its bytes".into()))?;
                sink(&copy).map_err(|e| fail(e.to_string()))
            }
            EntryOrigin::Storage { key, lo, hi } => {
                let (key, lo, hi) = (*key, *lo, *hi);
                self.span(index, key, lo, hi, sink)
            }
        }
    }
}

impl PySource<'_> {
    /// Calls `sink` with bytes `lo..hi` of storage `key`.
    fn span(
        &mut self,
        index: usize,
        key: u64,
        lo: u64,
        hi: u64,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> hermetic_format::Result<()> {
        let name = self.names[index].clone();
        let fail = |detail: String| hermetic_format::FormatError::Source {
            entry: name.clone(),
            detail,
        };
        let (key, lo, hi) = (&key, &lo, &hi);
        let (numpy, obj) = match self.storages.get(*key as usize) {
            Some(Storage::Helper(numpy, obj)) => (numpy, obj),
            Some(Storage::Cpu(owner, ptr, len)) => {
                if *hi as usize > *len {
                    return Err(fail(format!("bytes {lo}..{hi} outside the storage")));
                }
                let all = array_bytes(owner, *ptr, *len);
                return sink(&all[*lo as usize..*hi as usize]).map_err(|e| fail(e.to_string()));
            }
            None => return Err(fail(format!("no storage numbered {key}"))),
        };
        let helper = if *numpy { "_np_span" } else { "_torch_span" };
        let got = self
            .helpers
            .call_method1(helper, (obj, *lo, *hi))
            .and_then(|r| r.extract::<(Bound<'_, PyAny>, usize, usize)>());
        let (arr, ptr, len) = match got {
            Ok(b) => b,
            Err(e) => {
                let msg = e.value(self.py).to_string();
                self.error = Some(e);
                return Err(fail(msg));
            }
        };
        if len as u64 != hi - lo {
            return Err(fail(format!("got {len} bytes, expected {}", hi - lo)));
        }
        sink(array_bytes(&arr, ptr, len)).map_err(|e| fail(e.to_string()))
    }
}
