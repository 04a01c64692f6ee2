//! SARIF 2.1.0 output, for code-scanning dashboards.

use hermetic_pickle::{FileReport, Finding, Verdict};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Rule descriptions, one per stable finding code.
fn rule_text(code: &str) -> &'static str {
    match code {
        "dangerous_import" => "The pickle imports a known code-execution, file, process or network primitive.",
        "unknown_import" => "The pickle imports a global outside the allowlist of data constructors; loading it runs that module's code.",
        "denied_import" => "The pickle imports a global the policy file denies.",
        "attribute_traversal" => "The pickle resolves a dotted name through dunder attributes to reach interpreter internals.",
        "dynamic_global" => "STACK_GLOBAL takes a module or name computed at load time.",
        "indirect_call" => "The pickle calls a value that is not a named global.",
        "method_call" => "The pickle makes the unpickler call a method of an imported object by name.",
        "build_on_global" => "BUILD sets attributes on an imported module, class or function.",
        "extension_code" => "The pickle names a global through the copyreg extension registry.",
        "proto_mid_stream" => "A PROTO opcode after the start changes how later names resolve.",
        "frame_violation" => "FRAME boundaries that the C and pure-Python unpicklers read differently.",
        "truncated_stream" => "The stream ends early; the unpickler runs everything before the end.",
        "malformed_stream" => "The stream is malformed; the unpickler runs everything before the error.",
        "trailing_data" => "Bytes after the last pickle that a second load could read.",
        "limit_exceeded" => "The input exceeds a scanning bound and was not fully analysed.",
        "polyglot_pickle_zip" => "The file is both a pickle and a zip; torch and zipfile read different things.",
        "ambiguous_zip" => "A zip archive that strict and tolerant readers read differently.",
        "decompression_limit" => "Decompressed data exceeds the bound and was not fully analysed.",
        "out_of_band_buffer" => "The stream takes out-of-band buffers from the loader.",
        "unusual_structure" => "The stream has a structure no pickler writes.",
        "scan_error" => "The file could not be read or analysed; nothing is known about what loading it runs.",
        "truncated_container" => "A container (safetensors, zip, tar, npy) ends before the data its header describes.",
        "torchscript_code" => "A TorchScript archive carries code that torch.jit.load compiles and runs.",
        _ => "A finding of the hermetic pickle scanner.",
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

pub(crate) fn report(files: &[&FileReport]) -> Value {
    let mut rules: BTreeMap<String, Verdict> = BTreeMap::new();
    let mut results = Vec::new();
    let mut push = |r: &FileReport, f: &Finding, stream: Option<(&str, &str)>| {
        let sev = rules.entry(f.code.clone()).or_insert(f.severity);
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
        results.push(json!({
            "ruleId": f.code,
            "level": level(f.severity),
            "message": {"text": what},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": uri(&r.path)},
                    "region": {"byteOffset": f.offset}
                }
            }],
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
                code: "scan_error".into(),
                severity: Verdict::Error,
            };
            push(r, &f, None);
            notifications.push(json!({
                "level": "error",
                "message": {"text": format!("{}: {e}", r.path)},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri(&r.path)}}}],
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
    let rules: Vec<Value> = rules
        .iter()
        .map(|(code, sev)| {
            json!({
                "id": code,
                "name": code,
                "shortDescription": {"text": rule_text(code)},
                "defaultConfiguration": {"level": level(*sev)},
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "hermetic",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/hermetic-ml/hermetic",
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": notifications.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    })
}
