//! Why a file could not be evaluated, and the memory budget of one load.

use crate::codes::FindingCode;
use std::fmt;

/// A global (or structural problem) that stops a file from loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offender {
    /// `module.name`, or empty for a structural problem.
    pub qualname: String,
    /// `module:name`, as an `allow=` entry names it (empty likewise).
    pub global: String,
    /// The scanner's finding code (`dangerous_import`, `ambiguous_zip`, ...).
    pub code: FindingCode,
    /// Byte offset in the file.
    pub offset: u64,
    pub called: bool,
    pub reason: String,
}

/// The file is not data-only (or is ambiguous): nothing was evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsafe {
    pub file: String,
    /// Every offending `module.name`, once each, in file order.
    pub imports: Vec<String>,
    /// Every finding, imports and structural problems alike.
    pub offenders: Vec<Offender>,
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refusing to load {}: it is not data-only", self.file)?;
        if !self.imports.is_empty() {
            write!(f, "; it imports {}", self.imports.join(", "))?;
        }
        let structural: Vec<&Offender> = self
            .offenders
            .iter()
            .filter(|o| o.qualname.is_empty())
            .collect();
        for o in &self.offenders {
            if o.qualname.is_empty() {
                continue;
            }
            write!(
                f,
                "\n  {} ({}{}) at byte {}: {}",
                o.qualname,
                o.code,
                if o.called { ", called" } else { "" },
                o.offset,
                o.reason
            )?;
        }
        for o in structural {
            write!(f, "\n  {} at byte {}: {}", o.code, o.offset, o.reason)?;
        }
        write!(
            f,
            "\nNothing was imported or run. See what it holds with `hermetic inspect {0}` and `hermetic scan {0}`.",
            self.file
        )
    }
}

impl Unsafe {
    /// The `allow=[...]` that would load the file, when every offender is
    /// a class or function the scanner merely does not know (a dangerous
    /// import or a structural problem can never be trusted); `None` otherwise.
    /// copyreg's wrappers and `builtins.object` (protocols 0 and 1) need no
    /// entry: any allow list admits them around classes it trusts.
    pub fn allow_hint(&self) -> Option<String> {
        let wrapper = |o: &&Offender| {
            o.global
                .split_once(':')
                .is_some_and(|(m, n)| super::Allowed::is_forwarder(m, n))
        };
        let needed = || self.offenders.iter().filter(move |o| !wrapper(o));
        let wrappers_only = self.offenders.iter().all(|o| wrapper(&o));
        let trustable = needed().all(|o| {
            o.code == FindingCode::UnknownImport
                && o.global
                    .split_once(':')
                    .is_some_and(|(m, n)| super::Allowed::trustable(m, n))
        });
        if wrappers_only && !self.offenders.is_empty() {
            return Some(
                "These are copyreg's wrappers (protocols 0 and 1) around values hermetic rebuilds; pass allow=[] to read them.".into(),
            );
        }
        if !trustable || needed().next().is_none() {
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        for o in needed() {
            let quoted = format!("{:?}", o.global);
            if !names.contains(&quoted) {
                names.push(quoted);
            }
        }
        Some(format!(
            "If you trust these classes and functions (loading then runs their code, as pickle would), pass allow=[{}].",
            names.join(", ")
        ))
    }
}

/// Why a file could not be evaluated. Every variant names the file and the
/// byte offset in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The scan found imports outside the data allowlist or an ambiguous container.
    #[error("{0}")]
    Unsafe(Box<Unsafe>),
    /// The bytes are not what the format requires.
    #[error("{file}: at byte {offset}: {what}")]
    Malformed {
        file: String,
        offset: u64,
        what: String,
    },
    /// Valid, but something hermetic does not build (a quantized tensor, a
    /// format it does not read).
    #[error("{file}: at byte {offset}: not supported: {what}")]
    Unsupported {
        file: String,
        offset: u64,
        what: String,
    },
    /// A bound of [`crate::Limits`] was hit.
    #[error("{file}: at byte {offset}: limit exceeded: {what}")]
    Limit {
        file: String,
        offset: u64,
        what: String,
    },
}

impl EvalError {
    /// A stable snake_case code for the error's family.
    pub fn code(&self) -> &'static str {
        match self {
            EvalError::Unsafe(_) => "unsafe_pickle",
            EvalError::Malformed { .. } => "malformed",
            EvalError::Unsupported { .. } => "unsupported",
            EvalError::Limit { .. } => "limit_exceeded",
        }
    }

    /// The byte offset the error refers to.
    pub fn offset(&self) -> u64 {
        match self {
            EvalError::Unsafe(u) => u.offenders.first().map_or(0, |o| o.offset),
            EvalError::Malformed { offset, .. }
            | EvalError::Unsupported { offset, .. }
            | EvalError::Limit { offset, .. } => *offset,
        }
    }
}

/// A problem found while evaluating, before the file name and absolute
/// offset are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    Malformed(String),
    Unsupported(String),
    Limit(String),
    /// A global outside the evaluator's meanings, in strict mode: module, name.
    Foreign(String, String),
}

impl Problem {
    pub(crate) fn at(self, file: &str, offset: u64) -> EvalError {
        let file = file.to_string();
        match self {
            Problem::Malformed(what) => EvalError::Malformed { file, offset, what },
            Problem::Unsupported(what) => EvalError::Unsupported { file, offset, what },
            Problem::Limit(what) => EvalError::Limit { file, offset, what },
            Problem::Foreign(module, name) => EvalError::Unsafe(Box::new(Unsafe {
                file: file.clone(),
                imports: vec![format!("{module}.{name}")],
                offenders: vec![Offender {
                    qualname: format!("{module}.{name}"),
                    global: format!("{module}:{name}"),
                    code: FindingCode::UnknownImport,
                    offset,
                    called: false,
                    reason: "not a data constructor hermetic can build".into(),
                }],
            })),
        }
    }
}

pub(crate) fn malformed(what: impl Into<String>) -> Problem {
    Problem::Malformed(what.into())
}

pub(crate) fn unsupported(what: impl Into<String>) -> Problem {
    Problem::Unsupported(what.into())
}

/// Bytes the evaluation of one file may still allocate. Every node, owned
/// buffer and container slot is charged before it is allocated.
#[derive(Clone, Debug)]
pub struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget { left: limit, limit }
    }

    pub(crate) fn charge(&mut self, n: u64) -> Result<(), String> {
        if n > self.left {
            return Err(format!(
                "evaluating needs more than {} MiB of memory",
                self.limit >> 20
            ));
        }
        self.left -= n;
        Ok(())
    }

    /// What may still be charged.
    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    pub(crate) fn charge_problem(&mut self, n: u64) -> Result<(), Problem> {
        self.charge(n).map_err(Problem::Limit)
    }
}
