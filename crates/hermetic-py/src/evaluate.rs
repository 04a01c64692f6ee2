//! `hermetic.torch.load` / `hermetic.load_pickle`: the safe evaluator's
//! value graph -> Python objects. The file is scanned and evaluated in Rust
//! with the GIL released; then every reachable node is built exactly once
//! (so shared objects stay shared), with tensors, storages and numpy objects
//! made by the `maker` (`hermetic._evaluate.Maker`), which only ever
//! receives plain numbers, strings and buffers.

use crate::errors::{CheckpointError, UnsafePickleError};
use hermetic_pickle::eval::{
    admit_companions, gate, load_scanned, made_objects, map_file, Allowed, ArrayData, Companions,
    DictKind, EvalError, Flavor, Format, Global, Id, Known, LoadOptions, Loaded, Made, Mode,
    NpDtype, Py2Str, StorageData, StorageView, Value,
};
use hermetic_pickle::{Limits, Policy};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{
    PyByteArray, PyBytes, PyComplex, PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple,
};
use std::collections::HashMap;
use std::path::PathBuf;

mod build;

use build::dtype_spec;

/// Maps an evaluation error to `UnsafePickleError` (with `imports` and
/// `findings` attributes) or `CheckpointError` (with `code` and `offset`).
fn eval_error(py: Python<'_>, e: EvalError) -> PyErr {
    match &e {
        EvalError::Unsafe(u) => {
            let msg = match u.allow_hint() {
                Some(hint) => format!("{e}\n{hint}"),
                None => e.to_string(),
            };
            let err = UnsafePickleError::new_err(msg.clone());
            let value = err.value(py);
            let findings: Vec<(String, String, u64, String)> = u
                .offenders
                .iter()
                .map(|o| {
                    (
                        o.code.to_string(),
                        o.qualname.clone(),
                        o.offset,
                        o.reason.clone(),
                    )
                })
                .collect();
            let ok = value.setattr("imports", u.imports.clone()).is_ok()
                && value.setattr("findings", findings).is_ok()
                && value.setattr("path", u.file.clone()).is_ok()
                && value.setattr("offset", e.offset()).is_ok();
            if ok {
                err
            } else {
                UnsafePickleError::new_err(msg)
            }
        }
        other => {
            let err = CheckpointError::new_err(other.to_string());
            let value = err.value(py);
            let _ = value.setattr("code", other.code());
            let _ = value.setattr("offset", other.offset());
            err
        }
    }
}

struct Builder<'l, 'a, 'py> {
    py: Python<'py>,
    loaded: &'l Loaded<'a>,
    maker: &'l Bound<'py, PyAny>,
    objs: Vec<Option<Bound<'py, PyAny>>>,
    /// Untyped storages by (index, byte offset, bytes).
    storages: HashMap<(u32, u64, u64), Bound<'py, PyAny>>,
    np_dtypes: HashMap<String, Bound<'py, PyAny>>,
    /// Mutable nodes already filled (some are filled early, before an
    /// allowed class receives them as arguments).
    filled: Vec<bool>,
    /// Nodes [`Builder::prefill`] has walked.
    walked: Vec<bool>,
}

impl<'py> Builder<'_, '_, 'py> {
    fn obj(&self, id: Id) -> PyResult<Bound<'py, PyAny>> {
        self.objs[id as usize].clone().ok_or_else(|| {
            CheckpointError::new_err(format!(
                "{}: the object graph has a cycle through immutable objects, which Python cannot build",
                self.loaded.file
            ))
        })
    }

    fn objs_of(&self, ids: &[Id]) -> PyResult<Vec<Bound<'py, PyAny>>> {
        ids.iter().map(|&i| self.obj(i)).collect()
    }

    fn np_dtype(&mut self, d: &NpDtype) -> PyResult<Bound<'py, PyAny>> {
        let key = d.descr();
        if let Some(dt) = self.np_dtypes.get(&key) {
            return Ok(dt.clone());
        }
        let dt = self
            .maker
            .call_method1("np_dtype", (dtype_spec(self.py, d)?,))?;
        self.np_dtypes.insert(key, dt.clone());
        Ok(dt)
    }

    fn storage(&mut self, v: &StorageView) -> PyResult<Bound<'py, PyAny>> {
        let key = (v.index, v.byte_offset, v.nbytes);
        if let Some(s) = self.storages.get(&key) {
            return Ok(s.clone());
        }
        let root_key = (v.index, 0, u64::MAX);
        let root = match self.storages.get(&root_key) {
            Some(r) => r.clone(),
            None => {
                let s = &self.loaded.storages[v.index as usize];
                let source = match &s.data {
                    StorageData::File { offset } => offset.into_pyobject(self.py)?.into_any(),
                    StorageData::Owned(bytes) => PyByteArray::new(self.py, bytes).into_any(),
                };
                let mappable = self.loaded.format == Format::TorchZip;
                let r = self
                    .maker
                    .call_method1("storage", (source, s.nbytes, s.location.as_str(), mappable))?;
                self.storages.insert(root_key, r.clone());
                r
            }
        };
        let full = v.byte_offset == 0 && v.nbytes == self.loaded.storages[v.index as usize].nbytes;
        let out = if full {
            root
        } else {
            self.maker
                .call_method1("storage_view", (root, v.byte_offset, v.nbytes))?
        };
        self.storages.insert(key, out.clone());
        Ok(out)
    }

    /// Fills the containers an allowed object's arguments reach, before it
    /// is made: the unpickler filled them before the call (APPENDS and
    /// SETITEMS come before REDUCE), so the class sees them full. Each node
    /// is walked once over the whole load.
    fn prefill(&mut self, roots: &[Id]) -> PyResult<()> {
        let arena = &self.loaded.arena;
        let mut stack: Vec<Id> = roots.to_vec();
        let mut mutable = Vec::new();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut self.walked[id as usize], true) {
                continue;
            }
            if Self::is_mutable(arena.get(id)) {
                mutable.push(id);
            }
            arena.for_each_child(id, |c| stack.push(c));
        }
        for id in mutable {
            let ready = arena
                .children(id)
                .iter()
                .all(|&c| self.objs[c as usize].is_some());
            if ready && !self.filled[id as usize] {
                self.fill(id)?;
            }
        }
        Ok(())
    }

    fn fill(&mut self, id: Id) -> PyResult<()> {
        if std::mem::replace(&mut self.filled[id as usize], true) {
            return Ok(());
        }
        let arena = &self.loaded.arena;
        let obj = self.obj(id)?;
        match arena.get(id) {
            Value::List(items) => {
                let list = obj.downcast::<PyList>()?;
                for o in self.objs_of(items)? {
                    list.append(o)?;
                }
            }
            Value::Set(items) => {
                let set = obj.downcast::<PySet>()?;
                for o in self.objs_of(items)? {
                    set.add(o)?;
                }
            }
            Value::Dict(d) => {
                for &(k, v) in &d.items {
                    obj.set_item(self.obj(k)?, self.obj(v)?)?;
                }
            }
            Value::Array(a) => {
                if let ArrayData::Objects(items) = &a.data {
                    let items = PyList::new(self.py, self.objs_of(items)?)?;
                    self.maker
                        .call_method1("fill_object_array", (&obj, items))?;
                }
            }
            Value::Object(o) => {
                if !o.list_items.is_empty() {
                    let items = PyList::new(self.py, self.objs_of(&o.list_items)?)?;
                    self.maker.call_method1("extend", (&obj, items))?;
                }
                if !o.dict_items.is_empty() {
                    let mut pairs = Vec::with_capacity(o.dict_items.len());
                    for &(k, v) in &o.dict_items {
                        pairs.push((self.obj(k)?, self.obj(v)?));
                    }
                    let pairs = PyList::new(self.py, pairs)?;
                    self.maker.call_method1("set_items", (&obj, pairs))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Instance state and tensor metadata, once every object exists.
    fn finish(&mut self, id: Id) -> PyResult<()> {
        let arena = &self.loaded.arena;
        let obj = self.obj(id)?;
        match arena.get(id) {
            Value::Dict(d) => {
                if let Some(s) = d.state {
                    self.maker
                        .call_method1("set_dict_state", (&obj, self.obj(s)?))?;
                }
            }
            Value::Tensor(t) => {
                if let Some(m) = t.metadata {
                    self.maker
                        .call_method1("tensor_metadata", (&obj, self.obj(m)?))?;
                }
                if let Some(s) = t.state {
                    self.maker
                        .call_method1("set_tensor_state", (&obj, self.obj(s)?))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn run(mut self) -> PyResult<Bound<'py, PyAny>> {
        let arena = &self.loaded.arena;
        // Every object the stream made is built, not only those the result
        // reaches: the unpickler called each class (a `datetime.date` of a
        // bad state that the stream then POPs still fails the load), and
        // only Python's constructor knows what it refuses.
        let roots: Vec<Id> = std::iter::once(self.loaded.root)
            .chain(made_objects(arena))
            .collect();
        let order = arena.reachable_from(&roots);
        for &id in &order {
            let v = arena.get(id);
            if Self::is_mutable(v) {
                let o = self.create_empty(v)?;
                self.objs[id as usize] = Some(o);
            }
        }
        for &id in &order {
            if self.objs[id as usize].is_none() {
                let v = arena.get(id);
                if let Value::Object(o) = v {
                    let roots: Vec<Id> = [o.args, o.kwargs, o.base].into_iter().flatten().collect();
                    self.prefill(&roots)?;
                }
                let o = self.build(v)?;
                self.objs[id as usize] = Some(o);
            }
        }
        // Dicts and sets keyed by allowed objects wait for their states.
        let later = arena.keyed_by_objects(&order);
        for &id in &order {
            if !later[id as usize] {
                self.fill(id)?;
            }
        }
        for &id in &order {
            self.finish(id)?;
        }
        // BUILD runs once an object's state exists, and the state of an
        // object nested in it was built (and BUILT) before: inner objects,
        // made later, get their state first.
        for &id in order.iter().rev() {
            if let Value::Object(o) = arena.get(id) {
                if let Some(s) = o.state {
                    self.maker
                        .call_method1("set_state", (self.obj(id)?, self.obj(s)?))?;
                }
            }
        }
        for &id in &order {
            self.fill(id)?;
        }
        self.obj(self.loaded.root)
    }
}

fn known_name(k: Known) -> String {
    k.qualname()
}

fn build_python<'py>(
    py: Python<'py>,
    loaded: &Loaded<'_>,
    maker: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let b = Builder {
        py,
        loaded,
        maker,
        objs: vec![None; loaded.arena.len()],
        storages: HashMap::new(),
        np_dtypes: HashMap::new(),
        filled: vec![false; loaded.arena.len()],
        walked: vec![false; loaded.arena.len()],
    };
    b.run()
}

/// Scans, evaluates and builds `source` (a path, or the file's bytes).
/// `flavor` is `"torch"` (torch.load: zip and legacy checkpoints only) or
/// `"any"` (also raw pickles, .npy and .npz). Returns `(format, object)`.
///
/// `allow`, when given, has a `permits(name)` method (`hermetic._typed.Allow`):
/// a file refused only for `unknown_import`s is loaded again trusting the
/// names it permits, and the maker rebuilds those classes.
#[pyfunction]
#[pyo3(signature = (source, flavor, maker, allow=None, encoding=None, companions=false))]
fn evaluate<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    flavor: &str,
    maker: &Bound<'py, PyAny>,
    allow: Option<&Bound<'py, PyAny>>,
    encoding: Option<&str>,
    companions: bool,
) -> PyResult<(String, Bound<'py, PyAny>)> {
    let encoding = match encoding {
        None => None,
        Some(e) => Some(Py2Str::from_name(e).ok_or_else(|| {
            PyValueError::new_err(format!(
                "encoding={e:?}: hermetic reads Python 2 strs as 'ASCII', 'utf-8', 'latin1' or 'bytes'"
            ))
        })?),
    };
    let flavor = match flavor {
        "torch" => Flavor::Torch,
        "any" => Flavor::Any,
        other => {
            return Err(PyValueError::new_err(format!(
                "flavor must be 'torch' or 'any', not {other:?}"
            )))
        }
    };
    let policy = Policy::builtin();
    let run = |data: &[u8],
               name: &str,
               beside: Option<&Companions>|
     -> PyResult<(String, Bound<'py, PyAny>)> {
        let mut opts = LoadOptions {
            mode: Mode::Strict,
            flavor,
            policy,
            limits: Limits::default(),
            allowed: Allowed::none(),
            encoding,
            companions: beside,
        };
        let mut report =
            py.allow_threads(|| hermetic_pickle::scan_bytes(data, name, policy, &opts.limits));
        if beside.is_some() {
            admit_companions(&mut report);
        }
        let refused = match (allow, gate(&report, Mode::Strict, Allowed::none())) {
            (Some(_), Err(EvalError::Unsafe(u))) => Some(u),
            _ => None,
        };
        let trusted;
        if let (Some(u), Some(allow)) = (refused, allow) {
            let permits = |name: &str| allow.call_method1("permits", (name,))?.is_truthy();
            match Allowed::from_refusal(&u, permits)? {
                Some(t) => {
                    trusted = t;
                    opts.allowed = &trusted;
                }
                None => return Err(eval_error(py, EvalError::Unsafe(u))),
            }
        }
        let loaded = py
            .allow_threads(|| load_scanned(data, name, &opts, report))
            .map_err(|e| eval_error(py, e))?;
        let obj = build_python(py, &loaded, maker)?;
        Ok((loaded.format.as_str().to_string(), obj))
    };
    if let Ok(b) = source.downcast::<PyBytes>() {
        return run(b.as_bytes(), "<bytes>", None);
    }
    if let Ok(b) = source.downcast::<PyByteArray>() {
        let copy = b.to_vec();
        return run(&copy, "<bytes>", None);
    }
    let path: PathBuf = source.extract()?;
    let name = path.display().to_string();
    let io = |e: std::io::Error| PyErr::from(std::io::Error::new(e.kind(), format!("{name}: {e}")));
    let file = hermetic_pickle::fsio::open_regular(&path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    // joblib.load opens the companion files of old dumps beside the file.
    let beside = companions.then(|| Companions::beside(&path));
    if len == 0 {
        return run(&[], &name, beside.as_ref());
    }
    let map = py.allow_threads(|| map_file(&file)).map_err(io)?;
    run(&map, &name, beside.as_ref())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Class-level defaults of the attributes every raised instance sets.
    let unsafe_type = py.get_type::<UnsafePickleError>();
    unsafe_type.setattr("imports", PyList::empty(py))?;
    unsafe_type.setattr("findings", PyList::empty(py))?;
    unsafe_type.setattr("path", "")?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    // The standard-library classes the evaluator rebuilds without allow=.
    let inert: Vec<String> = hermetic_pickle::policy::INERT_CLASSES
        .iter()
        .map(|(module, name)| format!("{module}:{name}"))
        .collect();
    m.add("INERT_CLASSES", PyTuple::new(py, inert)?)?;
    m.add(
        "TORCH_ENUM_NAMES",
        PyTuple::new(py, hermetic_pickle::eval::TORCH_ENUMS)?,
    )?;
    // torch dtype name -> hermetic dtype code, for the dtypes the format holds:
    // the one table (hermetic._format_codec reads it).
    let codes: Vec<(&str, &str)> = hermetic_pickle::eval::TorchDtype::ALL
        .iter()
        .filter(|d| !d.format_code().is_empty())
        .map(|d| (d.name(), d.format_code()))
        .collect();
    m.add("TORCH_DTYPE_CODES", PyTuple::new(py, codes)?)?;
    Ok(())
}
