//! `hermetic manifest add|check|freeze` and `hermetic run`'s usage errors,
//! run as the real binary; outputs pinned with insta (temporary paths and
//! pids filtered).

mod common;

use std::path::Path;

const SAFE: &[u8] = b"\x80\x02]q\x00(K\x01K\x02e.";
const EVIL: &[u8] = b"cos\nsystem\n(S'true'\ntR.";

fn hermetic(dir: &Path, args: &[&str]) -> (i32, String, String) {
    common::hermetic_in(dir, args)
}

fn snapshot(name: &str, dir: &Path, value: String) {
    let root = dir.display().to_string();
    insta::with_settings!({filters => vec![(root.as_str(), "[TMP]")]}, {
        insta::assert_snapshot!(name, value);
    });
}

#[test]
fn add_check_and_freeze() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.pkl"), SAFE).unwrap();
    std::fs::write(d.join("evil.pkl"), EVIL).unwrap();
    std::fs::write(d.join("hermetic.toml"), "# reviewed\nversion = 1\n").unwrap();

    let (code, out, err) = hermetic(d, &["manifest", "add", "good.pkl", "--to", "hermetic.toml"]);
    assert_eq!(code, 0, "{err}");
    let (code2, out2, err2) =
        hermetic(d, &["manifest", "add", "evil.pkl", "--to", "hermetic.toml"]);
    assert_eq!(code2, 1);
    let manifest = std::fs::read_to_string(d.join("hermetic.toml")).unwrap();
    let (code3, out3, _) = hermetic(
        d,
        &["manifest", "check", "hermetic.toml", "good.pkl", "evil.pkl"],
    );
    assert_eq!(code3, 1);
    snapshot(
        "add_check",
        d,
        format!(
            "add good: {code}\n{out}{err}\nadd evil: {code2}\n{out2}{err2}\nmanifest:\n{manifest}\ncheck: {code3}\n{out3}"
        ),
    );

    let inventory = r#"{"v":1,"event":"load","pid":1,"time":1.0,"blob":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","size":3,"file":"/m/a.pkl","entry_point":"pickle.load","call_site":"app:main","location":"app.py:3","judgement":"unlisted","verdict":"safe","imports":[],"findings":[]}
{"v":1,"event":"load","pid":1,"time":1.0,"blob":"sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d","size":1,"file":null,"entry_point":"pickle.loads","call_site":"multiprocessing.queues:Queue.get","location":"q.py:1","judgement":"rule:python-ipc","verdict":"safe","imports":[],"findings":[]}
{"v":1,"event":"dump","pid":1,"time":1.0,"entry_point":"torch.save","call_site":"app:save","location":"app.py:9","judgement":null}
"#;
    std::fs::write(d.join("inv.jsonl"), inventory).unwrap();
    let (code, out, err) = hermetic(d, &["manifest", "freeze", "inv.jsonl", "-o", "frozen.toml"]);
    assert_eq!(code, 0, "{err}");
    let frozen = std::fs::read_to_string(d.join("frozen.toml")).unwrap();
    snapshot("freeze", d, format!("{out}\n{frozen}"));

    std::fs::write(d.join("bad.jsonl"), "{\"v\":1,\"event\":\"load\"}\n").unwrap();
    let (code, _, err) = hermetic(d, &["manifest", "freeze", "bad.jsonl", "-o", "x.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("inventory line 1"), "{err}");
    assert!(!d.join("x.toml").exists());
}

#[test]
fn run_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("bad.toml"), "version = 1\nsurprise = true\n").unwrap();
    let mut out = String::new();
    for args in [
        &["run", "--mode", "enforce", "--", "true"][..],
        &[
            "run",
            "--mode",
            "deny",
            "--manifest",
            "bad.toml",
            "--",
            "true",
        ][..],
        &["run", "--mode", "deny", "--", "./no-such-program"][..],
    ] {
        let (code, _, err) = hermetic(d, args);
        out.push_str(&format!("{}: {code}\n{err}", args.join(" ")));
    }
    snapshot("run_usage", d, out);
}

#[cfg(unix)]
#[test]
fn run_passes_the_environment_and_exit_status() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("m.toml"), "version = 1\n").unwrap();
    let (code, out, _) = hermetic(
        d,
        &[
            "run",
            "--mode",
            "record",
            "--manifest",
            "m.toml",
            "--",
            "sh",
            "-c",
            "echo $HERMETIC_PICKLE $HERMETIC_MANIFEST $HERMETIC_INVENTORY; exit 5",
        ],
    );
    assert_eq!(code, 5);
    let root = d.canonicalize().unwrap();
    let expected = format!(
        "record {0}/m.toml {0}/hermetic-inventory.jsonl\n",
        d.display()
    );
    assert!(
        out == expected
            || out == expected.replace(&d.display().to_string(), &root.display().to_string()),
        "{out}"
    );
}
