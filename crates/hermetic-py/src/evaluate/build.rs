//! One node of the value graph as a Python object: containers made empty
//! first (so cycles close), values, and numpy dtypes as the maker's specs.

use super::*;

impl<'py> Builder<'_, '_, 'py> {
    /// Whether a node is created empty first and filled after everything
    /// else exists (so cycles through it can be built).
    pub(super) fn is_mutable(v: &Value<'_>) -> bool {
        match v {
            Value::List(_) | Value::Set(_) | Value::Dict(_) => true,
            Value::Array(a) => matches!(a.data, ArrayData::Objects(_)),
            _ => false,
        }
    }

    pub(super) fn create_empty(&mut self, v: &Value<'_>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        Ok(match v {
            Value::List(_) => PyList::empty(py).into_any(),
            Value::Set(_) => PySet::empty(py)?.into_any(),
            Value::Dict(d) => match d.kind {
                DictKind::Dict => PyDict::new(py).into_any(),
                DictKind::OrderedDict => self.maker.call_method0("ordered_dict")?,
                DictKind::Counter => self.maker.call_method0("counter")?,
            },
            Value::Array(a) => {
                let dt = self.np_dtype(&a.dtype)?;
                self.maker
                    .call_method1("np_object_array", (dt, a.shape.clone(), a.fortran))?
            }
            other => {
                return Err(CheckpointError::new_err(format!(
                    "{}: {} is not created empty",
                    self.loaded.file,
                    other.describe()
                )))
            }
        })
    }

    pub(super) fn build(&mut self, v: &Value<'_>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let file = &self.loaded.file;
        Ok(match v {
            Value::None => py.None().into_bound(py),
            Value::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
            Value::Int(i) => i.into_pyobject(py)?.into_any(),
            Value::BigInt(b) => self.maker.call_method1("big_int", (PyBytes::new(py, b),))?,
            Value::Float(f) => f.into_pyobject(py)?.into_any(),
            Value::Complex(re, im) => PyComplex::from_doubles(py, *re, *im).into_any(),
            Value::Str(s) => match s.as_str() {
                Some(t) => PyString::new(py, t).into_any(),
                None => {
                    PyBytes::new(py, &s.bytes).call_method1("decode", ("utf-8", "surrogatepass"))?
                }
            },
            Value::Bytes(b) => PyBytes::new(py, b).into_any(),
            Value::ByteArray(b) => PyByteArray::new(py, b).into_any(),
            Value::Tuple(items) => PyTuple::new(py, self.objs_of(items)?)?.into_any(),
            Value::FrozenSet(items) => PyFrozenSet::new(py, self.objs_of(items)?)?.into_any(),
            Value::Slice(s) => {
                let parts = self.objs_of(s)?;
                self.maker.call_method1("slice", PyTuple::new(py, parts)?)?
            }
            Value::Range(r) => {
                let parts = self.objs_of(r)?;
                self.maker.call_method1("range", PyTuple::new(py, parts)?)?
            }
            Value::Global(g) => match &**g {
                Global::Known(k) => self.maker.call_method1("known", (known_name(*k),))?,
                // Only globals the caller's allow= trusts reach here; the
                // maker resolves them against that list again.
                Global::Foreign { module, name } => {
                    self.maker.call_method1("foreign", (module, name))?
                }
            },
            Value::TorchDtype(d) => self.maker.call_method1("torch_attr", (d.name(),))?,
            Value::TorchEnum(n) => self.maker.call_method1("torch_attr", (*n,))?,
            Value::TorchSize(d) => self.maker.call_method1("torch_size", (d.clone(),))?,
            Value::TorchDevice(d) => self.maker.call_method1("torch_device", (&**d,))?,
            Value::Storage(s) => {
                let st = self.storage(s)?;
                self.maker
                    .call_method1("typed_storage", (st, s.dtype.name()))?
            }
            Value::Tensor(t) => match &t.storage {
                Some(view) => {
                    let st = self.storage(view)?;
                    self.maker.call_method1(
                        "tensor",
                        (
                            st,
                            t.dtype.name(),
                            t.offset,
                            PyTuple::new(py, &t.shape)?,
                            PyTuple::new(py, &t.stride)?,
                            t.requires_grad,
                            t.parameter,
                        ),
                    )?
                }
                None => self.maker.call_method1(
                    "meta_tensor",
                    (
                        t.dtype.name(),
                        PyTuple::new(py, &t.shape)?,
                        PyTuple::new(py, &t.stride)?,
                        t.requires_grad,
                        t.parameter,
                    ),
                )?,
            },
            Value::Array(a) => {
                let dt = self.np_dtype(&a.dtype)?;
                let ArrayData::Bytes(b) = &a.data else {
                    return Err(CheckpointError::new_err(format!(
                        "{file}: a numpy array never received its state"
                    )));
                };
                self.maker.call_method1(
                    "np_array",
                    (
                        dt,
                        a.shape.clone(),
                        a.fortran,
                        PyByteArray::new(py, b),
                        a.readonly,
                    ),
                )?
            }
            Value::NpDtype(d) => self.np_dtype(d)?,
            Value::NpScalar(s) => {
                let dt = self.np_dtype(&s.dtype)?;
                self.maker
                    .call_method1("np_scalar", (dt, PyBytes::new(py, &s.data)))?
            }
            Value::Object(o) => {
                let opt = |id: Option<Id>| -> PyResult<Bound<'py, PyAny>> {
                    match id {
                        Some(i) => self.obj(i),
                        None => Ok(py.None().into_bound(py)),
                    }
                };
                let made = match o.made {
                    Made::Call => "call",
                    Made::New => "new",
                    Made::Reconstructor => "reconstructor",
                };
                self.maker.call_method1(
                    "instance",
                    (
                        self.obj(o.class)?,
                        made,
                        opt(o.args)?,
                        opt(o.kwargs)?,
                        opt(o.base)?,
                    ),
                )?
            }
            Value::List(_) | Value::Set(_) | Value::Dict(_) => {
                return Err(CheckpointError::new_err(format!(
                    "{file}: {} is built empty and filled",
                    v.describe()
                )))
            }
        })
    }
}

pub(super) fn dtype_spec<'py>(py: Python<'py>, d: &NpDtype) -> PyResult<Bound<'py, PyAny>> {
    Ok(match d {
        NpDtype::Scalar { .. } => PyString::new(py, &d.descr()).into_any(),
        NpDtype::Record {
            fields,
            itemsize,
            aligned,
        } => {
            let fs: Vec<Bound<'py, PyAny>> = fields
                .iter()
                .map(|f| {
                    Ok(PyTuple::new(
                        py,
                        [
                            PyString::new(py, &f.name).into_any(),
                            dtype_spec(py, &f.dtype)?,
                            f.offset.into_pyobject(py)?.into_any(),
                            match &f.title {
                                Some(t) => PyString::new(py, t).into_any(),
                                None => py.None().into_bound(py),
                            },
                        ],
                    )?
                    .into_any())
                })
                .collect::<PyResult<_>>()?;
            ("record", PyList::new(py, fs)?, *itemsize, *aligned)
                .into_pyobject(py)?
                .into_any()
        }
        NpDtype::SubArray { base, shape } => ("subarray", dtype_spec(py, base)?, shape.clone())
            .into_pyobject(py)?
            .into_any(),
    })
}
