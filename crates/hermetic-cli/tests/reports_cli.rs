//! `hermetic scan` (text, JSON, SARIF), `dis`, `hash` and `verify`, run as the
//! real binary on the committed `examples/` files (and, for `verify`, hermetic
//! files converted from them); every report pinned with insta. Filtered: the
//! temporary folder, the working directory's `file://` URI and the tool
//! version in SARIF.

mod common;
use common::hermetic_in;

use std::path::{Path, PathBuf};

/// The committed examples, in sorted order (not a folder walk: a stray file
/// there must not change the reports).
const EXAMPLES: &[&str] = &[
    "embeddings.npy",
    "make_examples.py",
    "notes.txt",
    "state_dict.pt",
    "state_dict_legacy.bin",
    "tampered_checkpoint.pt",
    "training_checkpoint.pt",
    "whole_model.pt",
];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn hermetic(args: &[&str]) -> (i32, String, String) {
    hermetic_in(&examples(), args)
}

/// Exit status, stdout and stderr of one run, as one snapshot text.
fn report((code, out, err): (i32, String, String)) -> String {
    format!("exit: {code}\n--- stdout\n{out}--- stderr\n{err}")
}

fn snapshot(name: &str, value: String, tmp: Option<&Path>) {
    let version = regex_escape(env!("CARGO_PKG_VERSION"));
    let mut filters = vec![
        (
            r#""uri": "file://[^"]*""#.to_string(),
            r#""uri": "file://[CWD]/""#.to_string(),
        ),
        (
            format!(r#""(semanticVersion|version)": "{version}""#),
            r#""$1": "[VERSION]""#.to_string(),
        ),
    ];
    if let Some(tmp) = tmp {
        filters.push((regex_escape(&tmp.display().to_string()), "[TMP]".into()));
    }
    let filters: Vec<(&str, &str)> = filters
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!(name, value);
    });
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn have_examples() -> bool {
    EXAMPLES.iter().all(|f| examples().join(f).exists())
}

#[test]
fn scan_text() {
    if !have_examples() {
        return;
    }
    let mut args = vec!["scan", "--quiet"];
    args.extend(EXAMPLES);
    let all = report(hermetic(&args));
    args.insert(2, "--all");
    let listed = report(hermetic(&args));
    let never = report(hermetic(&[
        "scan",
        "-q",
        "--fail-on",
        "never",
        "tampered_checkpoint.pt",
    ]));
    let missing = report(hermetic(&["scan", "-q", "state_dict.pt", "missing.pt"]));
    snapshot(
        "scan_text",
        format!(
            "{all}=== --all\n{listed}=== --fail-on never\n{never}=== a missing file\n{missing}"
        ),
        None,
    );
}

#[test]
fn scan_json() {
    if !have_examples() {
        return;
    }
    let mut args = vec!["scan", "--quiet", "--format", "json"];
    args.extend(EXAMPLES);
    let (code, out, err) = hermetic(&args);
    assert_eq!(code, 1, "{err}");
    let _: serde_json::Value = serde_json::from_str(&out).expect("scan --format json is JSON");
    snapshot("scan_json", report((code, out, err)), None);
}

#[test]
fn scan_sarif() {
    if !have_examples() {
        return;
    }
    let mut args = vec!["scan", "--quiet", "--format", "sarif"];
    args.extend(EXAMPLES);
    let (code, out, err) = hermetic(&args);
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("scan --format sarif is JSON");
    assert_eq!(v["version"], "2.1.0");
    snapshot("scan_sarif", report((code, out, err)), None);
}

#[test]
fn dis() {
    if !have_examples() {
        return;
    }
    let tampered = report(hermetic(&["dis", "tampered_checkpoint.pt"]));
    let legacy = report(hermetic(&["dis", "state_dict_legacy.bin"]));
    let none = report(hermetic(&["dis", "notes.txt"]));
    snapshot(
        "dis",
        format!("{tampered}=== state_dict_legacy.bin\n{legacy}=== no pickle\n{none}"),
        None,
    );
}

#[test]
fn hash() {
    if !have_examples() {
        return;
    }
    let mut args = vec!["hash"];
    args.extend(EXAMPLES);
    let lines = report(hermetic(&args));
    let json = report(hermetic(&[
        "hash",
        "--json",
        "tampered_checkpoint.pt",
        "state_dict_legacy.bin",
        "notes.txt",
    ]));
    snapshot("hash", format!("{lines}=== --json\n{json}"), None);
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn patched(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the text to patch is there");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn verify() {
    if !have_examples() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good = d.join("state_dict.safetensors");
    let good_s = good.display().to_string();
    let (code, _, err) = hermetic(&["convert", "state_dict.pt", &good_s]);
    assert_eq!(code, 0, "{err}");
    let training = d.join("training.safetensors").display().to_string();
    let (code, _, err) = hermetic(&["convert", "training_checkpoint.pt", &training]);
    assert_eq!(code, 0, "{err}");
    let raw = std::fs::read(&good).unwrap();
    // A flipped payload byte (the last entry's last bytes) and a changed
    // metadata value of the same length (which the layout digest covers).
    let mut payload = raw.clone();
    let n = payload.len();
    payload[n - 3] ^= 0x01;
    std::fs::write(d.join("payload_flip.safetensors"), payload).unwrap();
    std::fs::write(
        d.join("metadata_edit.safetensors"),
        patched(&raw, b"torch-zip", b"torch-zap"),
    )
    .unwrap();
    std::fs::copy(examples().join("state_dict.pt"), d.join("state_dict.pt")).unwrap();

    let ok = report(hermetic_in(
        d,
        &["verify", "state_dict.safetensors", "training.safetensors"],
    ));
    let bad = report(hermetic_in(
        d,
        &[
            "verify",
            "state_dict.safetensors",
            "payload_flip.safetensors",
            "metadata_edit.safetensors",
            "state_dict.pt",
        ],
    ));
    let json = report(hermetic_in(
        d,
        &[
            "verify",
            "--json",
            "state_dict.safetensors",
            "payload_flip.safetensors",
            "metadata_edit.safetensors",
        ],
    ));
    snapshot(
        "verify",
        format!("{ok}=== corrupt, edited and not hermetic\n{bad}=== --json\n{json}"),
        Some(d),
    );
}
