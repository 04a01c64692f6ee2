//! A validated archive -> Python objects. Containers and scalars are built
//! here; each tensor view is handed to a Python `maker` callable with its
//! entry's location, so all views of one entry share one storage.

use crate::errors::{format_error, FormatError, HermeticError};
use hermetic_format::{Archive, Node, NodeId, Shape, TensorKind, TensorRef, Tree};
use pyo3::exceptions::{PyIndexError, PyKeyError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyList, PySet, PyString, PyTuple,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

/// An opened, validated hermetic or safetensors file (or sharded checkpoint).
#[pyclass(frozen, name = "Archive", module = "hermetic._hermetic")]
pub(crate) struct PyArchive {
    inner: Archive,
    /// Node -> memo number (`usize::MAX`: not memoizable).
    memo_of: Vec<usize>,
    /// Memo numbers that a `$ref` names (objects that appear more than once).
    shared: HashSet<usize>,
    /// Whether the tree has version-2 nodes (class records, callables, ...).
    typed: bool,
}

impl PyArchive {
    pub(crate) fn new(inner: Archive) -> Self {
        let tree = inner.tree();
        let mut memo_of = vec![usize::MAX; tree.nodes.len()];
        for (n, &id) in tree.memo.iter().enumerate() {
            memo_of[id] = n;
        }
        let shared = tree
            .nodes
            .iter()
            .filter_map(|n| match n {
                Node::Ref(n) => Some(*n),
                _ => None,
            })
            .collect();
        let typed = tree.required_version() > 1;
        PyArchive {
            inner,
            memo_of,
            shared,
            typed,
        }
    }
}

fn kind_name(k: TensorKind) -> &'static str {
    match k {
        TensorKind::Torch => "torch",
        TensorKind::Parameter => "parameter",
        TensorKind::Numpy => "numpy",
    }
}

/// One step of the place being built; rendered only for an error.
enum Seg<'a, 'py> {
    Index(usize),
    /// A dict key (rendered with `repr`).
    Key(Bound<'py, PyAny>),
    /// A field of a class record or a keyword of a partial.
    Field(&'a str),
    Arg(usize),
    Text(String),
}

struct Builder<'a, 'py> {
    py: Python<'py>,
    ar: &'a Archive,
    tree: &'a Tree,
    memo_of: &'a [usize],
    maker: &'a Bound<'py, PyAny>,
    helpers: Option<Bound<'py, PyAny>>,
    memo: Vec<Option<Bound<'py, PyAny>>>,
    path: Vec<Seg<'a, 'py>>,
    /// What class records, enums and callables become (see `hermetic._typed`).
    hooks: Option<Bound<'py, PyAny>>,
    /// The hooks' `record_class` and `enum_class`, when they have them: class
    /// records and enum members are then made here, without a Python call.
    direct: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    shared: &'a HashSet<usize>,
    /// The hooks' `shared_ids`, when they have it: receives `id()` of every
    /// object built from a node that a `$ref` names, so that typed
    /// structuring rebuilds each shared object once and keeps it shared.
    shared_ids: Option<Bound<'py, PySet>>,
    /// Interned Python strings for class and field names.
    names: HashMap<String, Bound<'py, PyString>>,
    /// Per shape (by address): its field names as Python strings.
    shape_names: HashMap<usize, Rc<[Bound<'py, PyString>]>>,
}

impl<'a, 'py> Builder<'a, 'py> {
    fn place(&self) -> String {
        let mut s = String::from("tree");
        for seg in &self.path {
            match seg {
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
                Seg::Key(k) => s.push_str(&self.key_repr(k)),
                Seg::Field(f) => s.push_str(&format!(".{f}")),
                Seg::Arg(i) => s.push_str(&format!(".args[{i}]")),
                Seg::Text(t) => s.push_str(t),
            }
        }
        s
    }

    /// Wraps an exception raised while building with the file and place.
    /// hermetic's own errors keep their class.
    fn wrap(&self, e: PyErr) -> PyErr {
        let msg = format!(
            "{}: at {}: {}",
            self.ar.path.display(),
            self.place(),
            e.value(self.py)
        );
        let out = if e.is_instance_of::<HermeticError>(self.py) {
            match e.get_type(self.py).call1((msg.clone(),)) {
                Ok(v) => PyErr::from_value(v),
                Err(_) => FormatError::new_err(msg),
            }
        } else {
            FormatError::new_err(msg)
        };
        out.set_cause(self.py, Some(e));
        out
    }

    fn hooks(&self) -> PyResult<&Bound<'py, PyAny>> {
        self.hooks.as_ref().ok_or_else(|| {
            FormatError::new_err(format!(
                "{}: at {}: the file holds class records, enums or callables; load it with \
                 hermetic.load(path, type=...), allow=[...] or plain=True",
                self.ar.path.display(),
                self.place()
            ))
        })
    }

    fn name(&mut self, s: &str) -> Bound<'py, PyString> {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n = PyString::intern(self.py, s);
        self.names.insert(s.to_string(), n.clone());
        n
    }

    /// Calls a hook (`object`, `enum`, `callable`, `partial`) or a helper.
    fn call(
        &self,
        target: &Bound<'py, PyAny>,
        method: &Bound<'py, PyString>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        target.call_method1(method, args).map_err(|e| self.wrap(e))
    }

    /// The interned field names of a shape, made once per shape.
    fn shape_names(&mut self, shape: &Arc<Shape>) -> Rc<[Bound<'py, PyString>]> {
        let key = Arc::as_ptr(shape) as usize;
        if let Some(n) = self.shape_names.get(&key) {
            return n.clone();
        }
        let names: Rc<[Bound<'py, PyString>]> = shape.fields.iter().map(|f| self.name(f)).collect();
        self.shape_names.insert(key, names.clone());
        names
    }

    fn build_fields(&mut self, fields: &'a [(String, NodeId)]) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(self.py);
        for (name, v) in fields {
            self.path.push(Seg::Field(name));
            let value = self.build(*v)?;
            self.path.pop();
            d.set_item(self.name(name), value)?;
        }
        Ok(d)
    }

    fn typed(&mut self, id: NodeId) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let tree = self.tree;
        let helpers = |b: &mut Self| b.helpers();
        Ok(match &tree.nodes[id] {
            Node::Object { shape, values } => {
                let hooks = self.hooks()?.clone();
                let shared = self
                    .memo_of
                    .get(id)
                    .is_some_and(|n| self.shared.contains(n));
                if let Some((record, _)) = self.direct.clone() {
                    // A dict subclass with `cls` and `shared` slots.
                    let r = record.call0()?;
                    let names = self.shape_names(shape);
                    for ((name, v), key) in shape.fields.iter().zip(values).zip(names.iter()) {
                        self.path.push(Seg::Field(name));
                        let value = self.build(*v)?;
                        self.path.pop();
                        r.set_item(key, value)?;
                    }
                    r.setattr(intern!(py, "cls"), self.name(&shape.class))?;
                    r.setattr(intern!(py, "shared"), PyBool::new(py, shared))?;
                    return Ok(r);
                }
                let d = PyDict::new(py);
                let names = self.shape_names(shape);
                for ((name, v), key) in shape.fields.iter().zip(values).zip(names.iter()) {
                    self.path.push(Seg::Field(name));
                    let value = self.build(*v)?;
                    self.path.pop();
                    d.set_item(key, value)?;
                }
                let class = &shape.class;
                let args = PyTuple::new(
                    py,
                    [
                        self.name(class).into_any(),
                        d.into_any(),
                        PyBool::new(py, shared).to_owned().into_any(),
                    ],
                )?;
                self.call(&hooks, intern!(py, "object"), args)?
            }
            Node::Enum { class, value } => {
                let hooks = self.hooks()?.clone();
                self.path.push(Seg::Text(".value".into()));
                let v = self.build(*value)?;
                self.path.pop();
                let args = PyTuple::new(py, [self.name(class).into_any(), v])?;
                if let Some((_, enum_ref)) = &self.direct {
                    // A tuple subclass: (class, value).
                    return enum_ref.call1((args,));
                }
                self.call(&hooks, intern!(py, "enum"), args)?
            }
            Node::Callable(name) => {
                let hooks = self.hooks()?.clone();
                let args = PyTuple::new(py, [self.name(name)])?;
                self.call(&hooks, intern!(py, "callable"), args)?
            }
            Node::Partial {
                func,
                args,
                keywords,
            } => {
                let hooks = self.hooks()?.clone();
                let mut built = Vec::with_capacity(args.len());
                for (i, &a) in args.iter().enumerate() {
                    self.path.push(Seg::Arg(i));
                    built.push(self.build(a)?);
                    self.path.pop();
                }
                let kw = self.build_fields(keywords)?;
                let call_args = PyTuple::new(
                    py,
                    [
                        self.name(func).into_any(),
                        PyTuple::new(py, built)?.into_any(),
                        kw.into_any(),
                    ],
                )?;
                self.call(&hooks, intern!(py, "partial"), call_args)?
            }
            Node::Datetime(t) => {
                let h = helpers(self)?;
                self.call(
                    &h,
                    intern!(py, "_datetime"),
                    PyTuple::new(py, [t.as_str()])?,
                )?
            }
            Node::Date(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_date"), PyTuple::new(py, [t.as_str()])?)?
            }
            Node::Timedelta {
                days,
                seconds,
                microseconds,
            } => {
                let h = helpers(self)?;
                let args = PyTuple::new(py, [*days, *seconds, *microseconds])?;
                self.call(&h, intern!(py, "_timedelta"), args)?
            }
            Node::Time(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_time"), PyTuple::new(py, [t.as_str()])?)?
            }
            Node::Timezone { offset, name } => {
                let h = helpers(self)?;
                let args = (offset.as_str(), name.as_deref()).into_pyobject(py)?;
                self.call(&h, intern!(py, "_timezone"), args)?
            }
            Node::PurePath { windows, text } => {
                let h = helpers(self)?;
                let args = (*windows, text.as_str()).into_pyobject(py)?;
                self.call(&h, intern!(py, "_pure_path"), args)?
            }
            Node::Path(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_path"), PyTuple::new(py, [t.as_str()])?)?
            }
            Node::Uuid(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_uuid"), PyTuple::new(py, [t.as_str()])?)?
            }
            Node::Decimal(t) => {
                let h = helpers(self)?;
                self.call(&h, intern!(py, "_decimal"), PyTuple::new(py, [t.as_str()])?)?
            }
            _ => unreachable!("typed() is only called on version-2 nodes"),
        })
    }

    fn helpers(&mut self) -> PyResult<Bound<'py, PyAny>> {
        if self.helpers.is_none() {
            self.helpers = Some(crate::bridge::module(self.py)?.into_any());
        }
        Ok(self.helpers.clone().expect("set above"))
    }

    fn remember(&mut self, id: NodeId, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        if let Some(&n) = self.memo_of.get(id).filter(|&&n| n != usize::MAX) {
            self.memo[n] = Some(obj.clone());
            if let Some(ids) = &self.shared_ids {
                if self.shared.contains(&n) {
                    // `id(obj)` in CPython is the object's address.
                    ids.add(obj.as_ptr() as usize)?;
                }
            }
        }
        Ok(())
    }

    fn key_repr(&self, k: &Bound<'py, PyAny>) -> String {
        k.repr()
            .map(|r| format!("[{}]", r))
            .unwrap_or_else(|_| "[<key>]".into())
    }

    fn tensor(&mut self, t: &TensorRef) -> PyResult<Bound<'py, PyAny>> {
        let (file, entry, r) = self.ar.resolve(t).map_err(format_error)?;
        let np_dtype = t.np_dtype.as_ref().map(|v| v.to_string());
        let shape = PyTuple::new(self.py, &r.shape)?;
        let strides = PyTuple::new(self.py, &r.strides)?;
        let args = (
            kind_name(t.kind),
            file,
            entry.start,
            entry.nbytes,
            entry.name.as_str(),
            r.dtype.code(),
            shape,
            strides,
            r.offset,
            t.requires_grad(),
            np_dtype,
        );
        self.maker.call1(args)
    }

    fn build(&mut self, id: NodeId) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let tree = self.tree;
        let obj: Bound<'py, PyAny> = match &tree.nodes[id] {
            Node::None => py.None().into_bound(py),
            Node::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
            Node::Int(i) => i.into_pyobject(py)?.into_any(),
            Node::BigInt(h) => py
                .import("builtins")?
                .getattr("int")?
                .call1((h.as_str(), 16))?,
            Node::Float(x) => PyFloat::new(py, *x).into_any(),
            Node::Complex(re, im) => PyComplex::from_doubles(py, *re, *im).into_any(),
            Node::Str(s) => PyString::new(py, s).into_any(),
            Node::Bytes(b) => PyBytes::new(py, b).into_any(),
            Node::BytesEntry(name) => {
                let (f, e) = self
                    .ar
                    .locate(name)
                    .ok_or_else(|| FormatError::new_err(format!("no entry `{name}`")))?;
                PyBytes::new(py, self.ar.files[f].entry_bytes(e)).into_any()
            }
            Node::List(items) => {
                let list = PyList::empty(py);
                self.remember(id, list.as_any())?;
                for (i, &c) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    let v = self.build(c)?;
                    self.path.pop();
                    list.append(v)?;
                }
                return Ok(list.into_any());
            }
            Node::Dict(pairs) | Node::ODict(pairs) => {
                let d = if matches!(tree.nodes[id], Node::Dict(_)) {
                    PyDict::new(py).into_any()
                } else {
                    py.import("collections")?.getattr("OrderedDict")?.call0()?
                };
                self.remember(id, &d)?;
                for &(k, v) in pairs {
                    self.path.push(Seg::Text("[<key>]".into()));
                    let key = self.build(k)?;
                    self.path.pop();
                    self.path.push(Seg::Key(key.clone()));
                    let value = self.build(v)?;
                    d.set_item(&key, value).map_err(|e| self.wrap(e))?;
                    self.path.pop();
                }
                return Ok(d);
            }
            Node::Namespace(attrs) => {
                let ns = py.import("argparse")?.getattr("Namespace")?.call0()?;
                self.remember(id, &ns)?;
                for (name, v) in attrs {
                    self.path.push(Seg::Text(format!(".{name}")));
                    let value = self.build(*v)?;
                    ns.setattr(name.as_str(), value).map_err(|e| self.wrap(e))?;
                    self.path.pop();
                }
                return Ok(ns);
            }
            Node::DefaultDict { pairs, .. } | Node::Counter(pairs) => {
                let collections = py.import("collections")?;
                let d = match &tree.nodes[id] {
                    Node::DefaultDict { factory, .. } => {
                        let f = match factory.as_deref().and_then(|f| f.split_once(':')) {
                            // One of hermetic_format::DEFAULT_FACTORIES (the
                            // decoder checked): builtin types, nothing else.
                            Some((m, n))
                                if hermetic_format::DEFAULT_FACTORIES
                                    .contains(&factory.as_deref().unwrap_or_default()) =>
                            {
                                py.import(m)?.getattr(n)?
                            }
                            Some(_) => {
                                return Err(FormatError::new_err(format!(
                                    "a defaultdict factory {factory:?} outside the format's table"
                                )))
                            }
                            None => py.None().into_bound(py),
                        };
                        collections.getattr("defaultdict")?.call1((f,))?
                    }
                    _ => collections.getattr("Counter")?.call0()?,
                };
                self.remember(id, &d)?;
                for &(k, v) in pairs {
                    self.path.push(Seg::Text("[<key>]".into()));
                    let key = self.build(k)?;
                    self.path.pop();
                    self.path.push(Seg::Key(key.clone()));
                    let value = self.build(v)?;
                    d.set_item(&key, value).map_err(|e| self.wrap(e))?;
                    self.path.pop();
                }
                return Ok(d);
            }
            Node::Deque { maxlen, items } => {
                let dq = py
                    .import("collections")?
                    .getattr("deque")?
                    .call1(((), *maxlen))?;
                self.remember(id, &dq)?;
                for (i, &c) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    let v = self.build(c)?;
                    self.path.pop();
                    dq.call_method1(intern!(py, "append"), (v,))?;
                }
                return Ok(dq);
            }
            Node::Slice(parts) => {
                let mut out = Vec::with_capacity(3);
                for (i, &c) in parts.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    out.push(self.build(c)?);
                    self.path.pop();
                }
                py.import("builtins")?
                    .getattr("slice")?
                    .call1(PyTuple::new(py, out)?)?
            }
            Node::Range(r) => py
                .import("builtins")?
                .getattr("range")?
                .call1((r[0], r[1], r[2]))?,
            Node::Attrs { target, attrs } => {
                let obj = self.build(*target)?;
                for (name, v) in attrs {
                    self.path.push(Seg::Text(format!(".{name}")));
                    let value = self.build(*v)?;
                    obj.setattr(name.as_str(), value)
                        .map_err(|e| self.wrap(e))?;
                    self.path.pop();
                }
                return Ok(obj);
            }
            Node::Tuple(items) | Node::Set(items) | Node::FrozenSet(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, &c) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    out.push(self.build(c)?);
                    self.path.pop();
                }
                let obj = match &tree.nodes[id] {
                    Node::Tuple(_) => PyTuple::new(py, out)?.into_any(),
                    Node::Set(_) => PySet::new(py, &out).map_err(|e| self.wrap(e))?.into_any(),
                    _ => PyFrozenSet::new(py, &out)
                        .map_err(|e| self.wrap(e))?
                        .into_any(),
                };
                obj
            }
            Node::Tensor(t) => self.tensor(t).map_err(|e| self.wrap(e))?,
            Node::Ref(n) => {
                if let Some(Some(o)) = self.memo.get(*n) {
                    return Ok(o.clone());
                }
                let target = tree.memo[*n];
                return self.build(target);
            }
            Node::TorchDtype(name) => self
                .helpers()?
                .call_method1("_torch_dtype", (name.as_str(),))
                .map_err(|e| self.wrap(e))?,
            Node::TorchDevice(d) => self
                .helpers()?
                .call_method1("_torch_device", (d.as_str(),))
                .map_err(|e| self.wrap(e))?,
            Node::TorchSize(dims) => self
                .helpers()?
                .call_method1("_torch_size", (dims.clone(),))
                .map_err(|e| self.wrap(e))?,
            Node::NpScalar { dtype, data } => self
                .helpers()?
                .call_method1("_np_scalar", (dtype.to_string(), PyBytes::new(py, data)))
                .map_err(|e| self.wrap(e))?,
            node if node.is_typed() => self.typed(id)?,
            _ => unreachable!("every node kind is handled above"),
        };
        self.remember(id, &obj)?;
        Ok(obj)
    }

    /// Follows a key path from the root.
    fn navigate(&mut self, parts: &[Bound<'py, PyAny>]) -> PyResult<NodeId> {
        let mut id = self.tree.root;
        for part in parts {
            id = self.tree.resolve(id);
            let next = match &self.tree.nodes[id] {
                Node::Dict(pairs) | Node::ODict(pairs) => {
                    let mut found = None;
                    for &(k, v) in pairs {
                        let key = self.build(k)?;
                        if key.eq(part).unwrap_or(false) {
                            found = Some(v);
                            break;
                        }
                    }
                    found.ok_or_else(|| PyKeyError::new_err((part.clone().unbind(),)))?
                }
                Node::Object { shape, values } => {
                    let name: String = part.extract().map_err(|_| {
                        PyTypeError::new_err("fields of a class record are named by strings")
                    })?;
                    shape
                        .fields
                        .iter()
                        .position(|f| *f == name)
                        .map(|i| values[i])
                        .ok_or_else(|| PyKeyError::new_err((part.clone().unbind(),)))?
                }
                Node::List(items) | Node::Tuple(items) => {
                    let i: isize = part
                        .extract()
                        .map_err(|_| PyTypeError::new_err("sequence indices must be integers"))?;
                    let n = items.len() as isize;
                    let j = if i < 0 { i + n } else { i };
                    if j < 0 || j >= n {
                        return Err(PyIndexError::new_err(format!("index {i} out of range")));
                    }
                    items[j as usize]
                }
                _ => {
                    return Err(PyKeyError::new_err(format!(
                        "{} is not a dict, list, tuple or class record",
                        self.place()
                    )))
                }
            };
            self.path.push(Seg::Key(part.clone()));
            id = next;
        }
        Ok(id)
    }
}

#[pymethods]
impl PyArchive {
    /// The data files, in the order `file` numbers them.
    fn paths(&self) -> Vec<String> {
        self.inner
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect()
    }

    /// `__metadata__` (or the index's metadata) without hermetic's own key.
    fn metadata(&self) -> BTreeMap<String, String> {
        self.inner.metadata()
    }

    /// Whether the file carries a hermetic tree.
    fn has_tree(&self) -> bool {
        self.inner.has_tree()
    }

    /// Whether the tree holds class records, enums, callables or
    /// standard-library values (docs/SPEC.md, section 10).
    fn is_typed(&self) -> bool {
        self.typed
    }

    /// (name, safetensors dtype, shape, file, start, nbytes) of every entry, in file order.
    #[allow(clippy::type_complexity)]
    fn entries(&self) -> Vec<(String, String, Vec<u64>, usize, u64, u64)> {
        self.inner
            .files
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                f.header.entries.iter().map(move |e| {
                    (
                        e.name.clone(),
                        e.st_dtype.to_string(),
                        e.shape.clone(),
                        i,
                        e.start,
                        e.nbytes,
                    )
                })
            })
            .collect()
    }

    /// Checks digests (of the named entries, or all); raises FormatError on a mismatch.
    #[pyo3(signature = (names=None))]
    fn verify(&self, py: Python<'_>, names: Option<Vec<String>>) -> PyResult<()> {
        py.allow_threads(|| {
            let only: Option<Vec<&str>> = names
                .as_ref()
                .map(|n| n.iter().map(String::as_str).collect());
            self.inner.verify(only.as_deref())
        })
        .map_err(format_error)
    }

    /// Builds the subtree at key path `path`, making tensors with `maker`
    /// and class records, enums and callables with `hooks`.
    #[pyo3(signature = (path, maker, hooks=None))]
    fn build<'py>(
        &self,
        py: Python<'py>,
        path: Vec<Bound<'py, PyAny>>,
        maker: Bound<'py, PyAny>,
        hooks: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let tree = self.inner.tree();
        let direct = match &hooks {
            Some(h) => match (h.getattr_opt("record_class")?, h.getattr_opt("enum_class")?) {
                (Some(r), Some(e)) if !r.is_none() && !e.is_none() => Some((r, e)),
                _ => None,
            },
            None => None,
        };
        let shared_ids = match &hooks {
            Some(h) => match h.getattr_opt("shared_ids")? {
                Some(s) if !s.is_none() => Some(s.downcast_into::<PySet>()?),
                _ => None,
            },
            None => None,
        };
        let mut b = self.builder(py, tree, &maker, hooks);
        b.direct = direct;
        b.shared_ids = shared_ids;
        b.memo = vec![None; tree.memo.len()];
        let id = b.navigate(&path)?;
        b.build(id)
    }

    /// The classes, enums and callables the subtree at `path` names:
    /// (kind, `module:qualname`, count, field names of the first record).
    #[allow(clippy::type_complexity)]
    fn named_refs<'py>(
        &self,
        py: Python<'py>,
        path: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<(&'static str, String, usize, Vec<String>)>> {
        let tree = self.inner.tree();
        let maker = py.None().into_bound(py);
        let mut b = self.builder(py, tree, &maker, None);
        b.memo = vec![None; tree.memo.len()];
        let id = b.navigate(&path)?;
        Ok(tree
            .named_refs(id)
            .into_iter()
            .map(|r| (r.kind.as_str(), r.name, r.count, r.fields))
            .collect())
    }

    /// The whole entry `name` as one tensor (its own dtype and shape).
    fn entry_tensor<'py>(
        &self,
        py: Python<'py>,
        name: String,
        maker: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.inner.locate(&name).is_none() {
            return Err(PyKeyError::new_err((name,)));
        }
        let kind = match self.inner.metadata().get("format").map(String::as_str) {
            Some("np") | Some("numpy") => TensorKind::Numpy,
            _ => TensorKind::Torch,
        };
        let t = TensorRef {
            kind,
            entry: name,
            view: None,
            requires_grad: None,
            np_dtype: None,
            device: None,
            base: None,
        };
        let tree = self.inner.tree();
        let mut b = self.builder(py, tree, &maker, None);
        b.path = vec![Seg::Text(format!("[{:?}]", t.entry))];
        b.tensor(&t).map_err(|e| b.wrap(e))
    }
}

impl PyArchive {
    fn builder<'a, 'py>(
        &'a self,
        py: Python<'py>,
        tree: &'a Tree,
        maker: &'a Bound<'py, PyAny>,
        hooks: Option<Bound<'py, PyAny>>,
    ) -> Builder<'a, 'py> {
        Builder {
            py,
            ar: &self.inner,
            tree,
            memo_of: &self.memo_of,
            maker,
            helpers: None,
            memo: Vec::new(),
            path: Vec::new(),
            hooks,
            direct: None,
            shared: &self.shared,
            shared_ids: None,
            names: HashMap::new(),
            shape_names: HashMap::new(),
        }
    }
}
