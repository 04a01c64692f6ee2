use pyo3::create_exception;
use pyo3::prelude::*;

create_exception!(
    _hermetic,
    HermeticError,
    pyo3::exceptions::PyException,
    "Base class of every hermetic error."
);
create_exception!(
    _hermetic,
    UnsafePickleError,
    HermeticError,
    "A pickle names globals outside the policy."
);
create_exception!(
    _hermetic,
    PolicyError,
    HermeticError,
    "A policy file could not be read."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HermeticError", py.get_type::<HermeticError>())?;
    m.add("UnsafePickleError", py.get_type::<UnsafePickleError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    Ok(())
}
