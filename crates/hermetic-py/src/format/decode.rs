//! A validated archive -> Python objects. Containers and scalars are built
//! here; each tensor view is handed to a Python `maker` callable with its
//! entry's location, so all views of one entry share one storage.

use crate::errors::{format_error, FormatError};
use hermetic_format::{Archive, Node, NodeId, TensorKind, TensorRef, Tree};
use pyo3::exceptions::{PyIndexError, PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyList, PySet, PyString, PyTuple,
};
use std::collections::{BTreeMap, HashMap};

/// An opened, validated hermetic or safetensors file (or sharded checkpoint).
#[pyclass(frozen, name = "Archive", module = "hermetic._hermetic")]
pub(crate) struct PyArchive {
    inner: Archive,
    /// Node -> memo number.
    memo_of: HashMap<NodeId, usize>,
}

impl PyArchive {
    pub(crate) fn new(inner: Archive) -> Self {
        let memo_of = inner
            .tree()
            .memo
            .iter()
            .enumerate()
            .map(|(n, &id)| (id, n))
            .collect();
        PyArchive { inner, memo_of }
    }
}

fn kind_name(k: TensorKind) -> &'static str {
    match k {
        TensorKind::Torch => "torch",
        TensorKind::Parameter => "parameter",
        TensorKind::Numpy => "numpy",
    }
}

struct Builder<'a, 'py> {
    py: Python<'py>,
    ar: &'a Archive,
    tree: &'a Tree,
    memo_of: &'a HashMap<NodeId, usize>,
    maker: &'a Bound<'py, PyAny>,
    helpers: Option<Bound<'py, PyAny>>,
    memo: Vec<Option<Bound<'py, PyAny>>>,
    path: Vec<String>,
}

impl<'py> Builder<'_, 'py> {
    fn place(&self) -> String {
        format!("tree{}", self.path.concat())
    }

    /// Wraps an exception raised while building with the file and place.
    fn wrap(&self, e: PyErr) -> PyErr {
        let msg = format!(
            "{}: at {}: {}",
            self.ar.path.display(),
            self.place(),
            e.value(self.py)
        );
        let out = FormatError::new_err(msg);
        out.set_cause(self.py, Some(e));
        out
    }

    fn helpers(&mut self) -> PyResult<Bound<'py, PyAny>> {
        if self.helpers.is_none() {
            self.helpers = Some(self.py.import("hermetic._format")?.into_any());
        }
        Ok(self.helpers.clone().expect("set above"))
    }

    fn remember(&mut self, id: NodeId, obj: &Bound<'py, PyAny>) {
        if let Some(&n) = self.memo_of.get(&id) {
            self.memo[n] = Some(obj.clone());
        }
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
                self.remember(id, list.as_any());
                for (i, &c) in items.iter().enumerate() {
                    self.path.push(format!("[{i}]"));
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
                self.remember(id, &d);
                for &(k, v) in pairs {
                    self.path.push("[<key>]".into());
                    let key = self.build(k)?;
                    self.path.pop();
                    self.path.push(self.key_repr(&key));
                    let value = self.build(v)?;
                    d.set_item(&key, value).map_err(|e| self.wrap(e))?;
                    self.path.pop();
                }
                return Ok(d);
            }
            Node::Tuple(items) | Node::Set(items) | Node::FrozenSet(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, &c) in items.iter().enumerate() {
                    self.path.push(format!("[{i}]"));
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
        };
        self.remember(id, &obj);
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
                        "{} is not a dict, list or tuple",
                        self.place()
                    )))
                }
            };
            self.path.push(self.key_repr(part));
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

    /// Builds the subtree at key path `path`, making tensors with `maker`.
    fn build<'py>(
        &self,
        py: Python<'py>,
        path: Vec<Bound<'py, PyAny>>,
        maker: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let tree = self.inner.tree();
        let mut b = Builder {
            py,
            ar: &self.inner,
            tree,
            memo_of: &self.memo_of,
            maker: &maker,
            helpers: None,
            memo: vec![None; tree.memo.len()],
            path: Vec::new(),
        };
        let id = b.navigate(&path)?;
        b.build(id)
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
        };
        let tree = self.inner.tree();
        let mut b = Builder {
            py,
            ar: &self.inner,
            tree,
            memo_of: &self.memo_of,
            maker: &maker,
            helpers: None,
            memo: Vec::new(),
            path: vec![format!("[{:?}]", t.entry)],
        };
        b.tensor(&t).map_err(|e| b.wrap(e))
    }
}
