//! The firewall's decision: given a blob, its size, the call stack and the
//! mode, allow it, evaluate it safely, or refuse it with a reason that says
//! exactly what would allow it.

use crate::blob::BlobId;
use crate::glob::CallerPattern;
use crate::manifest::{entry_line, Entry, Manifest, Unlisted};
use crate::text::display;
use crate::ManifestError;
use std::fmt;
use std::str::FromStr;

/// A process-wide mode (`HERMETIC_PICKLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No unpickling except through the manifest's call-site rules.
    Deny,
    /// Only listed blobs (or rules) run; unlisted ones are refused or,
    /// with `unlisted = "safe"`, evaluated safely.
    Enforce,
    /// Everything loads; every load goes into the inventory.
    Record,
    /// Like record, and a warning per unlisted load.
    Warn,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Deny => "deny",
            Mode::Enforce => "enforce",
            Mode::Record => "record",
            Mode::Warn => "warn",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(Mode::Deny),
            "enforce" => Ok(Mode::Enforce),
            "record" => Ok(Mode::Record),
            "warn" => Ok(Mode::Warn),
            _ => Err(ManifestError::BadMode(s.to_string())),
        }
    }
}

/// What the manifest says about one load, independent of the mode's action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Listed under `[blobs]` (and the call site and size match).
    Listed,
    /// Allowed by the call-site rule of this name.
    Rule(String),
    /// Not allowed; why.
    Unlisted(Why),
}

impl Judgement {
    /// The stable label inventories record: `listed`, `rule:<name>`,
    /// `unlisted`, `caller-mismatch`, `size-mismatch`, `denied`.
    pub fn label(&self) -> String {
        match self {
            Judgement::Listed => "listed".into(),
            Judgement::Rule(n) => format!("rule:{n}"),
            Judgement::Unlisted(w) => w.label().into(),
        }
    }

    pub fn allowed(&self) -> bool {
        !matches!(self, Judgement::Unlisted(_))
    }
}

/// Why a blob is not allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The manifest does not list the blob.
    NotListed,
    /// Listed, but only for other call sites.
    CallerMismatch(Vec<String>),
    /// Listed with another size (the manifest is wrong or was edited).
    SizeMismatch(u64),
    /// `deny` mode: only call-site rules apply, and none matched.
    Denied,
}

impl Why {
    pub fn label(&self) -> &'static str {
        match self {
            Why::NotListed => "unlisted",
            Why::CallerMismatch(_) => "caller-mismatch",
            Why::SizeMismatch(_) => "size-mismatch",
            Why::Denied => "denied",
        }
    }
}

/// What the firewall does with the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the real unpickler.
    Allow,
    /// Evaluate with hermetic's safe evaluator if the scanner calls the blob
    /// data-only; refuse otherwise.
    EvaluateSafe,
    /// Refuse.
    Refuse,
    /// Allow, and warn (mode `warn`, unlisted blob).
    Warn,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::EvaluateSafe => "evaluate",
            Action::Refuse => "refuse",
            Action::Warn => "warn",
        }
    }
}

/// The question asked for one load.
pub struct Query<'a, S: AsRef<str>> {
    pub blob: &'a BlobId,
    pub size: u64,
    /// The Python stack, innermost first, each frame `module:qualname`;
    /// `None` when the caller has not collected it (see [`Manifest::needs_frames`]).
    pub frames: Option<&'a [S]>,
}

impl Manifest {
    /// Whether judging `blob` depends on the call stack. A listed blob
    /// without call-site restrictions, in `enforce`, `record` or `warn`, does
    /// not; callers use this to skip walking the stack on the fast path.
    pub fn needs_frames(&self, mode: Mode, blob: &BlobId) -> bool {
        if mode == Mode::Deny {
            return true;
        }
        match self.blobs.get(blob) {
            Some(e) => e.callers.is_some(),
            None => true,
        }
    }

    /// Judges a load against the manifest. In `deny` mode only rules count.
    /// Without frames, anything that depends on the call site is judged as
    /// if no call site matched.
    pub fn judge<S: AsRef<str>>(&self, mode: Mode, q: &Query<'_, S>) -> Judgement {
        let frames: &[S] = q.frames.unwrap_or(&[]);
        let site = self.call_site(frames);
        let matches =
            |callers: &[CallerPattern]| site.is_some_and(|s| callers.iter().any(|c| c.matches(s)));
        let mut why = if mode == Mode::Deny {
            Why::Denied
        } else {
            Why::NotListed
        };
        if mode != Mode::Deny {
            if let Some(e) = self.blobs.get(q.blob) {
                match (e.size, &e.callers) {
                    (Some(s), _) if s != q.size => why = Why::SizeMismatch(s),
                    (_, None) => return Judgement::Listed,
                    (_, Some(c)) if matches(c) => return Judgement::Listed,
                    (_, Some(c)) => {
                        why = Why::CallerMismatch(c.iter().map(|p| p.to_string()).collect())
                    }
                }
            }
        }
        for (name, callers) in self.active_rules() {
            if matches(&callers) {
                return Judgement::Rule(name);
            }
        }
        Judgement::Unlisted(why)
    }

    /// The action `mode` takes for a judgement.
    pub fn action(&self, mode: Mode, j: &Judgement) -> Action {
        match (mode, j.allowed()) {
            (_, true) => Action::Allow,
            (Mode::Record, false) => Action::Allow,
            (Mode::Warn, false) => Action::Warn,
            (Mode::Deny, false) => Action::Refuse,
            (Mode::Enforce, false) => match (self.unlisted, j) {
                (Unlisted::Safe, Judgement::Unlisted(Why::NotListed)) => Action::EvaluateSafe,
                _ => Action::Refuse,
            },
        }
    }

    /// Judges and acts in one step.
    pub fn decide<S: AsRef<str>>(&self, mode: Mode, q: &Query<'_, S>) -> (Judgement, Action) {
        let j = self.judge(mode, q);
        let a = self.action(mode, &j);
        (j, a)
    }
}

/// Everything a refusal message can say about one load.
#[derive(Default)]
pub struct LoadContext<'a> {
    /// The file the blob was read from, when known.
    pub file: Option<&'a str>,
    /// `path.py:42` of the call site, when known.
    pub location: Option<&'a str>,
    /// The API that was called: `pickle.loads`, `torch.load`, ...
    pub entry_point: Option<&'a str>,
    /// The scanner's one-line summary of the blob.
    pub scanner: Option<&'a str>,
}

/// A refusal that teaches: what was refused, why, and the exact manifest
/// line that would allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// The line to add under `[blobs]`.
    pub manifest_line: String,
    pub call_site: Option<String>,
}

impl Manifest {
    /// Explains a refused (or, in `warn` mode, unlisted) load.
    pub fn refusal<S: AsRef<str>>(
        &self,
        mode: Mode,
        q: &Query<'_, S>,
        why: &Why,
        ctx: &LoadContext<'_>,
    ) -> Refusal {
        let frames: &[S] = q.frames.unwrap_or(&[]);
        let site = self.call_site(frames).map(str::to_string);
        let site_pattern = site.as_deref().and_then(|s| CallerPattern::parse(s).ok());
        let listed = self.blobs.get(q.blob);
        // A blob listed with other callers or another size needs its line
        // changed, not a second line (TOML refuses a key twice).
        let (line, replace) = match (listed, why) {
            (Some(e), Why::CallerMismatch(_)) => {
                let mut callers = e.callers.clone().unwrap_or_default();
                if let Some(p) = &site_pattern {
                    if !callers.contains(p) {
                        callers.push(p.clone());
                    }
                }
                let fixed = Entry {
                    callers: Some(callers),
                    ..e.clone()
                };
                (entry_line(q.blob, &fixed), true)
            }
            (Some(e), Why::SizeMismatch(_)) => {
                let fixed = Entry {
                    size: Some(q.size),
                    ..e.clone()
                };
                (entry_line(q.blob, &fixed), true)
            }
            _ => {
                let suggested = Entry {
                    size: Some(q.size),
                    callers: site_pattern.clone().map(|c| vec![c]),
                    source: ctx.file.map(str::to_string),
                    note: None,
                };
                (entry_line(q.blob, &suggested), false)
            }
        };
        let manifest_path = self.path.as_ref().map(|p| p.display().to_string());
        // Names in the message come from the file system, the pickle and
        // the program: one name, one line (see `text`).
        let manifest_shown = manifest_path.as_deref().map(|p| display(p).into_owned());
        let manifest = manifest_shown
            .clone()
            .unwrap_or_else(|| "none (built-in rules only)".into());
        let mut m = String::new();
        let verb = if mode == Mode::Warn {
            "loaded an unlisted"
        } else {
            "refused to unpickle"
        };
        m.push_str(&format!(
            "hermetic {verb} blob {} ({})\n",
            q.blob,
            bytes_word(q.size)
        ));
        if let Some(f) = ctx.file {
            m.push_str(&format!("  file:      {}\n", display(f)));
        }
        match (site.as_deref().map(display), ctx.location.map(display)) {
            (Some(s), Some(l)) => m.push_str(&format!("  call site: {s} ({l})\n")),
            (Some(s), None) => m.push_str(&format!("  call site: {s}\n")),
            (None, Some(l)) => m.push_str(&format!("  call site: {l}\n")),
            (None, None) => m.push_str("  call site: unknown\n"),
        }
        if let Some(e) = ctx.entry_point {
            m.push_str(&format!("  through:   {}\n", display(e)));
        }
        m.push_str(&format!("  mode:      {mode} (manifest: {manifest})\n"));
        let reason = match why {
            Why::NotListed => "the manifest does not list this blob".to_string(),
            Why::CallerMismatch(c) => format!(
                "the manifest lists this blob only for the call sites {}",
                display(&c.join(", "))
            ),
            Why::SizeMismatch(s) => {
                format!(
                    "the manifest lists this blob with size {s}, but it has {}",
                    bytes_word(q.size)
                )
            }
            Why::Denied => "deny mode allows no blob; only the manifest's call-site rules can allow a load, and none matched".to_string(),
        };
        m.push_str(&format!("  why:       {reason}\n"));
        if let Some(s) = ctx.scanner {
            m.push_str(&format!("  scanner:   {}\n", display(s)));
        }
        let target = manifest_shown
            .clone()
            .unwrap_or_else(|| "a manifest".to_string());
        let add = ctx.file.map(|f| {
            let mut cmd = format!(
                "hermetic manifest add {} --to {}",
                shell_word(f),
                manifest_path
                    .as_deref()
                    .map(shell_word)
                    .unwrap_or_else(|| "hermetic.toml".into())
            );
            if let Some(p) = &site_pattern {
                cmd.push_str(&format!(" --caller {}", shell_word(p.as_str())));
            }
            cmd
        });
        if mode == Mode::Deny && listed.is_some() {
            m.push_str(
                "The manifest lists this blob, but deny mode ignores [blobs]: run in enforce mode to allow it.\n",
            );
        } else if replace {
            m.push_str(&format!(
                "To trust it here too after review, replace this blob's line under [blobs] in {target} with:\n  {line}\n"
            ));
            if matches!(why, Why::CallerMismatch(_)) {
                if let Some(cmd) = &add {
                    m.push_str(&format!("or run: {cmd}\n"));
                }
            }
        } else {
            let then = match (&manifest_path, mode) {
                (None, _) => " and run with HERMETIC_PICKLE=enforce HERMETIC_MANIFEST=<manifest>",
                (Some(_), Mode::Deny) => " and run in enforce mode",
                _ => "",
            };
            m.push_str(&format!(
                "To trust it after review, add this line under [blobs] in {target}{then}:\n  {line}\n"
            ));
            if let Some(cmd) = &add {
                m.push_str(&format!("or run: {cmd}\n"));
            }
        }
        if ctx
            .scanner
            .is_some_and(|s| s == "safe" || s.starts_with("safe;"))
        {
            m.push_str(
                "Or load it without unpickling: the scanner finds it data-only, so \
                 hermetic.torch.load (hermetic.load_pickle for plain pickles) reads it with no \
                 manifest entry, and enforce mode with `unlisted = \"safe\"` sends such blobs \
                 to that evaluator.\n",
            );
        }
        Refusal {
            message: m.trim_end().to_string(),
            manifest_line: line,
            call_site: site,
        }
    }
}

fn bytes_word(n: u64) -> String {
    if n == 1 {
        "1 byte".to_string()
    } else {
        format!("{n} bytes")
    }
}

/// `s` as one shell word on one line: bare, in single quotes, or, when it
/// holds characters `display` escapes, in bash's `$'...'` quoting (exact,
/// and still one line).
fn shell_word(s: &str) -> String {
    if display(s) != s {
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                c if crate::text::is_unsafe(c) && (c as u32) < 0x80 => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if crate::text::is_unsafe(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests;
