use super::*;

#[test]
fn policy_errors_have_codes_and_paths() {
    let e = Policy::from_toml("[allow]\nglobals = [\"x\"]\n").unwrap_err();
    assert_eq!((e.code(), e.path()), ("bad_pattern", None), "{e}");
    let e = Policy::from_file(Path::new("/nonexistent/policy.toml")).unwrap_err();
    assert_eq!(e.code(), "io_error");
    assert_eq!(e.path(), Some("/nonexistent/policy.toml"));
}

#[test]
fn default_classes() {
    let p = Policy::default();
    assert_eq!(
        p.classify("torch._utils", "_rebuild_tensor_v2").verdict,
        Verdict::Safe
    );
    assert_eq!(p.classify("torch", "bfloat16").verdict, Verdict::Safe);
    assert_eq!(p.classify("torch", "FloatStorage").verdict, Verdict::Safe);
    assert_eq!(p.classify("os", "system").verdict, Verdict::Dangerous);
    assert_eq!(p.classify("os.path", "join").verdict, Verdict::Dangerous);
    assert_eq!(p.classify("builtins", "eval").verdict, Verdict::Dangerous);
    assert_eq!(
        p.classify("builtins", "getattr").verdict,
        Verdict::Dangerous
    );
    assert_eq!(
        p.classify("collections", "OrderedDict.__init__.__globals__")
            .verdict,
        Verdict::Dangerous
    );
    assert_eq!(p.classify("mymodel", "Net").verdict, Verdict::Suspicious);
    assert_eq!(p.classify("glob", "os.system").verdict, Verdict::Dangerous);
    assert_eq!(
        p.classify("mymodel", "Outer.Inner").verdict,
        Verdict::Suspicious
    );
    assert_eq!(p.classify("torch", "nn").verdict, Verdict::Suspicious);
}

#[test]
fn policy_file_extends() {
    let p = Policy::from_toml(
        "[allow]\nglobals = [\"mymodel:*\"]\n[deny]\nglobals = [\"torch:Size\"]\n",
    )
    .unwrap();
    assert_eq!(p.classify("mymodel", "Net").verdict, Verdict::Safe);
    assert_eq!(
        p.classify("mymodel.sub", "Net").verdict,
        Verdict::Suspicious
    );
    assert_eq!(p.classify("torch", "Size").verdict, Verdict::Dangerous);
    // An allow pattern never overrides a known primitive.
    let p = Policy::from_toml("[allow]\nglobals = [\"os:*\"]\n").unwrap();
    assert_eq!(p.classify("os", "system").verdict, Verdict::Dangerous);
}

#[test]
fn a_name_wildcard_never_walks_through_attributes() {
    // `mymodel:torch.load` is torch.load (nested unpickling) if mymodel
    // imported torch: `mymodel:*` must not cover it.
    let p = Policy::from_toml(
        "[allow]\nglobals = [\"mymodel:*\", \"other:Net*\"]\n[deny]\nglobals = [\"bad:*\"]\n",
    )
    .unwrap();
    assert_eq!(p.classify("mymodel", "Net").verdict, Verdict::Safe);
    assert_eq!(
        p.classify("mymodel", "torch.load").verdict,
        Verdict::Suspicious
    );
    assert_eq!(
        p.classify("mymodel", "Outer.Inner").verdict,
        Verdict::Suspicious
    );
    assert_eq!(p.classify("other", "NetA").verdict, Verdict::Safe);
    assert_eq!(p.classify("other", "Net.x").verdict, Verdict::Suspicious);
    // Deny lists fail closed: their wildcard does cross dots.
    assert_eq!(p.classify("bad", "a.b").verdict, Verdict::Dangerous);
}

#[test]
fn py2_names() {
    assert_eq!(
        py2_mapping("__builtin__", "eval"),
        Some(("builtins".into(), "eval".into()))
    );
    assert_eq!(
        py2_mapping("__builtin__", "xrange"),
        Some(("builtins".into(), "range".into()))
    );
    assert_eq!(py2_mapping("torch", "Size"), None);
}
