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

mod archive;
mod typed;

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
    /// The maker's `make_whole`, when it has one that is not None: a plain
    /// torch tensor that is its whole entry, row-major, goes there with the
    /// few arguments that case needs (10,000 small tensors spend most of
    /// their load in the general call's arguments and checks).
    whole: Option<Bound<'py, PyAny>>,
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
        let shape = PyTuple::new(self.py, &r.shape)?;
        let strides = PyTuple::new(self.py, &r.strides)?;
        if let Some(whole) = &self.whole {
            if t.kind == TensorKind::Torch
                && !t.requires_grad()
                && t.np_dtype.is_none()
                && r.is_whole_entry(entry.nbytes)
            {
                let args = (
                    file,
                    entry.start,
                    entry.nbytes,
                    entry.name.as_str(),
                    r.dtype.code(),
                    shape,
                    strides,
                );
                return whole.call1(args);
            }
        }
        let np_dtype = t.np_dtype.as_ref().map(|v| v.to_string());
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
