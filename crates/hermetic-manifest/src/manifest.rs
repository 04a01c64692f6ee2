//! The manifest file: which pickles a deployment trusts, reviewed like a
//! dependency lock file. See docs/SPEC.md, section "Manifest".

use crate::blob::BlobId;
use crate::glob::{CallerPattern, Glob};
use crate::ManifestError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The only manifest version this crate reads and writes.
pub const VERSION: u32 = 1;

/// The name of the built-in rule for Python's own inter-process pickles.
pub const PYTHON_IPC: &str = "python-ipc";

/// The call sites of the built-in `python-ipc` rule: where the standard
/// library and PyTorch unpickle messages from processes they started
/// (multiprocessing pipes and queues, spawn and forkserver start-up,
/// managers, concurrent.futures process pools, torch DataLoader workers).
/// This is a trust assumption: anything that can write to those pipes or
/// sockets can run code. `builtin_rules = []` removes it.
pub const PYTHON_IPC_CALLERS: &[&str] = &[
    "multiprocessing.connection:*",
    "multiprocessing.queues:*",
    "multiprocessing.spawn:*",
    "multiprocessing.forkserver:*",
    "multiprocessing.managers:*",
    "multiprocessing.popen_spawn_posix:*",
    "multiprocessing.popen_forkserver:*",
    "multiprocessing.reduction:*",
    "concurrent.futures.process:*",
    "torch.multiprocessing.*:*",
];

/// Modules whose frames are never a call site: the unpickling machinery
/// itself and the loaders that wrap it. The call site of a load is the
/// innermost frame outside them, so `torch.load` called from
/// `app.train:main` has the call site `app.train:main`.
pub const DEFAULT_LOADER_MODULES: &[&str] = &[
    "pickle",
    "_pickle",
    "_compat_pickle",
    "copyreg",
    "hermetic",
    "hermetic.*",
    "torch.serialization",
    "torch._weights_only_unpickler",
    // Loaders of archives that carry code (TorchScript, torch.package, PT2),
    // which the firewall decides on as whole files.
    "torch.jit._serialization",
    "torch.jit.mobile",
    "torch.package.*",
    "torch.export",
    "torch.export.pt2_archive.*",
    "torch._export.serde.*",
    "torch._inductor",
    "torch._inductor.package.*",
    "numpy.lib.format",
    "numpy.lib._format_impl",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "joblib.numpy_pickle",
    "joblib.numpy_pickle_utils",
    "joblib.numpy_pickle_compat",
    "pandas.io.pickle",
    "pandas.compat.pickle_compat",
];

/// What happens to a blob the manifest does not list, in `enforce` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Unlisted {
    /// Refuse it.
    #[default]
    Refuse,
    /// Evaluate it with hermetic's safe evaluator when the scanner calls it
    /// data-only (no Python code runs); refuse it otherwise.
    Safe,
}

impl Unlisted {
    pub fn as_str(self) -> &'static str {
        match self {
            Unlisted::Refuse => "refuse",
            Unlisted::Safe => "safe",
        }
    }
}

/// One trusted blob.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Entry {
    /// The stream's length in bytes; a blob of another size never matches.
    pub size: Option<u64>,
    /// Call sites allowed to load it; `None` means any call site.
    pub callers: Option<Vec<CallerPattern>>,
    /// Where the blob came from (a path, a URL, `file:stream`).
    pub source: Option<String>,
    pub note: Option<String>,
}

/// A call-site-only rule: any blob, loaded from one of these call sites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub callers: Vec<CallerPattern>,
    pub note: Option<String>,
}

/// A parsed and validated manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub unlisted: Unlisted,
    /// Built-in rules in force (only [`PYTHON_IPC`] exists).
    pub builtin_rules: Vec<String>,
    /// Extra loader modules (globs) added to [`DEFAULT_LOADER_MODULES`].
    pub loader_modules: Vec<String>,
    pub rules: BTreeMap<String, Rule>,
    pub blobs: BTreeMap<BlobId, Entry>,
    /// With `unlisted = "safe"`: classes and functions (`module:qualname`,
    /// `module:*`) the evaluator may rebuild, so checkpoints holding them
    /// load without listing each blob (`hermetic.torch.load(allow=...)`).
    pub allow: Vec<String>,
    /// The file it was read from, for messages.
    pub path: Option<PathBuf>,
    loaders: Vec<Glob>,
}

impl Default for Manifest {
    /// The manifest in force when none is given: no blobs, the built-in
    /// `python-ipc` rule, unlisted blobs refused.
    fn default() -> Self {
        Manifest::build(
            Unlisted::Refuse,
            vec![PYTHON_IPC.to_string()],
            Vec::new(),
            BTreeMap::new(),
            BTreeMap::new(),
            None,
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    version: u32,
    #[serde(default)]
    unlisted: Option<String>,
    #[serde(default)]
    builtin_rules: Option<Vec<String>>,
    #[serde(default)]
    loader_modules: Vec<String>,
    #[serde(default)]
    rules: BTreeMap<String, RawRule>,
    #[serde(default)]
    blobs: BTreeMap<String, RawEntry>,
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    callers: Vec<String>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    callers: Option<Vec<String>>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

fn parse_callers(list: &[String], what: &str) -> Result<Vec<CallerPattern>, ManifestError> {
    if list.is_empty() {
        return Err(ManifestError::Invalid(format!(
            "{what}: `callers` must not be empty (omit it to allow any call site)"
        )));
    }
    list.iter().map(|p| CallerPattern::parse(p)).collect()
}

fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `module:qualname` or `module:*`, each part a Python identifier.
fn valid_allow_entry(text: &str) -> bool {
    let idents = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|p| {
                let mut c = p.chars();
                c.next().is_some_and(|f| f == '_' || f.is_alphabetic())
                    && c.all(|ch| ch == '_' || ch.is_alphanumeric())
            })
    };
    match text.split_once(':') {
        Some((module, "*")) => idents(module),
        Some((module, qualname)) => idents(module) && idents(qualname),
        None => false,
    }
}

fn valid_module_glob(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'*' | b'?'))
}

impl Manifest {
    fn build(
        unlisted: Unlisted,
        builtin_rules: Vec<String>,
        loader_modules: Vec<String>,
        rules: BTreeMap<String, Rule>,
        blobs: BTreeMap<BlobId, Entry>,
        path: Option<PathBuf>,
    ) -> Self {
        let loaders = DEFAULT_LOADER_MODULES
            .iter()
            .copied()
            .chain(loader_modules.iter().map(String::as_str))
            .map(Glob::new)
            .collect();
        Manifest {
            unlisted,
            builtin_rules,
            loader_modules,
            rules,
            blobs,
            allow: Vec::new(),
            path,
            loaders,
        }
    }

    /// Reads and validates a manifest file.
    pub fn from_file(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut m = Manifest::from_toml(&text).map_err(|e| match e {
            ManifestError::Toml(msg) => ManifestError::InFile {
                path: path.display().to_string(),
                message: format!("not valid TOML: {msg}"),
            },
            ManifestError::Invalid(msg) => ManifestError::InFile {
                path: path.display().to_string(),
                message: msg,
            },
            ManifestError::BadBlobId(_) | ManifestError::BadCallerPattern { .. } => {
                ManifestError::InFile {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }
            }
            other => other,
        })?;
        m.path = Some(path.to_path_buf());
        Ok(m)
    }

    /// Parses and validates manifest text.
    pub fn from_toml(text: &str) -> Result<Self, ManifestError> {
        // Syntax first, then shape: a misspelt key is an invalid manifest,
        // not invalid TOML.
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ManifestError::Toml(e.message().to_string()))?;
        let raw: RawManifest = table
            .try_into()
            .map_err(|e: toml::de::Error| ManifestError::Invalid(e.message().to_string()))?;
        if raw.version != VERSION {
            return Err(ManifestError::Invalid(format!(
                "unsupported manifest version {} (this hermetic reads version {VERSION})",
                raw.version
            )));
        }
        let unlisted = match raw.unlisted.as_deref() {
            None | Some("refuse") => Unlisted::Refuse,
            Some("safe") => Unlisted::Safe,
            Some(other) => {
                return Err(ManifestError::Invalid(format!(
                    "`unlisted` must be \"refuse\" or \"safe\", not {other:?}"
                )))
            }
        };
        let builtin_rules = raw
            .builtin_rules
            .unwrap_or_else(|| vec![PYTHON_IPC.to_string()]);
        for name in &builtin_rules {
            if name != PYTHON_IPC {
                return Err(ManifestError::Invalid(format!(
                    "unknown built-in rule {name:?} (the only one is {PYTHON_IPC:?})"
                )));
            }
        }
        for m in &raw.loader_modules {
            if !valid_module_glob(m) {
                return Err(ManifestError::Invalid(format!(
                    "bad loader module pattern {m:?}"
                )));
            }
        }
        let mut rules = BTreeMap::new();
        for (name, r) in raw.rules {
            if !valid_rule_name(&name) || name == PYTHON_IPC {
                return Err(ManifestError::Invalid(format!(
                    "bad rule name {name:?} (letters, digits, `-` and `_`; {PYTHON_IPC:?} is reserved)"
                )));
            }
            let callers = parse_callers(&r.callers, &format!("rule {name:?}"))?;
            rules.insert(
                name,
                Rule {
                    callers,
                    note: r.note,
                },
            );
        }
        let mut blobs = BTreeMap::new();
        for (id, e) in raw.blobs {
            let blob = BlobId::parse(&id)?;
            let size = match e.size {
                None => None,
                Some(n) => Some(u64::try_from(n).map_err(|_| {
                    ManifestError::Invalid(format!("blob {id}: negative size {n}"))
                })?),
            };
            let callers = match &e.callers {
                None => None,
                Some(list) => Some(parse_callers(list, &format!("blob {id}"))?),
            };
            blobs.insert(
                blob,
                Entry {
                    size,
                    callers,
                    source: e.source,
                    note: e.note,
                },
            );
        }
        for a in &raw.allow {
            if !valid_allow_entry(a) {
                return Err(ManifestError::Invalid(format!(
                    "bad allow entry {a:?}: expected \"module:qualname\" or \"module:*\""
                )));
            }
        }
        if !raw.allow.is_empty() && unlisted != Unlisted::Safe {
            return Err(ManifestError::Invalid(
                "`allow` is read only with unlisted = \"safe\" (it says which classes the safe evaluator may rebuild)".into(),
            ));
        }
        let mut m = Manifest::build(
            unlisted,
            builtin_rules,
            raw.loader_modules,
            rules,
            blobs,
            None,
        );
        m.allow = raw.allow;
        Ok(m)
    }

    /// Whether frames of `module` are part of the loading machinery.
    pub fn is_loader_module(&self, module: &str) -> bool {
        self.loaders.iter().any(|g| g.matches_module(module))
    }

    /// The call site among `frames` (innermost first, each `module:qualname`):
    /// the first frame outside the loader modules, or the outermost frame
    /// when every frame is a loader's.
    pub fn call_site<'f, S: AsRef<str>>(&self, frames: &'f [S]) -> Option<&'f str> {
        frames
            .iter()
            .map(AsRef::as_ref)
            .find(|f| !self.is_loader_module(f.split_once(':').map_or(*f, |(m, _)| m)))
            .or_else(|| frames.last().map(AsRef::as_ref))
    }

    /// The rules in force, built-in ones first, as `(name, callers)`.
    pub fn active_rules(&self) -> Vec<(String, Vec<CallerPattern>)> {
        let mut out = Vec::new();
        if self.builtin_rules.iter().any(|r| r == PYTHON_IPC) {
            out.push((
                PYTHON_IPC.to_string(),
                PYTHON_IPC_CALLERS
                    .iter()
                    .map(|p| CallerPattern::parse(p).expect("built-in pattern"))
                    .collect(),
            ));
        }
        for (name, r) in &self.rules {
            out.push((name.clone(), r.callers.clone()));
        }
        out
    }

    /// Renders the whole manifest in canonical form (what `hermetic manifest
    /// freeze` writes for a new file).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str("# hermetic pickle manifest: the pickles this deployment trusts.\n");
        out.push_str("# Review changes to it like changes to a dependency lock file.\n");
        out.push_str(&format!("version = {VERSION}\n"));
        out.push_str(&format!("unlisted = \"{}\"\n", self.unlisted.as_str()));
        if self.builtin_rules != [PYTHON_IPC] {
            out.push_str(&format!(
                "builtin_rules = {}\n",
                toml_array(&self.builtin_rules)
            ));
        }
        if !self.loader_modules.is_empty() {
            out.push_str(&format!(
                "loader_modules = {}\n",
                toml_array(&self.loader_modules)
            ));
        }
        for (name, r) in &self.rules {
            out.push_str(&format!("\n[rules.{name}]\n"));
            let callers: Vec<String> = r.callers.iter().map(|c| c.to_string()).collect();
            out.push_str(&format!("callers = {}\n", toml_array(&callers)));
            if let Some(n) = &r.note {
                out.push_str(&format!("note = {}\n", toml_string(n)));
            }
        }
        out.push_str("\n[blobs]\n");
        for (id, e) in &self.blobs {
            out.push_str(&entry_line(id, e));
            out.push('\n');
        }
        out
    }
}

/// A TOML basic string with every character that needs it escaped.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Controls, and the separators and bidi overrides `display`
            // escapes: a manifest line shows as the one line it is.
            c if crate::text::is_unsafe(c) => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_array(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", parts.join(", "))
}

/// The one line under `[blobs]` that lists `id` with `entry`:
/// `"sha256:…" = { size = 583, callers = ["app.train:main"], source = "…" }`.
pub fn entry_line(id: &BlobId, e: &Entry) -> String {
    let mut fields = Vec::new();
    if let Some(s) = e.size {
        fields.push(format!("size = {s}"));
    }
    if let Some(c) = &e.callers {
        let callers: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        fields.push(format!("callers = {}", toml_array(&callers)));
    }
    if let Some(s) = &e.source {
        fields.push(format!("source = {}", toml_string(s)));
    }
    if let Some(n) = &e.note {
        fields.push(format!("note = {}", toml_string(n)));
    }
    if fields.is_empty() {
        format!("\"{id}\" = {{}}")
    } else {
        format!("\"{id}\" = {{ {} }}", fields.join(", "))
    }
}

/// Adds entries to manifest text, keeping everything else in it (comments,
/// order, formatting). Entries already listed keep their existing line,
/// except that new call-site patterns are merged into a restricted entry.
/// Returns the new text and how many entries were added.
pub fn add_entries(
    text: &str,
    entries: &[(BlobId, Entry)],
) -> Result<(String, usize), ManifestError> {
    // Validate first: never edit a manifest that does not parse.
    let current = Manifest::from_toml(text)?;
    // Nothing to add or widen: keep the text as it is. (Re-editing a
    // manifest through toml_edit grows faster than its size when one entry
    // has a very long `callers` array; a freeze repeated over the same
    // inventory must not pay that.)
    let changes = entries.iter().any(|(id, e)| match current.blobs.get(id) {
        None => true,
        Some(existing) => match (&existing.callers, &e.callers) {
            (Some(old), Some(new)) => {
                let known: std::collections::HashSet<&str> =
                    old.iter().map(CallerPattern::as_str).collect();
                new.iter().any(|c| !known.contains(c.as_str()))
            }
            _ => false,
        },
    });
    if !changes {
        return Ok((text.to_string(), 0));
    }
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ManifestError::Toml(e.message().to_string()))?;
    if !doc.contains_key("blobs") {
        let mut t = toml_edit::Table::new();
        t.set_implicit(false);
        doc.insert("blobs", toml_edit::Item::Table(t));
    }
    let blobs = doc["blobs"]
        .as_table_mut()
        .ok_or_else(|| ManifestError::Invalid("`blobs` must be a table".into()))?;
    let mut added = 0;
    for (id, e) in entries {
        let key = id.to_string();
        if let Some(existing) = current.blobs.get(id) {
            // Widen the call-site restriction only when both restrict.
            if let (Some(old), Some(new)) = (&existing.callers, &e.callers) {
                let mut merged: Vec<String> = old.iter().map(|c| c.to_string()).collect();
                for c in new {
                    if !merged.iter().any(|m| m == c.as_str()) {
                        merged.push(c.to_string());
                    }
                }
                if merged.len() != old.len() {
                    let arr: toml_edit::Array = merged.iter().map(String::as_str).collect();
                    if let Some(tbl) = blobs.get_mut(&key).and_then(|i| i.as_table_like_mut()) {
                        tbl.insert("callers", toml_edit::value(arr));
                    }
                }
            }
            continue;
        }
        let line = entry_line(id, e);
        let parsed: toml_edit::DocumentMut = line
            .parse()
            .map_err(|e: toml_edit::TomlError| ManifestError::Toml(e.message().to_string()))?;
        let (_, item) = parsed
            .iter()
            .next()
            .ok_or_else(|| ManifestError::Invalid("empty entry".into()))?;
        blobs.insert(&key, item.clone());
        added += 1;
    }
    let out = doc.to_string();
    // The result must still be a valid manifest.
    Manifest::from_toml(&out)?;
    Ok((out, added))
}

#[cfg(test)]
mod tests;
