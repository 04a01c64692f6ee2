//! Which globals a pickle may name: an allowlist of data constructors, a list
//! of known code-execution primitives, and "suspicious" for everything else.

use crate::codes::FindingCode;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// How bad a stream or file is. Ordered: `Safe < Suspicious < Dangerous <
/// Error`: a file that could not be read or analysed is never taken for a
/// clean one, and fails every `--fail-on` level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Only allowlisted data constructors: loading runs no user code.
    Safe,
    /// Imports outside the allowlist that are not known code-execution
    /// primitives (typically a model's own classes).
    Suspicious,
    /// Known code-execution or obfuscation primitives, or a stream that is
    /// malformed or ambiguous.
    Dangerous,
    /// The file could not be read or analysed (unreadable, not a regular
    /// file, a symlink loop): nothing is known about what loading it runs.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Suspicious => "suspicious",
            Verdict::Dangerous => "dangerous",
            Verdict::Error => "error",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `module:name` pattern. `*` at the end of either part matches any suffix;
/// a module pattern `pkg.*` also matches `pkg` itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalPattern {
    module: String,
    name: String,
}

impl GlobalPattern {
    /// Parses `module:name`, `module.name` (split at the last dot) or `module:*`.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let text = text.trim();
        let (module, name) = match text.split_once(':') {
            Some((m, n)) => (m, n),
            None => match text.rsplit_once('.') {
                Some((m, n)) => (m, n),
                None => return Err(PolicyError::BadPattern(text.to_string())),
            },
        };
        if module.is_empty() || name.is_empty() {
            return Err(PolicyError::BadPattern(text.to_string()));
        }
        Ok(GlobalPattern {
            module: module.to_string(),
            name: name.to_string(),
        })
    }

    /// A `*` in the name never matches across a dot: `pkg:*` covers what
    /// `pkg` defines, not `pkg:torch.load` (a dotted name is resolved
    /// attribute by attribute, so it reaches whatever `pkg` imported).
    pub fn matches(&self, module: &str, name: &str) -> bool {
        let name_ok = match self.name.strip_suffix('*') {
            None => self.name == name,
            Some(prefix) => name
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.contains('.')),
        };
        name_ok && glob(&self.module, module)
    }

    /// For deny lists: `*` matches any suffix, dots included (failing
    /// closed, `pkg:*` denies `pkg:a.b` too).
    pub fn covers(&self, module: &str, name: &str) -> bool {
        glob(&self.module, module) && glob(&self.name, name)
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.strip_suffix('*') {
        None => pattern == text,
        Some(prefix) => {
            text.starts_with(prefix) || prefix.strip_suffix('.').is_some_and(|p| text == p)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("bad global pattern {0:?}: expected `module:name`, `module.name` or `module:*`")]
    BadPattern(String),
    #[error("cannot read policy file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid policy file {path}: {message}")]
    Toml { path: String, message: String },
}

impl PolicyError {
    /// A stable snake_case code for scripts and reports.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::BadPattern(_) => "bad_pattern",
            PolicyError::Io { .. } => "io_error",
            PolicyError::Toml { .. } => "invalid_policy",
        }
    }

    /// The policy file the error is about, when there is one.
    pub fn path(&self) -> Option<&str> {
        match self {
            PolicyError::BadPattern(_) => None,
            PolicyError::Io { path, .. } | PolicyError::Toml { path, .. } => Some(path),
        }
    }
}

/// The classification of one global.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub verdict: Verdict,
    /// The finding code; `None` for safe globals.
    pub code: Option<FindingCode>,
    pub reason: String,
}

/// The policy a scan applies. [`Policy::default`] is hermetic's built-in
/// allowlist; a TOML file can add allowed and dangerous globals.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Allowlisted names by module, so a lookup needs no allocation.
    safe: HashMap<String, HashSet<String>>,
    extra_safe: Vec<GlobalPattern>,
    extra_dangerous: Vec<GlobalPattern>,
}

/// The TOML policy file.
///
/// ```toml
/// [allow]
/// globals = ["mypkg.model:Net", "mypkg.layers:*"]
/// [deny]
/// globals = ["somepkg:run_anything"]
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    allow: PatternList,
    #[serde(default)]
    deny: PatternList,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternList {
    #[serde(default)]
    globals: Vec<String>,
}

/// Data constructors the default policy calls safe: the same set torch's
/// `weights_only` unpickler accepts, numpy's array and scalar reconstruction,
/// and pure-data builtins.
const SAFE_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("builtins", "range"),
    ("builtins", "bytearray"),
    ("builtins", "bytes"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("builtins", "str"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "dict"),
    ("_codecs", "encode"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch", "device"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.parameter", "Buffer"),
    ("torch.serialization", "_get_layout"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch.storage", "TypedStorage"),
    ("torch.storage", "UntypedStorage"),
    ("torch", "strided"),
    ("torch", "sparse_coo"),
    ("torch", "sparse_csr"),
    ("torch", "sparse_csc"),
    ("torch", "sparse_bsr"),
    ("torch", "sparse_bsc"),
    ("torch", "_mkldnn"),
    ("torch", "contiguous_format"),
    ("torch", "channels_last"),
    ("torch", "channels_last_3d"),
    ("torch", "preserve_format"),
    ("torch", "per_tensor_affine"),
    ("torch", "per_tensor_symmetric"),
    ("torch", "per_channel_affine"),
    ("torch", "per_channel_symmetric"),
    ("torch", "per_channel_affine_float_qparams"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core._internal", "_reconstruct"),
];

/// Every `torch.<dtype>` name torch defines (checked against torch 2.x).
pub const TORCH_DTYPES: &[&str] = &[
    "bcomplex32",
    "bfloat16",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bool",
    "cdouble",
    "cfloat",
    "chalf",
    "complex128",
    "complex32",
    "complex64",
    "double",
    "float",
    "float16",
    "float32",
    "float4_e2m1fn_x2",
    "float64",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "half",
    "int",
    "int1",
    "int16",
    "int2",
    "int3",
    "int32",
    "int4",
    "int5",
    "int6",
    "int64",
    "int7",
    "int8",
    "long",
    "qint32",
    "qint8",
    "quint2x4",
    "quint4x2",
    "quint8",
    "short",
    "uint1",
    "uint16",
    "uint2",
    "uint3",
    "uint32",
    "uint4",
    "uint5",
    "uint6",
    "uint64",
    "uint7",
    "uint8",
];

/// The legacy typed storage classes (`torch.FloatStorage`, ...), which torch
/// names in the persistent ids of every checkpoint.
pub const TORCH_STORAGE_PREFIXES: &[&str] = &[
    "BFloat16",
    "Bool",
    "Byte",
    "Char",
    "ComplexDouble",
    "ComplexFloat",
    "Double",
    "Float",
    "Half",
    "Int",
    "Long",
    "QInt32",
    "QInt8",
    "QUInt2x4",
    "QUInt4x2",
    "QUInt8",
    "Short",
];

/// Whole modules whose globals are code-execution, file-system, network,
/// process or nested-deserialization primitives.
const DANGEROUS_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "subprocess",
    "sys",
    "runpy",
    "importlib",
    "imp",
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "marshal",
    "shelve",
    "shutil",
    "socket",
    "_socket",
    "ctypes",
    "_ctypes",
    "code",
    "codeop",
    "pty",
    "commands",
    "webbrowser",
    "urllib",
    "http",
    "ftplib",
    "smtplib",
    "telnetlib",
    "xmlrpc",
    "requests",
    "httpx",
    "aiohttp",
    "multiprocessing",
    "_posixsubprocess",
    "asyncio",
    "pydoc",
    "pkgutil",
    "operator",
    "_operator",
    "functools",
    "_functools",
    "types",
    "timeit",
    "cProfile",
    "profile",
    "pdb",
    "bdb",
    "trace",
    "doctest",
    "idlelib",
    "lib2to3",
    "distutils",
    "setuptools",
    "pip",
    "venv",
    "ensurepip",
    "zipimport",
    "tempfile",
    "io",
    "_io",
    "fileinput",
    "sqlite3",
    "dbm",
    "logging.config",
    "signal",
    "_thread",
    "gc",
    "inspect",
    "builtins.__import__",
    "torch.hub",
    "torch.jit",
    "torch.utils.cpp_extension",
    "torch.package",
    "torch._dynamo",
    "torch._inductor",
    "torch.fx",
    "torch.serialization",
    "torch.ops",
    "torch._ops",
    "torch.library",
    "torch.backends",
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.lib.npyio",
    "numpy.lib.format",
    "joblib",
    "pandas.io",
    "yaml",
    "jinja2",
    "mako",
    "sympy",
    "IPython",
];

/// Single names that are dangerous in otherwise unremarkable modules.
const DANGEROUS_NAMES: &[(&str, &str)] = &[
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "compile"),
    ("builtins", "open"),
    ("builtins", "__import__"),
    ("builtins", "getattr"),
    ("builtins", "setattr"),
    ("builtins", "delattr"),
    ("builtins", "globals"),
    ("builtins", "locals"),
    ("builtins", "vars"),
    ("builtins", "input"),
    ("builtins", "breakpoint"),
    ("builtins", "help"),
    ("builtins", "exit"),
    ("builtins", "quit"),
    ("builtins", "apply"),
    ("builtins", "execfile"),
    ("builtins", "file"),
    ("builtins", "reload"),
    ("builtins", "memoryview"),
    ("builtins", "type"),
    ("builtins", "object"),
    ("builtins", "super"),
    ("builtins", "classmethod"),
    ("builtins", "staticmethod"),
    ("builtins", "property"),
    ("builtins", "map"),
    ("builtins", "filter"),
    ("builtins", "print"),
    ("copyreg", "_reconstructor_unsafe"),
    ("torch", "load"),
    ("torch", "save"),
    ("torch", "compile"),
    ("torch", "_C"),
    ("torch", "_load_global_deps"),
    ("torch._utils", "_import_dotted_name"),
    ("numpy", "load"),
    ("numpy", "save"),
    ("numpy", "fromfile"),
    ("numpy", "loadtxt"),
    ("numpy", "genfromtxt"),
    ("numpy", "memmap"),
    ("numpy", "tofile"),
    ("numpy.lib", "npyio"),
    ("pandas", "read_pickle"),
    ("pandas", "eval"),
    ("pandas", "read_csv"),
    ("uuid", "_get_command_stdout"),
    ("platform", "popen"),
    ("platform", "_syscmd_file"),
    ("platform", "_syscmd_ver"),
    ("site", "main"),
    ("site", "addsitedir"),
    ("site", "execsitecustomize"),
];

/// Standard-library classes (and `torch.Generator`) whose reconstruction
/// runs no code but their own, which only stores its arguments (read in CPython 3.11's sources:
/// `__new__`/`__init__`/`__setstate__`/`__reduce__` of each). Loading them
/// is data: the scanner allows them and the evaluator rebuilds them with
/// the real class (with one more check in the evaluator: `Fraction` turns
/// exponents into huge integers, so only bounded ints reach it). Enums and everything else need the caller's `allow=`.
pub const INERT_CLASSES: &[(&str, &str)] = &[
    ("argparse", "Namespace"),
    ("collections", "defaultdict"),
    ("collections", "deque"),
    ("pathlib", "PurePath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("pathlib", "Path"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "time"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("uuid", "UUID"),
    ("decimal", "Decimal"),
    ("fractions", "Fraction"),
    // REDUCE (device,), then __setstate__((seed, offset, state tensor)):
    // manual_seed, set_offset and set_state of a new generator.
    ("torch._C", "Generator"),
    // numpy's random states (numpy/random/_pickle.py): the constructors call
    // only a bit generator class (checked in the evaluator: a name of
    // numpy's table, one of these classes, and no other `ctor` argument);
    // the states are set by __setstate__ (validated by numpy).
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    // Cython's unpickle helper: checks a layout checksum, then
    // SeedSequence.__new__(cls) and the state (cls checked: SeedSequence).
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    // The `.metadata` of a torch.distributed.checkpoint folder (pickled by
    // `FileSystemWriter.finish`, read in torch 2.x's
    // torch/distributed/checkpoint/{metadata,filesystem}.py): dataclasses
    // rebuilt by NEWOBJ and a BUILD of their field dict (none defines
    // `__post_init__` or `__setstate__`; `MetadataIndex.__init__` only
    // stores, making `offset` a `torch.Size`), `TensorProperties`, whose
    // `__setstate__` unpacks a 5- or 6-tuple and maps the encoding below to
    // a memory format, and that encoding, a plain `Enum` called with its
    // value (checked in the evaluator: one int of 0, 1 or 2). See
    // [`DCP_METADATA_CLASSES`].
    ("torch.distributed.checkpoint.metadata", "Metadata"),
    (
        "torch.distributed.checkpoint.metadata",
        "TensorStorageMetadata",
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "BytesStorageMetadata",
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "ChunkStorageMetadata",
    ),
    ("torch.distributed.checkpoint.metadata", "TensorProperties"),
    (
        "torch.distributed.checkpoint.metadata",
        "_MEM_FORMAT_ENCODING",
    ),
    ("torch.distributed.checkpoint.metadata", "MetadataIndex"),
    ("torch.distributed.checkpoint.metadata", "StorageMeta"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
];

/// The classes of a DCP `.metadata` file (the tail of [`INERT_CLASSES`]):
/// what `hermetic scan` of a DCP folder, `hermetic.dcp.SafeReader` and
/// `hermetic convert` of one accept there, and nothing else.
pub const DCP_METADATA_CLASSES: &[(&str, &str)] = INERT_CLASSES.split_at(INERT_CLASSES.len() - 9).1;

/// The bit generator classes numpy's random-state constructors may build.
pub(crate) fn is_bit_generator(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("numpy.random._mt19937", "MT19937")
            | ("numpy.random._pcg64", "PCG64" | "PCG64DXSM")
            | ("numpy.random._philox", "Philox")
            | ("numpy.random._sfc64", "SFC64")
    )
}

/// Whether `module.name` is one of [`INERT_CLASSES`].
pub fn is_inert_class(module: &str, name: &str) -> bool {
    INERT_CLASSES.contains(&(module, name))
}

impl Default for Policy {
    fn default() -> Self {
        let mut safe: HashMap<String, HashSet<String>> = HashMap::new();
        let mut add = |m: &str, n: String| {
            safe.entry(m.to_string()).or_default().insert(n);
        };
        for (m, n) in SAFE_GLOBALS.iter().chain(INERT_CLASSES) {
            add(m, n.to_string());
        }
        for d in TORCH_DTYPES {
            add("torch", d.to_string());
        }
        for p in TORCH_STORAGE_PREFIXES {
            add("torch", format!("{p}Storage"));
            add("torch.cuda", format!("{p}Storage"));
        }
        Policy {
            safe,
            extra_safe: Vec::new(),
            extra_dangerous: Vec::new(),
        }
    }
}

impl Policy {
    /// The built-in policy, built once per process.
    pub fn builtin() -> &'static Policy {
        static BUILTIN: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        BUILTIN.get_or_init(Policy::default)
    }

    /// The default policy extended by a TOML policy file.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            PolicyError::Toml { message, .. } => PolicyError::Toml {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// The default policy extended by TOML policy text.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Toml {
            path: "<policy>".into(),
            message: e.to_string(),
        })?;
        let mut policy = Policy::default();
        for p in &file.allow.globals {
            policy.extra_safe.push(GlobalPattern::parse(p)?);
        }
        for p in &file.deny.globals {
            policy.extra_dangerous.push(GlobalPattern::parse(p)?);
        }
        Ok(policy)
    }

    /// Adds an allowed pattern (used by callers that extend the policy in code).
    pub fn allow(&mut self, pattern: GlobalPattern) {
        self.extra_safe.push(pattern);
    }

    fn is_allowlisted(&self, module: &str, name: &str) -> bool {
        self.safe
            .get(module)
            .is_some_and(|names| names.contains(name))
    }

    /// Whether the global is an allowlisted data constructor.
    pub fn is_safe(&self, module: &str, name: &str) -> bool {
        self.classify(module, name).verdict == Verdict::Safe
    }

    /// Classifies one resolved global (after Python 2 name mapping).
    pub fn classify(&self, module: &str, name: &str) -> Classification {
        if self.extra_dangerous.iter().any(|p| p.covers(module, name)) {
            return Classification {
                verdict: Verdict::Dangerous,
                code: Some(FindingCode::DeniedImport),
                reason: "denied by the policy file".into(),
            };
        }
        // Dotted names are resolved attribute by attribute (protocol 4+), so a
        // dunder component reaches interpreter internals from any module.
        if name
            .split('.')
            .any(|part| part.starts_with("__") && part.ends_with("__") && part.len() > 4)
            && !self.is_allowlisted(module, name)
        {
            return Classification {
                verdict: Verdict::Dangerous,
                code: Some(FindingCode::AttributeTraversal),
                reason: format!("name `{name}` walks through dunder attributes"),
            };
        }
        if self.is_allowlisted(module, name) {
            return safe();
        }
        if let Some(reason) = dangerous_reason(module, name) {
            return Classification {
                verdict: Verdict::Dangerous,
                code: Some(FindingCode::DangerousImport),
                reason,
            };
        }
        if self.extra_safe.iter().any(|p| p.matches(module, name)) {
            return safe();
        }
        Classification {
            verdict: Verdict::Suspicious,
            code: Some(FindingCode::UnknownImport),
            reason: "not an allowlisted data constructor; loading imports and may run its code"
                .into(),
        }
    }
}

fn safe() -> Classification {
    Classification {
        verdict: Verdict::Safe,
        code: None,
        reason: "allowlisted data constructor".into(),
    }
}

fn dangerous_reason(module: &str, name: &str) -> Option<String> {
    // A dotted name is resolved attribute by attribute, so `glob` + `os.system`
    // reaches `os.system` through glob's own import: any component that names
    // a dangerous module counts.
    let parts: Vec<&str> = name.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if DANGEROUS_MODULES
            .iter()
            .any(|m| !m.contains('.') && m == part)
        {
            return Some(format!(
                "`{module}.{name}` reaches the `{part}` module through attributes"
            ));
        }
    }
    let first = parts[0];
    for m in DANGEROUS_MODULES {
        let in_module = module == *m
            || module
                .strip_prefix(m)
                .is_some_and(|rest| rest.starts_with('.'))
            || format!("{module}.{first}") == *m;
        if in_module {
            return Some(format!(
                "`{m}` gives code execution, file, process or network access, or nested unpickling"
            ));
        }
    }
    for (m, n) in DANGEROUS_NAMES {
        if module == *m && first == *n {
            return Some(format!(
                "`{m}.{n}` is a known code-execution or indirection primitive"
            ));
        }
    }
    None
}

/// Applies CPython's Python 2 compatibility renames (`_compat_pickle`), which
/// the unpickler uses for `GLOBAL`/`INST` while the protocol is below 3.
pub fn py2_mapping(module: &str, name: &str) -> Option<(String, String)> {
    if let Some((_, _, m, n)) = NAME_MAPPING
        .iter()
        .find(|(m, n, _, _)| *m == module && *n == name)
    {
        return Some((m.to_string(), n.to_string()));
    }
    if module == "exceptions" {
        return Some(("builtins".into(), name.into()));
    }
    IMPORT_MAPPING
        .iter()
        .find(|(old, _)| *old == module)
        .map(|(_, new)| (new.to_string(), name.to_string()))
}

const NAME_MAPPING: &[(&str, &str, &str, &str)] = &[
    ("__builtin__", "xrange", "builtins", "range"),
    ("__builtin__", "reduce", "functools", "reduce"),
    ("__builtin__", "intern", "sys", "intern"),
    ("__builtin__", "unichr", "builtins", "chr"),
    ("__builtin__", "unicode", "builtins", "str"),
    ("__builtin__", "long", "builtins", "int"),
    ("itertools", "izip", "builtins", "zip"),
    ("itertools", "imap", "builtins", "map"),
    ("itertools", "ifilter", "builtins", "filter"),
    ("itertools", "ifilterfalse", "itertools", "filterfalse"),
    ("itertools", "izip_longest", "itertools", "zip_longest"),
    ("UserDict", "IterableUserDict", "collections", "UserDict"),
    ("UserList", "UserList", "collections", "UserList"),
    ("UserString", "UserString", "collections", "UserString"),
    ("whichdb", "whichdb", "dbm", "whichdb"),
    ("_socket", "fromfd", "socket", "fromfd"),
    (
        "_multiprocessing",
        "Connection",
        "multiprocessing.connection",
        "Connection",
    ),
    (
        "multiprocessing.process",
        "Process",
        "multiprocessing.context",
        "Process",
    ),
    (
        "multiprocessing.forking",
        "Popen",
        "multiprocessing.popen_fork",
        "Popen",
    ),
    (
        "urllib",
        "ContentTooShortError",
        "urllib.error",
        "ContentTooShortError",
    ),
    ("urllib", "getproxies", "urllib.request", "getproxies"),
    ("urllib", "pathname2url", "urllib.request", "pathname2url"),
    ("urllib", "quote_plus", "urllib.parse", "quote_plus"),
    ("urllib", "quote", "urllib.parse", "quote"),
    ("urllib", "unquote_plus", "urllib.parse", "unquote_plus"),
    ("urllib", "unquote", "urllib.parse", "unquote"),
    ("urllib", "url2pathname", "urllib.request", "url2pathname"),
    ("urllib", "urlcleanup", "urllib.request", "urlcleanup"),
    ("urllib", "urlencode", "urllib.parse", "urlencode"),
    ("urllib", "urlopen", "urllib.request", "urlopen"),
    ("urllib", "urlretrieve", "urllib.request", "urlretrieve"),
    ("urllib2", "HTTPError", "urllib.error", "HTTPError"),
    ("urllib2", "URLError", "urllib.error", "URLError"),
];

const IMPORT_MAPPING: &[(&str, &str)] = &[
    ("__builtin__", "builtins"),
    ("copy_reg", "copyreg"),
    ("Queue", "queue"),
    ("SocketServer", "socketserver"),
    ("ConfigParser", "configparser"),
    ("repr", "reprlib"),
    ("tkFileDialog", "tkinter.filedialog"),
    ("tkSimpleDialog", "tkinter.simpledialog"),
    ("tkColorChooser", "tkinter.colorchooser"),
    ("tkCommonDialog", "tkinter.commondialog"),
    ("Dialog", "tkinter.dialog"),
    ("Tkdnd", "tkinter.dnd"),
    ("tkFont", "tkinter.font"),
    ("tkMessageBox", "tkinter.messagebox"),
    ("ScrolledText", "tkinter.scrolledtext"),
    ("Tkconstants", "tkinter.constants"),
    ("Tix", "tkinter.tix"),
    ("ttk", "tkinter.ttk"),
    ("Tkinter", "tkinter"),
    ("markupbase", "_markupbase"),
    ("_winreg", "winreg"),
    ("thread", "_thread"),
    ("dummy_thread", "_dummy_thread"),
    ("dbhash", "dbm.bsd"),
    ("dumbdbm", "dbm.dumb"),
    ("dbm", "dbm.ndbm"),
    ("gdbm", "dbm.gnu"),
    ("xmlrpclib", "xmlrpc.client"),
    ("SimpleXMLRPCServer", "xmlrpc.server"),
    ("httplib", "http.client"),
    ("htmlentitydefs", "html.entities"),
    ("HTMLParser", "html.parser"),
    ("Cookie", "http.cookies"),
    ("cookielib", "http.cookiejar"),
    ("BaseHTTPServer", "http.server"),
    ("test.test_support", "test.support"),
    ("commands", "subprocess"),
    ("urlparse", "urllib.parse"),
    ("robotparser", "urllib.robotparser"),
    ("urllib2", "urllib.request"),
    ("anydbm", "dbm"),
    ("_abcoll", "collections.abc"),
    ("cPickle", "pickle"),
    ("_elementtree", "xml.etree.ElementTree"),
    ("FileDialog", "tkinter.filedialog"),
    ("SimpleDialog", "tkinter.simpledialog"),
    ("DocXMLRPCServer", "xmlrpc.server"),
    ("SimpleHTTPServer", "http.server"),
    ("CGIHTTPServer", "http.server"),
    ("UserDict", "collections"),
    ("UserList", "collections"),
    ("UserString", "collections"),
    ("whichdb", "dbm"),
    ("StringIO", "io"),
    ("cStringIO", "io"),
];

#[cfg(test)]
mod tests;
