//! The safe evaluator: runs the pickle machine for real, over a value graph
//! in which only allowlisted globals have a meaning.
//!
//! Loading a file takes two steps. First the file is scanned exactly as
//! `hermetic scan` scans it ([`crate::scan_bytes`]); anything outside the
//! data allowlist (or an ambiguous container) refuses the whole file with
//! an [`EvalError::Unsafe`] that lists *every* offending `module.name`, so
//! the error is complete even when the first offender would have stopped
//! evaluation. Then the container is read and its pickles are evaluated
//! into an [`Arena`]: torch tensors become [`Tensor`] views of storages the
//! container holds (never copied here), numpy arrays keep their bytes
//! borrowed from the file where they can, and containers hold ids, so
//! shared objects stay shared and cycles are plain edges.
//!
//! Nothing is imported or called, in any mode. In the opaque modes
//! ([`Mode::Salvage`], [`Mode::Inspect`]) a foreign class becomes an
//! [`Object`] record of what would have been called with what, and the
//! state it would have received.

mod bytes;
mod calls;
mod checkpoint;
mod error;
mod heap;
mod machine;
mod numpy;
mod torch;
mod value;

pub use bytes::byteswap;
pub use calls::TORCH_ENUMS;
pub use checkpoint::{Format, Loaded, Storage, StorageData};
pub use error::{Budget, EvalError, Offender, Unsafe};
pub use heap::Py2Str;
pub use machine::made_objects;
pub use numpy::{array_nbytes, parse_typestr};
pub use torch::check_extent;
pub use value::{
    Arena, ArrayData, ByteOrder, Dict, DictKind, Global, Id, Known, Made, NdArray, NpDtype,
    NpField, NpScalar, Object, StorageView, Str, Tensor, TorchDtype, Value, FALSE, NONE, TRUE,
};

use crate::codes::FindingCode;
use crate::policy::{Policy, Verdict};
use crate::report::FileReport;
use crate::Limits;

/// What may be evaluated, and how foreign globals are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Data only: the file must scan `safe`; nothing foreign exists.
    Strict,
    /// `convert --salvage`: foreign classes (a pickled model) become opaque
    /// records; files with dangerous findings are still refused.
    Salvage,
    /// `inspect`: any import is shown as an opaque record; only ambiguous
    /// containers and broken streams are refused.
    Inspect,
}

/// Which loader's behaviour to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `torch.load`: only PyTorch zip and legacy checkpoints; Python 2
    /// strings decode as UTF-8.
    Torch,
    /// `pickle.load` / `np.load`: raw pickles, `.npy`, `.npz` (and torch
    /// checkpoints, read as torch would).
    Any,
}

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions<'p> {
    pub mode: Mode,
    pub flavor: Flavor,
    pub policy: &'p Policy,
    pub limits: Limits,
    /// Foreign globals the caller trusts (`allow=`); see [`Allowed`].
    pub allowed: &'p Allowed,
    /// `encoding=` for Python 2 strs; `None` is the flavor's loader's default.
    pub encoding: Option<Py2Str>,
    /// The folder of the file being loaded, for joblib < 0.10 dumps whose
    /// arrays are companion files beside it; `None` refuses such dumps.
    pub companions: Option<&'p Companions>,
}

/// Where a joblib < 0.10 dump keeps its arrays: `NDArrayWrapper` and
/// `ZNDArrayWrapper` name files that `joblib.load` opens beside the dump
/// (`<dump>_01.npy`, `<dump>_01.npy.z`). Only plain names in that folder
/// are read (joblib writes no others; it would follow `../` or an absolute
/// path, which is refused here), and only numeric arrays: joblib's
/// `np.load(allow_pickle=True)` of an object companion would unpickle it.
#[derive(Clone, Debug)]
pub struct Companions {
    dir: std::path::PathBuf,
}

impl Companions {
    /// The companions of the dump at `path`.
    pub fn beside(path: &std::path::Path) -> Self {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        Companions { dir }
    }

    /// The bytes of the companion `name`, at most `max` of them.
    pub(crate) fn read(&self, name: &str, max: u64) -> Result<Vec<u8>, String> {
        use std::io::Read;
        let plain =
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(format!(
                "the companion file name {name:?} is not a plain file name beside the dump"
            ));
        }
        let path = self.dir.join(name);
        let shown = path.display();
        let file = crate::fsio::open_regular(&path).map_err(|e| format!("{shown}: {e}"))?;
        let len = file.metadata().map_err(|e| format!("{shown}: {e}"))?.len();
        if len > max {
            return Err(format!(
                "{shown}: {len} bytes, more than the {max} this load may still use"
            ));
        }
        let mut out = Vec::with_capacity(len as usize);
        file.take(max.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| format!("{shown}: {e}"))?;
        if out.len() as u64 > max {
            return Err(format!("{shown}: grew past {max} bytes while read"));
        }
        Ok(out)
    }
}

/// Removes the findings that stand for joblib's old array placeholders
/// from a scan, for a load that reads their companions itself (and refuses
/// any that is not a numeric array).
pub fn admit_companions(report: &mut FileReport) {
    for s in &mut report.streams {
        s.findings
            .retain(|f| f.code != FindingCode::JoblibArrayWrapper);
        s.rejudge();
    }
}

/// Foreign globals the caller trusts, by the exact `module:name` the file
/// uses. In [`Mode::Strict`] a file that imports only data constructors and
/// these loads: each allowed global becomes an inert [`Global::Foreign`] and
/// each object made from one an [`Object`] record, which the caller (not
/// this crate) rebuilds from its own allowlist. Matching is exact, never a
/// pattern, so a name in the file cannot widen what the caller listed; a
/// dangerous import is refused whatever this set holds.
#[derive(Clone, Debug, Default)]
pub struct Allowed {
    names: std::collections::HashSet<String>,
    /// The caller passed an allow list (possibly empty): copyreg's wrappers
    /// are then permitted around classes that are trusted anyway.
    active: bool,
}

/// The helpers protocols 0-2 wrap an object's creation in. They call only
/// their first argument (checked when they are called: an allowed class),
/// so a file that uses them needs no allow entry of its own for them.
const FORWARDERS: &[(&str, &str)] = &[
    ("copyreg", "_reconstructor"),
    ("copyreg", "__newobj__"),
    ("copyreg", "__newobj_ex__"),
    ("builtins", "object"),
];

/// Globals no `allow=` trusts. `torch.storage._load_from_bytes` unpickles
/// bytes from the file with a real unpickler (`torch.load(weights_only=False)`),
/// so trusting it trusts everything. joblib's array wrappers are placeholders
/// whose meaning is joblib's reading of the bytes after them: rebuilt as
/// plain objects they would silently stand where arrays belong.
const NEVER_TRUSTED: &[(&str, &str)] = &[
    ("torch.storage", "_load_from_bytes"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("joblib.numpy_pickle", "NDArrayWrapper"),
    ("joblib.numpy_pickle", "ZNDArrayWrapper"),
    ("joblib.numpy_pickle_compat", "NDArrayWrapper"),
    ("joblib.numpy_pickle_compat", "ZNDArrayWrapper"),
];

impl Allowed {
    /// Nothing foreign is trusted.
    pub fn none() -> &'static Allowed {
        static NONE: std::sync::OnceLock<Allowed> = std::sync::OnceLock::new();
        NONE.get_or_init(Allowed::default)
    }

    /// Trusts each `module:name` (an empty list still admits copyreg's
    /// wrappers around the standard-library classes the evaluator rebuilds).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Allowed {
            names: names.into_iter().map(Into::into).collect(),
            active: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.active
    }

    /// Whether the resolved global `module.name` may appear in the file.
    pub fn permits(&self, module: &str, name: &str) -> bool {
        if !self.active || !Self::trustable(module, name) {
            return false;
        }
        FORWARDERS.contains(&(module, name)) || self.names.contains(&format!("{module}:{name}"))
    }

    /// A forwarder that [`Allowed::permits`] lets in for every allow list.
    pub fn is_forwarder(module: &str, name: &str) -> bool {
        FORWARDERS.contains(&(module, name))
    }

    /// What a caller's allow list trusts of a refused file: among the
    /// `unknown_import`s the refusal names, those `permits` (the caller's
    /// list, given `module:name`) accepts. `None` when that leaves every
    /// offender standing, so the refusal stands as it is.
    pub fn from_refusal<E>(
        refusal: &Unsafe,
        mut permits: impl FnMut(&str) -> Result<bool, E>,
    ) -> Result<Option<Allowed>, E> {
        let mut names = Vec::new();
        for o in &refusal.offenders {
            if o.code == FindingCode::UnknownImport && !o.global.is_empty() && permits(&o.global)? {
                names.push(o.global.clone());
            }
        }
        let trusted = Allowed::new(names);
        let any = refusal.offenders.iter().any(|o| {
            o.global
                .split_once(':')
                .is_some_and(|(m, n)| trusted.permits(m, n))
        });
        Ok(any.then_some(trusted))
    }

    /// Whether an `allow=` entry can ever trust the global.
    pub fn trustable(module: &str, name: &str) -> bool {
        !NEVER_TRUSTED.contains(&(module, name))
    }

    /// Whether a finding of the scan does not stop a load trusting `self`:
    /// an unknown class or function it lists, or `builtins.object`, which
    /// the scanner counts as dangerous but which is inert as a base or value
    /// (the evaluator never calls it).
    fn covers(&self, f: &crate::report::Finding) -> bool {
        let object = f.module == "builtins" && f.name == "object";
        (f.code == FindingCode::UnknownImport || object) && self.permits(&f.module, &f.name)
    }
}

/// An allow list in hermetic's syntax, for callers that trust names without
/// importing anything (`hermetic convert --allow`): `module:qualname`
/// exactly, or `module:*` for what that module itself names (never its
/// submodules: `pkg:*` does not cover `pkg.sub:X`). The Python front matches
/// the same syntax against the objects it resolves.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    exact: std::collections::HashSet<String>,
    modules: std::collections::HashSet<String>,
}

impl AllowList {
    pub fn parse<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> Result<Self, String> {
        let mut list = AllowList::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let valid = |part: &str| {
                !part.is_empty()
                    && part.split('.').all(|w| {
                        let mut c = w.chars();
                        c.next().is_some_and(|f| f == '_' || f.is_alphabetic())
                            && c.all(|ch| ch == '_' || ch.is_alphanumeric())
                    })
            };
            match entry.split_once(':') {
                Some((m, "*")) if valid(m) => {
                    list.modules.insert(m.to_string());
                }
                Some((m, q)) if valid(m) && valid(q) => {
                    list.exact.insert(entry.to_string());
                }
                _ => {
                    return Err(format!(
                        "bad allow entry {entry:?}: expected `module:qualname` or `module:*`"
                    ))
                }
            }
        }
        Ok(list)
    }

    pub fn permits(&self, name: &str) -> bool {
        if self.exact.contains(name) {
            return true;
        }
        name.split_once(':')
            .is_some_and(|(m, q)| self.modules.contains(m) && !q.contains("<locals>"))
    }

    /// The globals of a scanned file this list trusts, as the exact set a
    /// load takes (standard-library classes included, which the evaluator
    /// rebuilds anyway: a caller may want their objects as records).
    pub fn trusted(&self, report: &FileReport) -> Allowed {
        let names = report
            .streams
            .iter()
            .flat_map(|s| &s.globals)
            .map(|g| format!("{}:{}", g.module, g.name))
            .filter(|n| self.permits(n));
        Allowed::new(names)
    }
}

/// Finding codes that mean a stream or container cannot be evaluated
/// faithfully (or loaders disagree about it), whatever the mode.
const STRUCTURAL: &[FindingCode] = &[
    FindingCode::MalformedStream,
    FindingCode::TruncatedStream,
    FindingCode::FrameViolation,
    FindingCode::TrailingData,
    FindingCode::LimitExceeded,
    FindingCode::ExtensionCode,
    FindingCode::OutOfBandBuffer,
    FindingCode::PolyglotPickleZip,
    FindingCode::AmbiguousZip,
    FindingCode::DecompressionLimit,
    FindingCode::ProtoMidStream,
];

/// Refuses a file whose scan forbids evaluating it in `mode`. In strict
/// mode an `unknown_import` of a global in `allowed` does not refuse it (a
/// dangerous or denied import always does).
pub fn gate(report: &FileReport, mode: Mode, allowed: &Allowed) -> Result<(), EvalError> {
    let container = report.findings.iter().map(|f| (f, true));
    let streams = report
        .streams
        .iter()
        .flat_map(|s| s.findings.iter().map(|f| (f, false)));
    let refused = container
        .chain(streams)
        .any(|(f, is_container)| match mode {
            Mode::Strict => f.severity > Verdict::Safe && !allowed.covers(f),
            Mode::Salvage => f.severity == Verdict::Dangerous,
            Mode::Inspect => {
                f.severity == Verdict::Dangerous && (is_container || STRUCTURAL.contains(&f.code))
            }
        });
    if let Some(e) = &report.error {
        return Err(EvalError::Malformed {
            file: report.path.clone(),
            offset: 0,
            what: e.clone(),
        });
    }
    if !refused {
        return Ok(());
    }
    let mut offenders: Vec<Offender> = report
        .all_findings()
        .filter(|f| f.severity > Verdict::Safe)
        .filter(|f| mode != Mode::Strict || !allowed.covers(f))
        .map(|f| Offender {
            qualname: if f.module.is_empty() {
                String::new()
            } else {
                format!("{}.{}", f.module, f.name)
            },
            global: if f.module.is_empty() {
                String::new()
            } else {
                format!("{}:{}", f.module, f.name)
            },
            code: f.code,
            offset: f.offset,
            called: f.called,
            reason: f.reason.clone(),
        })
        .collect();
    offenders.sort_by_key(|o| o.offset);
    let mut imports: Vec<String> = Vec::new();
    for o in &offenders {
        if !o.qualname.is_empty() && !imports.contains(&o.qualname) {
            imports.push(o.qualname.clone());
        }
    }
    Err(EvalError::Unsafe(Box::new(Unsafe {
        file: report.path.clone(),
        imports,
        offenders,
    })))
}

/// Scans `data` (named `file` in messages), refuses it if its scan forbids
/// evaluation in `opts.mode`, and evaluates it.
pub fn load<'a>(
    data: &'a [u8],
    file: &str,
    opts: &LoadOptions<'_>,
) -> Result<Loaded<'a>, EvalError> {
    let report = crate::scan_bytes(data, file, opts.policy, &opts.limits);
    load_scanned(data, file, opts, report)
}

/// [`load`] with the scan of `data` already made (with `opts.policy` and
/// `opts.limits`): a caller that asks what to trust after seeing the
/// refusal scans once.
pub fn load_scanned<'a>(
    data: &'a [u8],
    file: &str,
    opts: &LoadOptions<'_>,
    report: FileReport,
) -> Result<Loaded<'a>, EvalError> {
    let mut report = report;
    if opts.companions.is_some() {
        admit_companions(&mut report);
    }
    gate(&report, opts.mode, opts.allowed)?;
    let limit = opts
        .limits
        .max_eval_memory
        .min((data.len() as u64).saturating_mul(64).max(256 << 20));
    let mut r = checkpoint::Reader {
        file: file.to_string(),
        opts,
        budget: Budget::new(limit),
    };
    checkpoint::read(data, &mut r, report)
}

/// Maps a file read-only for [`load`].
pub fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    map(file, false)
}

/// Like [`map_file`], with every page mapped up front: for callers that
/// read the whole file (conversion), one call instead of a fault per page.
pub fn map_file_populated(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    map(file, true)
}

#[allow(unsafe_code)]
fn map(file: &std::fs::File, populate: bool) -> std::io::Result<memmap2::Mmap> {
    let mut opts = memmap2::MmapOptions::new();
    if populate {
        opts.populate();
    }
    // SAFETY: the map is read-only and every byte is untrusted input: a
    // concurrent writer can change what is read but not break memory
    // safety, since nothing assumes two reads of a byte agree (every
    // length and offset is checked against the slice where it is used).
    unsafe { opts.map(file) }
}

#[cfg(test)]
mod tests;
