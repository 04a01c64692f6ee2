//! `hermetic.save` / `hermetic.load`: the Python side of hermetic-format.
//! `encode` walks Python trees into a plan and streams it out; `decode`
//! builds Python trees from a validated archive. The Python helpers they
//! call (`hermetic._bridge`, declared in `crate::bridge`) only convert single
//! tensors and typed values to and from what Rust handles.

mod decode;
mod encode;

use crate::errors::format_error;
use hermetic_format::{write_file, write_sharded, write_to_vec, Archive, DataFile, WriteOptions};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyComplex, PyFloat, PyInt, PyString, PyTuple};
use std::path::PathBuf;

pub(crate) use decode::PyArchive;

/// Walks `obj` and writes it to `path` (a folder of shards when
/// `max_shard_size` is given).
#[pyfunction]
#[pyo3(signature = (obj, path, metadata, max_shard_size, fsync))]
fn format_save(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    path: PathBuf,
    metadata: Vec<(String, String)>,
    max_shard_size: Option<u64>,
    fsync: bool,
) -> PyResult<()> {
    let mut enc = encode::Encoder::new(py)?;
    let root = enc.walk_root(obj)?;
    let (plan, mut source) = enc.finish(root, metadata)?;
    let opts = WriteOptions { fsync };
    let r = match max_shard_size {
        Some(n) => write_sharded(&path, &plan, &mut source, n, opts).map(|_| ()),
        None => write_file(&path, &plan, &mut source, opts),
    };
    r.map_err(|e| source.take_error().unwrap_or_else(|| format_error(e)))
}

/// Like `format_save`, returning the file's bytes.
#[pyfunction]
fn format_dumps<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    metadata: Vec<(String, String)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut enc = encode::Encoder::new(py)?;
    let root = enc.walk_root(obj)?;
    let (plan, mut source) = enc.finish(root, metadata)?;
    let bytes = write_to_vec(&plan, &mut source)
        .map_err(|e| source.take_error().unwrap_or_else(|| format_error(e)))?;
    Ok(PyBytes::new(py, &bytes))
}

/// Opens and validates a file, a sharded folder or an index file.
#[pyfunction]
fn format_open(py: Python<'_>, path: PathBuf) -> PyResult<PyArchive> {
    let ar = py
        .allow_threads(|| Archive::open(&path))
        .map_err(format_error)?;
    Ok(PyArchive::new(ar))
}

/// `hermetic.loads`' private copy of its input, read where it lies instead
/// of copied once more (issue #16: no input held more than once). The
/// tensors `loads` returns are views of the same bytearray.
struct Private {
    ptr: *const u8,
    len: usize,
    _owner: Py<PyByteArray>,
}

// SAFETY: `ptr` is only read, and the bytearray it points into is kept alive
// by `_owner`; see `as_ref` for why it is neither freed nor moved meanwhile.
#[allow(unsafe_code)]
unsafe impl Send for Private {}
// SAFETY: as for Send: shared access only ever reads.
#[allow(unsafe_code)]
unsafe impl Sync for Private {}

impl AsRef<[u8]> for Private {
    #[allow(unsafe_code)]
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr..ptr+len` was the bytearray's buffer when it was
        // opened, and stays so: `_owner` keeps the object alive, and its
        // buffer moves only if the bytearray is resized. `loads` makes the
        // bytearray and hands it to nothing but this archive and its tensor
        // maker, which only make views of it, so no code can resize it. The
        // views may write to the bytes, but only once `loads` has returned
        // them, when no call reads this archive any more.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Validates an in-memory file: a `bytearray` that `hermetic.loads` owns,
/// read in place (tensors are made from the same buffer), or `bytes`, which
/// are immutable and copied.
#[pyfunction]
fn format_open_buffer(data: &Bound<'_, PyAny>) -> PyResult<PyArchive> {
    let bytes: Box<dyn AsRef<[u8]> + Send + Sync> = if let Ok(b) = data.downcast::<PyBytes>() {
        Box::new(b.as_bytes().to_vec())
    } else {
        let b = data.downcast::<PyByteArray>()?;
        Box::new(Private {
            ptr: b.data(),
            len: b.len(),
            _owner: b.clone().unbind(),
        })
    };
    let file = DataFile::from_bytes("<bytes>", bytes).map_err(format_error)?;
    let ar = Archive::from_file(PathBuf::from("<bytes>"), file).map_err(format_error)?;
    Ok(PyArchive::new(ar))
}

/// Raises `hermetic._structure.Mismatch(expected, describe(found))`.
fn mismatch(py: Python<'_>, expected: &str, found: &Bound<'_, PyAny>) -> PyErr {
    let made = py.import("hermetic._structure").and_then(|m| {
        let described = m.getattr("describe")?.call1((found,))?;
        m.getattr("Mismatch")?.call1((expected, described))
    });
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// Whether `t` is exactly one of the builtin scalar classes.
fn is_builtin_scalar(t: &Bound<'_, PyAny>) -> bool {
    let py = t.py();
    [
        py.get_type::<PyInt>(),
        py.get_type::<PyString>(),
        py.get_type::<PyBool>(),
        py.get_type::<PyBytes>(),
        py.get_type::<PyComplex>(),
        py.get_type::<PyFloat>(),
    ]
    .iter()
    .any(|b| t.is(b))
}

/// Subclasses of the scalar classes (IntEnum, StrEnum, `class E(str, Enum)`)
/// reach these hooks through cattrs' class dispatch; they go to Python.
fn subclass<'py>(o: Bound<'py, PyAny>, t: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    o.py()
        .import("hermetic._structure")?
        .getattr("structure_subclass")?
        .call1((o, t))
}

/// The structuring hook for `str`, `int`, `bool`, `bytes` and `complex`
/// under `type=`: the value itself if its class is exactly `t`.
#[pyfunction]
fn structure_exact<'py>(
    o: Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    if o.get_type().is(t) {
        return Ok(o);
    }
    if !is_builtin_scalar(t) {
        return subclass(o, t);
    }
    let name: String = t.getattr("__name__")?.extract()?;
    Err(mismatch(o.py(), &name, &o))
}

/// The structuring hook for `float`: floats as they are, ints widened.
#[pyfunction]
fn structure_float<'py>(
    o: Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    if !t.is(o.py().get_type::<PyFloat>()) {
        return subclass(o, t);
    }
    if o.is_exact_instance_of::<PyFloat>() {
        return Ok(o);
    }
    if o.is_exact_instance_of::<PyInt>() {
        return match o.extract::<f64>() {
            Ok(x) => Ok(PyFloat::new(o.py(), x).into_any()),
            Err(_) => Err(mismatch(o.py(), "float (an int too large for a float)", &o)),
        };
    }
    Err(mismatch(o.py(), "float", &o))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(structure_exact, m)?)?;
    m.add_function(wrap_pyfunction!(structure_float, m)?)?;
    m.add_class::<PyArchive>()?;
    m.add_function(wrap_pyfunction!(format_save, m)?)?;
    m.add_function(wrap_pyfunction!(format_dumps, m)?)?;
    m.add_function(wrap_pyfunction!(format_open, m)?)?;
    m.add_function(wrap_pyfunction!(format_open_buffer, m)?)?;
    // The closed table `$torch_dtype` names resolve through (docs/SPEC.md, 6.2).
    m.add(
        "TORCH_DTYPE_NAMES",
        PyTuple::new(m.py(), hermetic_format::TORCH_DTYPE_NAMES)?,
    )?;
    m.add(
        "NUMPY_DTYPE_CODES",
        PyTuple::new(m.py(), hermetic_format::NUMPY_CODES)?,
    )?;
    Ok(())
}
