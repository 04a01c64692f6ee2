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
use pyo3::types::{PyBool, PyBytes, PyComplex, PyFloat, PyInt, PyString, PyTuple};
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

/// Validates an in-memory file (`bytes` or `bytearray`). The archive keeps
/// its own copy for checks and digests; tensors are made from the caller's
/// buffer.
#[pyfunction]
fn format_open_buffer(data: &Bound<'_, PyAny>) -> PyResult<PyArchive> {
    let bytes = if let Ok(b) = data.downcast::<PyBytes>() {
        b.as_bytes().to_vec()
    } else {
        data.downcast::<pyo3::types::PyByteArray>()?.to_vec()
    };
    let file = DataFile::from_bytes("<bytes>", Box::new(bytes)).map_err(format_error)?;
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
