use super::*;
use crate::manifest::Manifest;

fn manifest(extra: &str) -> Manifest {
    Manifest::from_toml(&format!("version = 1\n{extra}")).unwrap()
}

fn q<'a>(blob: &'a BlobId, size: u64, frames: &'a [&'a str]) -> Query<'a, &'a str> {
    Query {
        blob,
        size,
        frames: Some(frames),
    }
}

const USER: &[&str] = &["pickle:loads", "app.train:main", "__main__:<module>"];
const IPC: &[&str] = &[
    "multiprocessing.queues:Queue.get",
    "torch.utils.data._utils.worker:_worker_loop",
    "multiprocessing.process:BaseProcess._bootstrap",
];
const IN_WORKER: &[&str] = &[
    "app.data:Dataset.__getitem__",
    "torch.utils.data._utils.worker:_worker_loop",
    "multiprocessing.process:BaseProcess._bootstrap",
];

#[test]
fn enforce_listed_unlisted_callers_size() {
    let a = BlobId::of(b"a");
    let b = BlobId::of(b"b");
    let m = manifest(&format!(
        "[blobs]\n\"{a}\" = {{ size = 1 }}\n\"{b}\" = {{ size = 1, callers = [\"app.eval:*\"] }}\n"
    ));
    assert_eq!(
        m.decide(Mode::Enforce, &q(&a, 1, USER)),
        (Judgement::Listed, Action::Allow)
    );
    assert!(!m.needs_frames(Mode::Enforce, &a));
    assert!(m.needs_frames(Mode::Enforce, &b));
    assert_eq!(
        m.decide(Mode::Enforce, &q(&a, 2, USER)).0,
        Judgement::Unlisted(Why::SizeMismatch(1))
    );
    assert_eq!(
        m.decide(Mode::Enforce, &q(&b, 1, USER)),
        (
            Judgement::Unlisted(Why::CallerMismatch(vec!["app.eval:*".into()])),
            Action::Refuse
        )
    );
    let eval = ["pickle:loads", "app.eval:run"];
    assert_eq!(m.decide(Mode::Enforce, &q(&b, 1, &eval)).1, Action::Allow);
    let c = BlobId::of(b"c");
    assert_eq!(
        m.decide(Mode::Enforce, &q(&c, 1, USER)),
        (Judgement::Unlisted(Why::NotListed), Action::Refuse)
    );
    // Without frames a caller-restricted blob is not allowed.
    let none: Query<'_, &str> = Query {
        blob: &b,
        size: 1,
        frames: None,
    };
    assert_eq!(m.decide(Mode::Enforce, &none).1, Action::Refuse);
}

#[test]
fn deny_ignores_blobs_but_keeps_rules() {
    let a = BlobId::of(b"a");
    let m = manifest(&format!("[blobs]\n\"{a}\" = {{}}\n"));
    assert_eq!(
        m.decide(Mode::Deny, &q(&a, 1, USER)),
        (Judgement::Unlisted(Why::Denied), Action::Refuse)
    );
    assert_eq!(
        m.decide(Mode::Deny, &q(&a, 1, IPC)),
        (Judgement::Rule("python-ipc".into()), Action::Allow)
    );
}

#[test]
fn ipc_rule_is_scoped_to_the_call_site_and_removable() {
    let m = Manifest::default();
    let x = BlobId::of(b"x");
    assert_eq!(m.decide(Mode::Enforce, &q(&x, 1, IPC)).1, Action::Allow);
    // Every frame of a worker sits under multiprocessing; only the call
    // site counts, so the worker's own loads stay refused.
    assert_eq!(
        m.decide(Mode::Enforce, &q(&x, 1, IN_WORKER)).1,
        Action::Refuse
    );
    let off = manifest("builtin_rules = []\n");
    assert_eq!(off.decide(Mode::Enforce, &q(&x, 1, IPC)).1, Action::Refuse);
    let custom = manifest("builtin_rules = []\n[rules.pool]\ncallers = [\"app.data:*\"]\n");
    assert_eq!(
        custom.decide(Mode::Deny, &q(&x, 1, IN_WORKER)),
        (Judgement::Rule("pool".into()), Action::Allow)
    );
}

#[test]
fn unlisted_safe_and_observing_modes() {
    let x = BlobId::of(b"x");
    let m = manifest("unlisted = \"safe\"\n");
    assert_eq!(
        m.decide(Mode::Enforce, &q(&x, 1, USER)).1,
        Action::EvaluateSafe
    );
    // Size or caller mismatches are refused, never evaluated.
    let y = BlobId::of(b"y");
    let m2 = manifest(&format!(
        "unlisted = \"safe\"\n[blobs]\n\"{y}\" = {{ size = 9 }}\n"
    ));
    assert_eq!(m2.decide(Mode::Enforce, &q(&y, 1, USER)).1, Action::Refuse);
    // deny never evaluates.
    assert_eq!(m.decide(Mode::Deny, &q(&x, 1, USER)).1, Action::Refuse);
    assert_eq!(m.decide(Mode::Record, &q(&x, 1, USER)).1, Action::Allow);
    assert_eq!(m.decide(Mode::Warn, &q(&x, 1, USER)).1, Action::Warn);
    assert_eq!(m.decide(Mode::Warn, &q(&x, 1, IPC)).1, Action::Allow);
}

#[test]
fn refusal_teaches_the_exact_line() {
    let x = BlobId::of(b"x");
    let mut m = Manifest::default();
    m.path = Some("/etc/app/hermetic.toml".into());
    let query = q(&x, 583, USER);
    let (j, _) = m.decide(Mode::Enforce, &query);
    let Judgement::Unlisted(why) = j else {
        panic!()
    };
    let r = m.refusal(
        Mode::Enforce,
        &query,
        &why,
        &LoadContext {
            file: Some("/models/m.pt"),
            location: Some("/app/train.py:42"),
            entry_point: Some("torch.load"),
            scanner: Some("dangerous: imports os.system (called)"),
        },
    );
    let expected_line = format!(
        "\"{x}\" = {{ size = 583, callers = [\"app.train:main\"], source = \"/models/m.pt\" }}"
    );
    assert_eq!(r.manifest_line, expected_line);
    assert_eq!(r.call_site.as_deref(), Some("app.train:main"));
    for needle in [
        x.to_string().as_str(),
        "583 bytes",
        "/models/m.pt",
        "app.train:main (/app/train.py:42)",
        "torch.load",
        "os.system",
        "/etc/app/hermetic.toml",
        expected_line.as_str(),
        "hermetic manifest add /models/m.pt --to /etc/app/hermetic.toml",
    ] {
        assert!(
            r.message.contains(needle),
            "missing {needle:?} in\n{}",
            r.message
        );
    }
    // The suggested line really allows the load.
    let text = format!("version = 1\n[blobs]\n{}\n", r.manifest_line);
    let fixed = Manifest::from_toml(&text).unwrap();
    assert_eq!(fixed.decide(Mode::Enforce, &query).1, Action::Allow);
}

#[test]
fn replaced_line_allows_a_new_call_site() {
    let x = BlobId::of(b"x");
    let m = manifest(&format!(
        "[blobs]\n\"{x}\" = {{ size = 1, callers = [\"app.eval:*\"], note = \"keep\" }}\n"
    ));
    let query = q(&x, 1, USER);
    let Judgement::Unlisted(why) = m.judge(Mode::Enforce, &query) else {
        panic!()
    };
    let r = m.refusal(Mode::Enforce, &query, &why, &LoadContext::default());
    let fixed = manifest(&format!("[blobs]\n{}\n", r.manifest_line));
    assert_eq!(fixed.decide(Mode::Enforce, &query).1, Action::Allow);
    let e = &fixed.blobs[&x];
    assert_eq!(e.note.as_deref(), Some("keep"));
    assert_eq!(e.callers.as_ref().unwrap().len(), 2);
}

#[test]
fn refusal_messages_snapshot() {
    let x = BlobId::of(b"x");
    let mut m = manifest(&format!(
        "[blobs]\n\"{}\" = {{ size = 1, callers = [\"app.eval:*\"] }}\n",
        x
    ));
    m.path = Some("/etc/app/hermetic.toml".into());
    let ctx = LoadContext {
        file: Some("/models/my model.pt"),
        location: Some("/app/train.py:42"),
        entry_point: Some("torch.load (pickle.Unpickler)"),
        scanner: Some("dangerous; imports os.system (called); findings: dangerous_import"),
    };
    let mut out = String::new();
    for (mode, size) in [
        (Mode::Enforce, 1),
        (Mode::Enforce, 9),
        (Mode::Deny, 1),
        (Mode::Warn, 1),
    ] {
        let query = q(&x, size, USER);
        let Judgement::Unlisted(why) = m.judge(mode, &query) else {
            panic!("{mode} allowed it")
        };
        out.push_str(&format!("== {mode}, size {size}\n"));
        out.push_str(&m.refusal(mode, &query, &why, &ctx).message);
        out.push('\n');
    }
    let bare = Manifest::default();
    let y = BlobId::of(b"y");
    let query = q(&y, 3, USER);
    out.push_str("== no manifest, unlisted\n");
    out.push_str(
        &bare
            .refusal(Mode::Deny, &query, &Why::Denied, &LoadContext::default())
            .message,
    );
    insta::assert_snapshot!(out);
}

#[test]
fn modes_parse() {
    for m in [Mode::Deny, Mode::Enforce, Mode::Record, Mode::Warn] {
        assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
    }
    assert!("Deny".parse::<Mode>().is_err());
    assert!("".parse::<Mode>().is_err());
}
