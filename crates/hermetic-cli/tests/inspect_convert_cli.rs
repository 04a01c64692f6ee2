//! `hermetic inspect` on pickle-bearing files and `hermetic convert`, run as
//! the real binary on the committed corpora; reports and error texts pinned
//! with insta (fixture and temporary paths filtered).

mod common;

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn hermetic(args: &[&str]) -> (i32, String, String) {
    common::hermetic_in(&fixtures(), args)
}

fn snapshot(name: &str, tmp: &Path, value: String) {
    let root = tmp.display().to_string();
    insta::with_settings!({filters => vec![(root.as_str(), "[TMP]")]}, {
        insta::assert_snapshot!(name, value);
    });
}

#[test]
fn inspect_state_dicts_and_whole_models() {
    if !fixtures().join("benign/mlp_state_zip.pt").exists() {
        return;
    }
    let (code, out, err) = hermetic(&[
        "inspect",
        "benign/mlp_state_zip.pt",
        "benign/views_tied_legacy.pt",
    ]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("inspect_state_dicts", out);
    let (code, out, err) = hermetic(&["inspect", "benign/model_whole.pt"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("inspect_whole_model", out);
}

#[test]
fn inspect_refuses_ambiguous_containers() {
    if !fixtures()
        .join("attacks/torch_zip_duplicate_data_pkl.pt")
        .exists()
    {
        return;
    }
    let (code, out, err) = hermetic(&["inspect", "attacks/torch_zip_duplicate_data_pkl.pt"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    insta::assert_snapshot!("inspect_ambiguous_zip", err);
}

#[test]
fn convert_and_its_refusals() {
    if !fixtures().join("benign/mlp_state_legacy.pt").exists() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let out_s = out.display().to_string();
    let (code, stdout, err) = hermetic(&["convert", "benign/mlp_state_legacy.pt", &out_s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.exists());
    let (code2, stdout2, err2) = hermetic(&["convert", "benign/model_whole.pt", &out_s]);
    assert_eq!(code2, 1);
    let (code3, stdout3, err3) =
        hermetic(&["convert", "attacks/os_system_p0.pkl", "--salvage", &out_s]);
    assert_eq!(code3, 1);
    snapshot(
        "convert",
        tmp.path(),
        format!("{stdout}---\n{stdout2}{err2}---\n{stdout3}{err3}"),
    );
}
