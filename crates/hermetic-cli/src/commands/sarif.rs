//! SARIF 2.1.0 output, in the subset GitHub code scanning ingests
//! (docs.github.com, "SARIF support for code scanning"): every rule has a
//! short and a full description, help text and markdown, a
//! `security-severity` and tags; every result has a level, one location
//! whose URI is relative to the source root (`%SRCROOT%`), and
//! `partialFingerprints` that stay the same from run to run.

use hermetic_manifest::display;
use hermetic_pickle::{blob_id, FileReport, Finding, FindingCode, Verdict};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// What a finding code means, for the rule metadata.
struct RuleDoc {
    /// One line (code scanning: at most 1024 characters).
    short: &'static str,
    /// What the finding is and why it matters (at most 1024 characters).
    full: &'static str,
    /// What to do about it.
    help: &'static str,
    /// Code scanning's 0.1-10.0 score for the worst reading of the code:
    /// over 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low.
    security_severity: &'static str,
}

const DO_NOT_LOAD: &str = "Do not load the file with pickle, torch.load(weights_only=False) or \
    joblib.load. If you produced it, re-save the tensors in a data-only format \
    (`hermetic convert IN OUT`, or safetensors).";
const NOT_ANALYSED: &str = "Treat the file as unknown: do not load it until it scans cleanly.";

/// The rule text of a code; its short description is the code's meaning.
fn rule_doc(code: FindingCode) -> RuleDoc {
    let d = |full, help, security_severity| RuleDoc {
        short: code.meaning(),
        full,
        help,
        security_severity,
    };
    match code {
        FindingCode::DangerousImport => d(
            "Loading this pickle imports a global such as os.system, subprocess.Popen, eval, \
             exec or builtins.getattr that lets the file run arbitrary code when it is \
             unpickled. Model checkpoints never need these.",
            DO_NOT_LOAD,
            "9.8",
        ),
        FindingCode::UnknownImport => d(
            "Loading this pickle imports a module that is not one of the data constructors \
             hermetic allows (tensors, arrays, containers). Importing it runs that module's \
             code, and the unpickler may call the object; typically it is a model's own class, \
             saved with torch.save(model) instead of its state dict.",
            "Prefer saving the state dict (torch.save(model.state_dict())) or converting the \
             file (`hermetic convert --salvage IN OUT`). If you trust the class, allow it in a \
             policy file (`[allow] globals = [\"pkg.module:Class\"]`) and pass `--policy`.",
            "5.0",
        ),
        FindingCode::DeniedImport => d(
            "Loading this pickle imports a global that the policy passed with --policy \
             explicitly denies.",
            DO_NOT_LOAD,
            "8.0",
        ),
        FindingCode::AttributeTraversal => d(
            "The pickle resolves a dotted name through attributes such as __globals__ or \
             __builtins__, a way to reach code-execution primitives without naming them.",
            DO_NOT_LOAD,
            "9.8",
        ),
        FindingCode::DynamicGlobal => d(
            "The module or name the pickle imports is computed while it loads, so what it \
             imports cannot be known statically; an obfuscation technique.",
            DO_NOT_LOAD,
            "9.0",
        ),
        FindingCode::IndirectCall => d(
            "REDUCE is applied to something other than an imported global (for example the \
             result of another call), a way to call functions without naming them.",
            DO_NOT_LOAD,
            "9.0",
        ),
        FindingCode::MethodCall => d(
            "The unpickler is made to look up and call a method of an imported object, which \
             reaches code the import alone would not.",
            DO_NOT_LOAD,
            "8.5",
        ),
        FindingCode::BuildOnGlobal => d(
            "The pickle changes the state of an imported module, class or function while it \
             loads, which can replace code that runs later.",
            DO_NOT_LOAD,
            "8.5",
        ),
        FindingCode::ExtensionCode => d(
            "EXT1/EXT2/EXT4 name a global by a number registered in copyreg at load time, so \
             what is imported depends on the loading process, not on the file.",
            DO_NOT_LOAD,
            "8.0",
        ),
        FindingCode::ProtoMidStream => d(
            "A PROTO opcode in the middle of a stream switches the protocol, which changes how \
             later names are resolved; no pickler writes this.",
            DO_NOT_LOAD,
            "7.5",
        ),
        FindingCode::FrameViolation => d(
            "The FRAME opcodes of the stream do not match its contents, so the C and the \
             pure-Python unpicklers read different opcodes; a way to hide imports from scanners.",
            DO_NOT_LOAD,
            "8.0",
        ),
        FindingCode::TruncatedStream => d(
            "The pickle stream ends before STOP. The unpickler executes every opcode up to the \
             point where it fails, so a truncated stream can still run code.",
            DO_NOT_LOAD,
            "7.5",
        ),
        FindingCode::MalformedStream => d(
            "The pickle stream has an invalid opcode or argument. The unpickler executes \
             everything before the error, and different unpicklers disagree about malformed \
             input.",
            DO_NOT_LOAD,
            "7.5",
        ),
        FindingCode::TrailingData => d(
            "The file continues after its last pickle stream; a loader that calls load() again \
             reads and runs what follows.",
            DO_NOT_LOAD,
            "7.0",
        ),
        FindingCode::LimitExceeded => d(
            "Part of the file was not analysed because it exceeds one of the scanner's bounds \
             (depth, size, opcode count); what that part does is unknown.",
            NOT_ANALYSED,
            "7.0",
        ),
        FindingCode::PolyglotPickleZip => d(
            "The file is a valid pickle and a valid zip archive at once, so torch.load and \
             other readers see different contents; a way to show a scanner one file and a \
             loader another.",
            DO_NOT_LOAD,
            "9.0",
        ),
        FindingCode::AmbiguousZip => d(
            "The zip archive has overlapping, duplicate or inconsistent entries, so different \
             zip readers extract different contents.",
            DO_NOT_LOAD,
            "8.0",
        ),
        FindingCode::DecompressionLimit => d(
            "A compressed member decompresses beyond the scanner's bound (a possible \
             decompression bomb); the rest was not analysed.",
            NOT_ANALYSED,
            "7.0",
        ),
        FindingCode::OutOfBandBuffer => d(
            "The pickle reads protocol 5 out-of-band buffers, whose contents come from the \
             loading code, not from the file.",
            "Check that the code loading the file supplies the buffers it expects.",
            "4.0",
        ),
        FindingCode::UnusualStructure => d(
            "The stream is valid but shaped in a way no Python pickler produces, which \
             suggests it was crafted by hand.",
            "Find out where the file came from before loading it.",
            "5.0",
        ),
        FindingCode::ScanError => d(
            "The file could not be read or analysed (unreadable, not a regular file, a symlink \
             loop, an error in its container); nothing is known about what loading it runs.",
            NOT_ANALYSED,
            "7.0",
        ),
        FindingCode::TorchscriptCode => d(
            "The archive holds TorchScript code; torch.jit.load compiles and runs it, so \
             loading the file runs code of the file's author.",
            "Load only TorchScript archives from authors you trust, or export the weights \
             (`hermetic convert IN OUT`).",
            "7.5",
        ),
        FindingCode::DcpLayout => d(
            "An item of a torch.distributed.checkpoint folder lies outside its file, overlaps \
             another, is read from a path outside the folder, or is stored through stream \
             transforms (compression) the scanner does not read.",
            DO_NOT_LOAD,
            "8.0",
        ),
        FindingCode::DcpUnaccounted => d(
            "A .distcp file holds bytes no storage_data item covers, is named by no item, or \
             the folder's .metadata is not DCP metadata the scanner can read: what \
             torch.distributed.checkpoint reads from it is not known.",
            "Load the folder with `hermetic.dcp.SafeReader`, or find out where it came from.",
            "5.0",
        ),
        FindingCode::PolyglotPickle => d(
            "The file opens as another format (numpy's .npy, a zip, safetensors, ...), but \
             pickle.load, torch.load's legacy path or joblib.load read a pickle from the same \
             bytes, and that pickle imports globals. One file, two readings: a scanner that \
             trusts the format it sniffs sees data while the loader runs code.",
            DO_NOT_LOAD,
            "9.0",
        ),
        FindingCode::AmbiguousTar => d(
            "The tar archive holds one of torch's legacy members (sys_info, pickle, tensors, \
             storages) more than once. tarfile, and so torch.load, uses the last copy; a \
             reader that stops at the first sees other contents.",
            DO_NOT_LOAD,
            "8.0",
        ),
        FindingCode::MalformedContainer => d(
            "A zip, tar, npy, safetensors or compressed container is corrupt, or is not what \
             its name or magic bytes claim: its headers contradict each other or end early. \
             What a loader reads from it depends on how that loader recovers, so the scan \
             cannot vouch for it.",
            NOT_ANALYSED,
            "6.0",
        ),
        FindingCode::UnreadableRecord => d(
            "The container holds a record a loader reads but the scan cannot walk: a cut-off \
             or special tar member, or joblib array data in a layout the scan does not read. \
             Whatever that record holds was not analysed.",
            NOT_ANALYSED,
            "7.0",
        ),
        FindingCode::JoblibArrayWrapper => d(
            "A joblib pickle uses joblib's old NumpyArrayWrapper placeholder: joblib.load reads \
             the array from a companion file next to this one, which the scan of this file \
             does not read. The companion may itself be a pickle.",
            "Scan the companion files too (`hermetic scan` on the folder), or load the \
             arrays with `hermetic.joblib.load`, which reads numeric companions without \
             running code.",
            "5.0",
        ),
    }
}

fn level(v: Verdict) -> &'static str {
    match v {
        Verdict::Dangerous | Verdict::Error => "error",
        Verdict::Suspicious => "warning",
        Verdict::Safe => "note",
    }
}

/// Percent-encodes what a URI reference cannot carry literally.
fn uri(path: &str) -> String {
    let mut s = String::with_capacity(path.len());
    for b in path.replace('\\', "/").bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// `path` made absolute against `cwd` and with `.` and `..` removed, without
/// touching the file system (a symlinked snapshot keeps the name it has).
fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in cwd.join(path).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// An absolute `file:` URI for an absolute path (`file:///C:/x` on Windows).
fn file_uri(abs: &Path) -> String {
    let s = uri(&abs.display().to_string());
    if s.starts_with('/') {
        format!("file://{s}")
    } else {
        format!("file:///{s}")
    }
}

/// Where results' paths are resolved from: the source root, reported as
/// `%SRCROOT%`; code scanning resolves relative URIs against the repository root.
pub(crate) struct Root {
    cwd: PathBuf,
    root: PathBuf,
}

impl Root {
    /// `root` (relative to `cwd`), or `cwd` itself.
    pub(crate) fn new(root: Option<&Path>) -> std::io::Result<Self> {
        let cwd = std::env::current_dir()?;
        let root = absolute(root.unwrap_or(Path::new(".")), &cwd);
        Ok(Root { cwd, root })
    }

    /// The artifact location of a reported path: relative to the root when
    /// it lies under it, an absolute `file:` URI otherwise.
    fn location(&self, path: &str) -> Value {
        let mut abs = absolute(Path::new(path), &self.cwd);
        if !abs.starts_with(&self.root) {
            // The same folder by another spelling (a symlinked /tmp): compare
            // real folders, keeping the file's own name (a hub snapshot link).
            if let (Some(dir), Some(name), Ok(root)) = (
                abs.parent().and_then(|d| d.canonicalize().ok()),
                abs.file_name(),
                self.root.canonicalize(),
            ) {
                if dir.starts_with(&root) {
                    abs = self
                        .root
                        .join(dir.strip_prefix(&root).unwrap_or(&dir))
                        .join(name);
                }
            }
        }
        match abs.strip_prefix(&self.root) {
            Ok(rel) if !rel.as_os_str().is_empty() => {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                json!({"uri": uri(&parts.join("/")), "uriBaseId": "%SRCROOT%"})
            }
            _ => json!({"uri": file_uri(&abs)}),
        }
    }

    fn base_uri(&self) -> String {
        let u = file_uri(&self.root);
        if u.ends_with('/') {
            u
        } else {
            u + "/"
        }
    }
}

/// The identity of a result from run to run: what was found (code, global)
/// and where (file, stream, offset), never the message wording.
fn fingerprint(location: &Value, f: &Finding, stream: Option<&str>) -> String {
    let key = [
        location["uri"].as_str().unwrap_or(""),
        f.code.as_str(),
        stream.unwrap_or(""),
        &f.offset.to_string(),
        &f.module,
        &f.name,
    ]
    .join("\0");
    blob_id(key.as_bytes())["sha256:".len()..].to_string()
}

pub(crate) fn report(files: &[&FileReport], root: &Root) -> Value {
    // By the code's string, so rules keep their order (and `ruleIndex`).
    let mut used: BTreeMap<&'static str, (FindingCode, Verdict)> = BTreeMap::new();
    let mut results = Vec::new();
    let mut push = |r: &FileReport, f: &Finding, stream: Option<(&str, &str)>| {
        let (_, sev) = used.entry(f.code.as_str()).or_insert((f.code, f.severity));
        *sev = (*sev).max(f.severity);
        let what = if f.module.is_empty() {
            f.reason.clone()
        } else {
            format!(
                "{}.{} {}: {}",
                f.module,
                f.name,
                if f.called {
                    "is imported and called"
                } else {
                    "is imported"
                },
                f.reason
            )
        };
        let mut props = json!({
            "verdict": f.severity.as_str(),
            "called": f.called,
            "format": r.format,
        });
        if !f.module.is_empty() {
            props["module"] = json!(f.module);
            props["name"] = json!(f.name);
        }
        if let Some((name, sha)) = stream {
            props["stream"] = json!(name);
            props["blobId"] = json!(sha);
        }
        let artifact = root.location(&r.path);
        let id = fingerprint(&artifact, f, stream.map(|s| s.0));
        results.push(json!({
            "ruleId": f.code,
            "level": level(f.severity),
            // The module and name come from the file; a newline or an
            // escape in them must not forge a line of the alert's text.
            "message": {"text": display(&what)},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": artifact,
                    // Code scanning needs a line; a binary file has none, so
                    // the text region is the file's first character and the
                    // place itself is the byte offset.
                    "region": {
                        "startLine": 1, "startColumn": 1, "endLine": 1, "endColumn": 2,
                        "byteOffset": f.offset,
                    }
                }
            }],
            "partialFingerprints": {
                // The one key code scanning reads; upload-sarif would
                // otherwise hash the "lines" of a binary file.
                "primaryLocationLineHash": format!("{}:1", &id[..16]),
                "hermetic/v1": id,
            },
            "properties": props,
        }));
    };
    let mut notifications = Vec::new();
    for r in files {
        if let Some(e) = &r.error {
            let f = Finding {
                module: String::new(),
                name: String::new(),
                offset: 0,
                called: false,
                reason: format!("not analysed: {e}"),
                code: FindingCode::ScanError,
                severity: Verdict::Error,
            };
            push(r, &f, None);
            notifications.push(json!({
                "level": "error",
                "message": {"text": display(&format!("{}: {e}", r.path))},
                "locations": [{"physicalLocation": {"artifactLocation": root.location(&r.path)}}],
            }));
        }
        for f in &r.findings {
            push(r, f, None);
        }
        for s in &r.streams {
            for f in &s.findings {
                push(r, f, Some((&s.name, &s.sha256)));
            }
        }
    }
    let rules: Vec<Value> = used.values().map(|&(code, sev)| rule(code, sev)).collect();
    let index: BTreeMap<&str, usize> = used.keys().enumerate().map(|(i, c)| (*c, i)).collect();
    for r in &mut results {
        let i = index[r["ruleId"].as_str().unwrap_or_default()];
        r["ruleIndex"] = json!(i);
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "hermetic",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/hermetic-ml/hermetic",
                "rules": rules,
            }},
            "originalUriBaseIds": {
                "%SRCROOT%": {
                    "uri": root.base_uri(),
                    "description": {"text": "The source root: the current directory or --sarif-root."},
                },
            },
            "invocations": [{
                "executionSuccessful": notifications.is_empty(),
                "workingDirectory": {"uri": root.base_uri()},
                "toolExecutionNotifications": notifications,
            }],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

/// A rule's reporting descriptor: `sev` is the worst severity it was reported
/// with in this run, its default level.
fn rule(code: FindingCode, sev: Verdict) -> Value {
    let doc = rule_doc(code);
    let code = code.as_str();
    let markdown = format!(
        "**{short}**\n\n{full}\n\n**What to do.** {help}\n\n\
         Finding code `{code}` of [hermetic](https://github.com/hermetic-ml/hermetic); \
         `hermetic scan --help` lists the verdicts.",
        short = doc.short,
        full = doc.full,
        help = doc.help,
    );
    json!({
        "id": code,
        "name": code,
        "shortDescription": {"text": doc.short},
        "fullDescription": {"text": doc.full},
        "help": {"text": format!("{} {}", doc.full, doc.help), "markdown": markdown},
        "defaultConfiguration": {"level": level(sev)},
        "properties": {
            "tags": ["security", "deserialization", "external/cwe/cwe-502"],
            "precision": "high",
            "security-severity": doc.security_severity,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_rule_text_within_github_limits() {
        for &code in FindingCode::ALL {
            let d = rule_doc(code);
            assert_eq!(d.short, code.meaning(), "{code}");
            assert!(!d.short.is_empty() && d.short.len() <= 1024, "{code}");
            assert!(!d.full.is_empty() && d.full.len() <= 1024, "{code}");
            assert!(!d.help.is_empty(), "{code}");
            let sev: f64 = d.security_severity.parse().unwrap();
            assert!(sev > 0.0 && sev <= 10.0, "{code}");
        }
    }

    #[test]
    fn paths_are_normalised_without_the_file_system() {
        let cwd = Path::new("/work/repo");
        assert_eq!(
            absolute(Path::new("./a/../b/c.pt"), cwd),
            PathBuf::from("/work/repo/b/c.pt")
        );
        assert_eq!(absolute(Path::new("/x/y"), cwd), PathBuf::from("/x/y"));
        assert_eq!(file_uri(Path::new("/a b/c")), "file:///a%20b/c");
    }
}
