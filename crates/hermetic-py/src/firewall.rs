//! The pickle firewall's Rust half, for `hermetic.firewall`: manifests,
//! decisions, refusal messages, blob extents and ids, and scanner summaries.
//! Conversion glue only; the logic lives in `hermetic-manifest`.

use crate::errors::manifest_error;
use hermetic_manifest::{
    first_blob, joblib_span, stream_extent, Action, BlobId, Extent, Judgement, LoadContext,
    Manifest, Mode, Query, ScanSummary,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Blobs at least this large are hashed with the GIL released.
const RELEASE_GIL_AT: usize = 64 * 1024;

fn manifest_err(e: hermetic_manifest::ManifestError) -> PyErr {
    manifest_error(e)
}

fn value_err(e: hermetic_manifest::ManifestError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn mode(text: &str) -> PyResult<Mode> {
    text.parse().map_err(value_err)
}

fn blob(text: &str) -> PyResult<BlobId> {
    BlobId::parse(text).map_err(value_err)
}

/// A parsed, validated manifest.
#[pyclass(name = "Manifest", module = "hermetic._hermetic", frozen)]
pub struct PyManifest {
    inner: Manifest,
}

#[pymethods]
impl PyManifest {
    /// Reads and validates a manifest file.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py
            .allow_threads(|| Manifest::from_file(&path))
            .map_err(manifest_err)?;
        Ok(PyManifest { inner })
    }

    /// Parses manifest text; `path` only names it in messages.
    #[staticmethod]
    #[pyo3(signature = (text, path=None))]
    fn from_toml(text: &str, path: Option<PathBuf>) -> PyResult<Self> {
        let mut inner = Manifest::from_toml(text).map_err(manifest_err)?;
        inner.path = path;
        Ok(PyManifest { inner })
    }

    /// The manifest in force when none is given: the built-in rules only.
    #[staticmethod]
    fn default() -> Self {
        PyManifest {
            inner: Manifest::default(),
        }
    }

    #[getter]
    fn path(&self) -> Option<String> {
        self.inner.path.as_ref().map(|p| p.display().to_string())
    }

    /// `"refuse"` or `"safe"`.
    #[getter]
    fn unlisted(&self) -> &'static str {
        self.inner.unlisted.as_str()
    }

    /// The `allow` entries the safe evaluator may rebuild (unlisted = "safe").
    #[getter]
    fn allow(&self) -> Vec<String> {
        self.inner.allow.clone()
    }

    /// The number of listed blobs.
    fn __len__(&self) -> usize {
        self.inner.blobs.len()
    }

    /// Whether frames of `module` belong to the loading machinery.
    fn is_loader(&self, module: &str) -> bool {
        self.inner.is_loader_module(module)
    }

    /// The call site among `frames` (innermost first, `module:qualname`).
    fn call_site(&self, frames: Vec<String>) -> Option<String> {
        self.inner.call_site(&frames).map(str::to_string)
    }

    /// Whether deciding on `blob_id` in `mode` needs the call stack.
    fn needs_frames(&self, mode_name: &str, blob_id: &str) -> PyResult<bool> {
        Ok(self.inner.needs_frames(mode(mode_name)?, &blob(blob_id)?))
    }

    /// Decides one load of `data` (the exact bytes the unpickler reads) in
    /// one call: the blob id (hashed here unless given), the call stack
    /// (`stack()`, a Python callable returning `(frames, location)`, called
    /// only when the decision needs it or `frames` asks for it), and the
    /// judgement and action, as a `Decision` whose scanner summary is
    /// computed at most once, on first use. `None` when the load is simply
    /// allowed and `frames` (recording) asks for no record: the hot path
    /// makes no object.
    #[pyo3(signature = (mode_name, data, blob_id=None, stack=None, frames=false))]
    fn decide_blob(
        &self,
        py: Python<'_>,
        mode_name: &str,
        data: &Bound<'_, PyBytes>,
        blob_id: Option<&str>,
        stack: Option<&Bound<'_, PyAny>>,
        frames: bool,
    ) -> PyResult<Option<PyDecision>> {
        let m = mode(mode_name)?;
        let bytes = data.as_bytes();
        let id = match blob_id {
            Some(text) => blob(text)?,
            None if bytes.len() >= RELEASE_GIL_AT => py.allow_threads(|| BlobId::of(bytes)),
            None => BlobId::of(bytes),
        };
        let record = frames;
        let (frames, location) = match stack {
            Some(f) if frames || self.inner.needs_frames(m, &id) => {
                let (frames, location): (Vec<String>, Option<String>) = f.call0()?.extract()?;
                (Some(frames), location)
            }
            _ => (None, None),
        };
        let size = bytes.len() as u64;
        let q = Query {
            blob: &id,
            size,
            frames: frames.as_deref(),
        };
        let (j, a) = self.inner.decide(m, &q);
        if a == Action::Allow && !record {
            return Ok(None);
        }
        Ok(Some(PyDecision {
            blob_id: id.to_string(),
            size,
            judgement: j.label(),
            rule: match j {
                Judgement::Rule(name) => Some(name),
                _ => None,
            },
            action: a.as_str(),
            frames,
            location,
            data: data.clone().unbind(),
            summary: OnceLock::new(),
        }))
    }

    /// Decides one load: returns `(judgement, action)`, where judgement is
    /// `listed`, `rule:<name>`, `unlisted`, `caller-mismatch`,
    /// `size-mismatch` or `denied`, and action is `allow`, `evaluate`,
    /// `refuse` or `warn`.
    #[pyo3(signature = (mode_name, blob_id, size, frames=None))]
    fn decide(
        &self,
        mode_name: &str,
        blob_id: &str,
        size: u64,
        frames: Option<Vec<String>>,
    ) -> PyResult<(String, &'static str)> {
        let id = blob(blob_id)?;
        let q = Query {
            blob: &id,
            size,
            frames: frames.as_deref(),
        };
        let (j, a) = self.inner.decide(mode(mode_name)?, &q);
        Ok((j.label(), a.as_str()))
    }

    /// The teaching message for a refused (or warned) load: returns
    /// `(message, manifest_line, call_site)`.
    #[pyo3(signature = (mode_name, blob_id, size, frames, file=None, location=None, entry_point=None, scanner=None))]
    #[allow(clippy::too_many_arguments)]
    fn refusal(
        &self,
        mode_name: &str,
        blob_id: &str,
        size: u64,
        frames: Vec<String>,
        file: Option<&str>,
        location: Option<&str>,
        entry_point: Option<&str>,
        scanner: Option<&str>,
    ) -> PyResult<(String, String, Option<String>)> {
        let m = mode(mode_name)?;
        let id = blob(blob_id)?;
        let q = Query {
            blob: &id,
            size,
            frames: Some(&frames),
        };
        let why = match self.inner.judge(m, &q) {
            Judgement::Unlisted(why) => why,
            // Allowed by the manifest but refused for another reason (the
            // evaluator): explain it as unlisted so the line still helps.
            _ => hermetic_manifest::Why::NotListed,
        };
        let r = self.inner.refusal(
            m,
            &q,
            &why,
            &LoadContext {
                file,
                location,
                entry_point,
                scanner,
            },
        );
        Ok((r.message, r.manifest_line, r.call_site))
    }
}

type Summary = (String, Vec<String>, Vec<String>, String);

/// A summary as Python gets it, finding codes as their strings.
fn summary_tuple(s: ScanSummary) -> Summary {
    let findings = s.findings.iter().map(|c| c.as_str().to_string()).collect();
    (s.verdict, s.imports, findings, s.text)
}

/// One load, decided (`Manifest.decide_blob`).
#[pyclass(name = "Decision", module = "hermetic._hermetic", frozen)]
pub struct PyDecision {
    #[pyo3(get)]
    blob_id: String,
    #[pyo3(get)]
    size: u64,
    /// What inventories record: `listed`, `rule:<name>`, `unlisted`,
    /// `caller-mismatch`, `size-mismatch` or `denied`.
    #[pyo3(get)]
    judgement: String,
    /// The call-site rule that allowed the load, if one did.
    #[pyo3(get)]
    rule: Option<String>,
    /// `allow`, `evaluate`, `refuse` or `warn`.
    #[pyo3(get)]
    action: &'static str,
    /// The frames `stack()` gave, if the decision asked for them.
    #[pyo3(get)]
    frames: Option<Vec<String>>,
    #[pyo3(get)]
    location: Option<String>,
    data: Py<PyBytes>,
    summary: OnceLock<Summary>,
}

#[pymethods]
impl PyDecision {
    /// The scanner's `(verdict, imports, findings, text)` for the blob,
    /// scanned on the first call only.
    fn scan(&self, py: Python<'_>) -> Summary {
        if let Some(s) = self.summary.get() {
            return s.clone();
        }
        let bytes = self.data.bind(py).as_bytes();
        let s = py.allow_threads(|| ScanSummary::of_blob(bytes));
        self.summary.get_or_init(|| summary_tuple(s)).clone()
    }
}

/// Where the first pickle stream in `data` ends: `(status, end)` with status
/// 0 (complete, `end` just past STOP), 1 (needs more bytes) or 2 (malformed).
#[pyfunction]
fn stream_extent_of(py: Python<'_>, data: &Bound<'_, PyBytes>) -> (u8, usize) {
    let bytes = data.as_bytes();
    let ext = if bytes.len() >= RELEASE_GIL_AT {
        py.allow_threads(|| stream_extent(bytes))
    } else {
        stream_extent(bytes)
    };
    match ext {
        Extent::Complete(end) => (0, end),
        Extent::NeedMore => (1, bytes.len()),
        Extent::Malformed => (2, bytes.len()),
    }
}

/// The blob an unpickler reading `data` would consume: `(end, blob_id)`,
/// the first stream through STOP, or all of `data` when it is malformed or
/// truncated.
#[pyfunction]
fn first_blob_of(py: Python<'_>, data: &Bound<'_, PyBytes>) -> (usize, String) {
    let bytes = data.as_bytes();
    let (end, id) = if bytes.len() >= RELEASE_GIL_AT {
        py.allow_threads(|| first_blob(bytes))
    } else {
        first_blob(bytes)
    };
    (end, id.to_string())
}

/// For bytes a joblib unpickler reads: `(is_joblib, span_end)`, where
/// `span_end` is where the dump (opcodes and inline arrays) ends, or `None`
/// while that cannot be told (more bytes needed).
#[pyfunction]
fn joblib_span_of(py: Python<'_>, data: &Bound<'_, PyBytes>) -> (bool, Option<usize>) {
    let bytes = data.as_bytes();
    match py.allow_threads(|| joblib_span(bytes)) {
        None => (false, None),
        Some(end) => (true, end),
    }
}

/// Validates a blob id and returns its canonical text.
#[pyfunction]
fn check_blob_id(text: &str) -> PyResult<String> {
    Ok(blob(text)?.to_string())
}

/// The scanner's summary of a blob, the exact bytes an unpickler reads:
/// `(verdict, imports, findings, text)`.
#[pyfunction]
fn scan_summary(py: Python<'_>, data: &Bound<'_, PyBytes>) -> Summary {
    let bytes = data.as_bytes();
    summary_tuple(py.allow_threads(|| ScanSummary::of_blob(bytes)))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyManifest>()?;
    m.add_class::<PyDecision>()?;
    m.add_function(wrap_pyfunction!(stream_extent_of, m)?)?;
    m.add_function(wrap_pyfunction!(first_blob_of, m)?)?;
    m.add_function(wrap_pyfunction!(check_blob_id, m)?)?;
    m.add_function(wrap_pyfunction!(joblib_span_of, m)?)?;
    m.add_function(wrap_pyfunction!(scan_summary, m)?)?;
    Ok(())
}
