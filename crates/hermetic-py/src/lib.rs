//! The `hermetic._hermetic` extension module. Each topic lives in its own file
//! and only converts types, releases the GIL around real work and maps errors.

mod bridge;
mod cli;
mod dis;
mod errors;
mod evaluate;
mod firewall;
mod format;
mod scan;

use pyo3::prelude::*;

// Header and tree decoding allocate many small strings; mimalloc roughly
// halves what that costs next to the system allocator (pydantic-core ships
// its extension the same way). Only Rust allocations go through it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _hermetic(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    bridge::register(m)?;
    scan::register(m)?;
    format::register(m)?;
    cli::register(m)?;
    dis::register(m)?;
    evaluate::register(m)?;
    firewall::register(m)?;
    Ok(())
}
