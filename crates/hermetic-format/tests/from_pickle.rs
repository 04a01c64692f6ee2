//! Converting a real torch checkpoint from Rust alone (feature `pickle`).
#![cfg(feature = "pickle")]

use hermetic_format::{convert, write_file, Archive, WriteOptions};
use hermetic_pickle::eval::{self, Flavor, LoadOptions, Mode};
use hermetic_pickle::{Limits, Policy};
use std::path::Path;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/benign")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn torch_state_dict_converts_and_verifies() {
    for name in ["mlp_state_zip.pt", "mlp_state_legacy.pt", "views_tied.pt"] {
        let data = fixture(name);
        let policy = Policy::default();
        let opts = LoadOptions {
            mode: Mode::Strict,
            flavor: Flavor::Any,
            policy: &policy,
            limits: Limits::default(),
            allowed: eval::Allowed::none(),
            encoding: None,
            companions: None,
        };
        let loaded = eval::load(&data, name, &opts).unwrap();
        let mut c = convert(&loaded, false).unwrap();
        assert!(c.tensors > 0, "{name}");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        write_file(&out, &c.plan, &mut c.data, WriteOptions::default()).unwrap();
        let ar = Archive::open(&out).unwrap();
        ar.verify(None).unwrap();
        assert!(ar.has_tree(), "{name}");
        assert_eq!(
            ar.metadata().get("source_format").map(String::as_str),
            Some(loaded.format.as_str())
        );
    }
}

#[test]
fn a_pickled_model_is_refused_unless_salvaged() {
    let data = fixture("model_whole.pt");
    let policy = Policy::default();
    let strict = LoadOptions {
        mode: Mode::Strict,
        flavor: Flavor::Any,
        policy: &policy,
        limits: Limits::default(),
        allowed: eval::Allowed::none(),
        encoding: None,
        companions: None,
    };
    assert!(eval::load(&data, "model_whole.pt", &strict).is_err());
    let salvage = LoadOptions {
        mode: Mode::Salvage,
        ..strict
    };
    let loaded = eval::load(&data, "model_whole.pt", &salvage).unwrap();
    assert!(
        convert(&loaded, false).is_err(),
        "foreign objects need salvage"
    );
    let c = convert(&loaded, true).unwrap();
    assert!(c.tensors > 0);
}
