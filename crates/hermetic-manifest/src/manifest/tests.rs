use super::*;

const ID: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

#[test]
fn minimal_manifest_has_defaults() {
    let m = Manifest::from_toml("version = 1\n").unwrap();
    assert_eq!(m.unlisted, Unlisted::Refuse);
    assert_eq!(m.builtin_rules, vec![PYTHON_IPC.to_string()]);
    assert!(m.blobs.is_empty());
    assert_eq!(m.active_rules().len(), 1);
}

#[test]
fn allow_lists_are_checked_and_need_unlisted_safe() {
    let m = Manifest::from_toml(
        "version = 1\nunlisted = \"safe\"\nallow = [\"pkg.cfg:Config\", \"pkg.nn:*\", \"a:B.C\"]\n",
    )
    .unwrap();
    assert_eq!(m.allow, ["pkg.cfg:Config", "pkg.nn:*", "a:B.C"]);
    for bad in [
        "pkg", "pkg:", ":X", "pkg:Net*", "pkg.*:X", "p kg:X", "pkg:a..b", "1pkg:X",
    ] {
        let text = format!("version = 1\nunlisted = \"safe\"\nallow = [{bad:?}]\n");
        assert!(Manifest::from_toml(&text).is_err(), "{bad}");
    }
    let err = Manifest::from_toml("version = 1\nallow = [\"pkg:X\"]\n").unwrap_err();
    assert!(err.to_string().contains("unlisted"), "{err}");
}

#[test]
fn full_manifest_parses() {
    let text = format!(
        r#"
version = 1
unlisted = "safe"
builtin_rules = []
loader_modules = ["mylib.io", "mylib.io.*"]
[rules.my-pool]
callers = ["mypool.worker:Worker.recv"]
note = "our own worker pool"
[blobs]
"{ID}" = {{ size = 3, callers = ["app.train:load_*"], source = "m.pt", note = "reviewed" }}
"#
    );
    let m = Manifest::from_toml(&text).unwrap();
    assert_eq!(m.unlisted, Unlisted::Safe);
    assert!(m.builtin_rules.is_empty());
    assert_eq!(m.active_rules().len(), 1);
    let e = &m.blobs[&BlobId::parse(ID).unwrap()];
    assert_eq!(e.size, Some(3));
    assert_eq!(e.callers.as_ref().unwrap()[0].as_str(), "app.train:load_*");
    assert!(m.is_loader_module("mylib.io.zip"));
    assert!(m.is_loader_module("torch.serialization"));
    assert!(m.is_loader_module("torch.jit._serialization"));
    assert!(m.is_loader_module("torch.package.package_importer"));
    // Modules a torch.package imports get mangled names: never loaders.
    assert!(!m.is_loader_module("<torch_package_0>.model"));
    assert!(!m.is_loader_module("torch._inductor.codecache"));
    assert!(m.is_loader_module("hermetic.firewall._hooks"));
    assert!(!m.is_loader_module("app.train"));
    // Canonical rendering parses back to the same content.
    let again = Manifest::from_toml(&m.to_toml()).unwrap();
    assert_eq!(again.blobs, m.blobs);
    assert_eq!(again.rules, m.rules);
    assert_eq!(again.unlisted, m.unlisted);
    assert_eq!(again.builtin_rules, m.builtin_rules);
    assert_eq!(again.loader_modules, m.loader_modules);
}

#[test]
fn rejects_what_it_does_not_understand() {
    let cases = [
        ("", "missing version"),
        ("version = 2\n", "version"),
        ("version = 1\nunlisted = \"allow\"\n", "unlisted"),
        ("version = 1\nunlisted_policy = \"safe\"\n", "unknown key"),
        ("version = 1\nbuiltin_rules = [\"everything\"]\n", "builtin"),
        ("version = 1\n[blobs]\n\"sha256:00\" = {}\n", "bad id"),
        (
            &format!("version = 1\n[blobs]\n\"{}\" = {{}}\n", ID.to_uppercase()),
            "uppercase id",
        ),
        (
            &format!("version = 1\n[blobs]\n\"{ID}\" = {{ size = -1 }}\n"),
            "negative size",
        ),
        (
            &format!("version = 1\n[blobs]\n\"{ID}\" = {{ callers = [] }}\n"),
            "empty callers",
        ),
        (
            &format!("version = 1\n[blobs]\n\"{ID}\" = {{ callers = [\"nocolon\"] }}\n"),
            "bad caller",
        ),
        (
            &format!("version = 1\n[blobs]\n\"{ID}\" = {{ sha = 1 }}\n"),
            "unknown entry key",
        ),
        (
            &format!("version = 1\n[blobs]\n\"{ID}\" = {{}}\n\"{ID}\" = {{}}\n"),
            "duplicate id",
        ),
        (
            "version = 1\n[rules.python-ipc]\ncallers = [\"a:b\"]\n",
            "reserved",
        ),
        ("version = 1\n[rules.x]\n", "rule without callers"),
        ("version = 1\nloader_modules = [\"a b\"]\n", "bad loader"),
    ];
    for (text, why) in cases {
        assert!(Manifest::from_toml(text).is_err(), "{why}: {text:?}");
    }
}

#[test]
fn call_site_skips_loaders() {
    let m = Manifest::default();
    let frames = [
        "pickle:_Unpickler.load",
        "hermetic.firewall._hooks:_guarded_load",
        "torch.serialization:_load",
        "torch.serialization:load",
        "app.train:main",
        "__main__:<module>",
    ];
    assert_eq!(m.call_site(&frames), Some("app.train:main"));
    assert_eq!(m.call_site(&frames[..2]), Some(frames[1]));
    assert_eq!(m.call_site::<&str>(&[]), None);
}

#[test]
fn add_entries_keeps_comments_and_merges_callers() {
    let text = format!(
        "# reviewed by ops\nversion = 1\n\n[blobs]\n# the base model\n\"{ID}\" = {{ size = 3, callers = [\"a:b\"] }}\n"
    );
    let other = BlobId::of(b"other");
    let e = Entry {
        size: Some(5),
        callers: Some(vec![CallerPattern::parse("app:main").unwrap()]),
        source: Some("x \"quoted\".pkl".into()),
        note: None,
    };
    let merge = Entry {
        callers: Some(vec![CallerPattern::parse("c:d").unwrap()]),
        ..Entry::default()
    };
    let (out, added) = add_entries(
        &text,
        &[(other, e.clone()), (BlobId::parse(ID).unwrap(), merge)],
    )
    .unwrap();
    assert_eq!(added, 1);
    assert!(out.contains("# reviewed by ops"));
    assert!(out.contains("# the base model"));
    let m = Manifest::from_toml(&out).unwrap();
    assert_eq!(m.blobs[&other], e);
    let callers: Vec<_> = m.blobs[&BlobId::parse(ID).unwrap()]
        .callers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(callers, ["a:b", "c:d"]);
    // Adding to a manifest without [blobs] creates the table.
    let (out, added) = add_entries("version = 1\n", &[(other, e)]).unwrap();
    assert_eq!(added, 1);
    assert!(out.contains("[blobs]"));
    // A broken manifest is never edited.
    assert!(add_entries("version = 3\n", &[]).is_err());
}

#[test]
fn entry_line_is_valid_toml_under_blobs() {
    let id = BlobId::of(b"q");
    let e = Entry {
        size: Some(1),
        callers: Some(vec![CallerPattern::parse("__main__:<module>").unwrap()]),
        source: Some("C:\\models\\m.pt\n".into()),
        note: Some("tab\there".into()),
    };
    let text = format!("version = 1\n[blobs]\n{}\n", entry_line(&id, &e));
    let m = Manifest::from_toml(&text).unwrap();
    assert_eq!(m.blobs[&id], e);
}
