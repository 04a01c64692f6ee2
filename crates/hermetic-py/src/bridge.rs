//! The doors from Rust into Python code of our own: the functions of
//! `hermetic._bridge` (imported once; its `__all__` is the one list of
//! them) and the methods of `hermetic._evaluate.Maker` declared here.
//! `tests/test_bridge.py` checks both against every call in this crate, so
//! a renamed helper fails a test, not a user's load.

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyModule, PyTuple};

/// The methods of `hermetic._evaluate.Maker` the evaluator's builder calls.
pub(crate) const MAKER: &[&str] = &[
    "big_int",
    "counter",
    "extend",
    "fill_object_array",
    "foreign",
    "instance",
    "known",
    "meta_tensor",
    "np_array",
    "np_dtype",
    "np_object_array",
    "np_scalar",
    "ordered_dict",
    "range",
    "set_dict_state",
    "set_items",
    "set_state",
    "set_tensor_state",
    "slice",
    "storage",
    "storage_view",
    "tensor",
    "tensor_metadata",
    "torch_attr",
    "torch_device",
    "torch_size",
    "typed_storage",
];

static MODULE: GILOnceCell<Py<PyModule>> = GILOnceCell::new();

/// `hermetic._bridge`, imported on first use.
pub(crate) fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    MODULE
        .get_or_try_init(py, || py.import("hermetic._bridge").map(Bound::unbind))
        .map(|m| m.bind(py).clone())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BRIDGE_MAKER", PyTuple::new(m.py(), MAKER)?)?;
    Ok(())
}
