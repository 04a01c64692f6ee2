use pyo3::prelude::*;

/// Runs the `hermetic` command line with `argv` (including the program
/// name) and returns its exit status. Output goes to the process's stdout.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.allow_threads(|| hermetic_cli::run(argv) as i32)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    Ok(())
}
