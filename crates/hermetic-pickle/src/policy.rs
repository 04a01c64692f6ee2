//! Which globals a pickle may name: an allowlist of data constructors, a list
//! of known code-execution primitives, and "suspicious" for everything else.

use crate::codes::FindingCode;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

mod py2;
mod tables;

pub use py2::py2_mapping;
use tables::{DANGEROUS_MODULES, DANGEROUS_NAMES, SAFE_GLOBALS};
pub use tables::{DCP_METADATA_CLASSES, INERT_CLASSES, TORCH_DTYPES, TORCH_STORAGE_PREFIXES};

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

#[cfg(test)]
mod tests;
