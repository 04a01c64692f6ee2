//! The `hermetic._hermetic` extension module. Each topic lives in its own file
//! and only converts types, releases the GIL around real work and maps errors.

mod cli;
mod dis;
mod errors;
mod evaluate;
mod firewall;
mod format;
mod scan;

use pyo3::prelude::*;

#[pymodule]
fn _hermetic(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    scan::register(m)?;
    format::register(m)?;
    cli::register(m)?;
    dis::register(m)?;
    evaluate::register(m)?;
    firewall::register(m)?;
    Ok(())
}
