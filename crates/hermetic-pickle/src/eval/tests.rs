use super::*;
use std::path::PathBuf;

fn opts(mode: Mode, flavor: Flavor) -> LoadOptions<'static> {
    static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    LoadOptions {
        mode,
        flavor,
        policy: POLICY.get_or_init(Policy::default),
        limits: Limits::default(),
        allowed: Allowed::none(),
        encoding: None,
        companions: None,
    }
}

fn load_any(data: &[u8]) -> Result<Loaded<'_>, EvalError> {
    load(data, "t.pkl", &opts(Mode::Strict, Flavor::Any))
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_none_or(|e| e != "json"));
    v.sort();
    v
}

#[test]
fn plain_values() {
    // {'a': [1, 2.5, 'x', None, True], 'b': (b'hi', 2**70)} protocol 4
    let data = b"\x80\x04\x954\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x01x\x94N\x88e\x8c\x01b\x94C\x02hi\x94\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@\x86\x94u.";
    let l = load_any(data).unwrap();
    let Value::Dict(d) = l.arena.get(l.root) else {
        panic!("{:?}", l.arena.get(l.root))
    };
    assert_eq!(d.items.len(), 2);
    let (_, list) = d.items[0];
    let items = l.arena.seq_of(list).unwrap();
    assert_eq!(l.arena.get(items[0]), &Value::Int(1));
    assert_eq!(l.arena.get(items[1]), &Value::Float(2.5));
    assert_eq!(l.arena.str_of(items[2]), Some("x"));
    assert_eq!(items[3], NONE);
    assert_eq!(items[4], TRUE);
    let (_, tup) = d.items[1];
    let t = l.arena.seq_of(tup).unwrap();
    assert!(matches!(l.arena.get(t[1]), Value::BigInt(_)));
}

#[test]
fn shared_references_and_cycles() {
    // l = []; l.append(l); [l, l] (protocol 2, memo)
    let data = b"\x80\x02]q\x00(]q\x01h\x01ah\x01e.";
    let l = load_any(data).unwrap();
    let outer = l.arena.seq_of(l.root).unwrap();
    assert_eq!(outer[0], outer[1]);
    let inner = l.arena.seq_of(outer[0]).unwrap();
    assert_eq!(inner, &[outer[0]]);
    assert_eq!(l.arena.reachable(l.root).len(), 2);
}

#[test]
fn foreign_globals_are_refused_with_every_name() {
    let data =
        b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R\x63builtins\neval\nh\x00\x85R\x86.";
    let err = load_any(data).unwrap_err();
    let EvalError::Unsafe(u) = &err else {
        panic!("{err}")
    };
    assert_eq!(u.imports, vec!["os.system", "builtins.eval"]);
    let msg = err.to_string();
    assert!(msg.contains("hermetic inspect t.pkl"), "{msg}");
    assert!(msg.contains("os.system"));
}

#[test]
fn malformed_streams_name_the_offset() {
    for data in [
        &b"\x80\x02]q\x00(K\x01"[..],
        b"\x80\x02a.",
        b"\x80\x02h\x05.",
    ] {
        let err = load_any(data).unwrap_err();
        assert!(matches!(
            err,
            EvalError::Malformed { .. } | EvalError::Unsafe(_)
        ));
        assert!(err.to_string().contains("t.pkl"), "{err}");
    }
    // Unsafe is reported before the stream is run; structural findings too.
    let err = load_any(b"\x80\x02K\x01").unwrap_err();
    assert!(err.to_string().contains("truncated_stream"), "{err}");
}

#[test]
fn opaque_mode_records_foreign_objects() {
    // mymodule.Net() NEWOBJ, BUILD {'w': 1}
    let data = b"\x80\x02cmymodule\nNet\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00wq\x03K\x01sb.";
    assert!(matches!(load_any(data), Err(EvalError::Unsafe(_))));
    let l = load(data, "m.pkl", &opts(Mode::Salvage, Flavor::Any)).unwrap();
    let Value::Object(o) = l.arena.get(l.root) else {
        panic!()
    };
    assert_eq!(o.made, Made::New);
    assert!(
        matches!(l.arena.get(o.class), Value::Global(g) if matches!(&**g, Global::Foreign { module, name } if module == "mymodule" && name == "Net"))
    );
    assert!(matches!(l.arena.get(o.state.unwrap()), Value::Dict(_)));
    // Dangerous globals stay refused in salvage mode, but inspect shows them.
    let evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.";
    assert!(load(evil, "e", &opts(Mode::Salvage, Flavor::Any)).is_err());
    let l = load(evil, "e", &opts(Mode::Inspect, Flavor::Any)).unwrap();
    assert!(matches!(l.arena.get(l.root), Value::Object(_)));
}

#[test]
fn torch_flavor_refuses_plain_pickles() {
    let err = load(b"\x80\x02K\x01.", "p", &opts(Mode::Strict, Flavor::Torch)).unwrap_err();
    assert!(err.to_string().contains("magic number"), "{err}");
}

#[test]
fn numpy_pickles() {
    // np.array([1.0, 2.0], '>f8') pickled with protocol 2 by numpy 2.
    let data = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02c_codecs\nencode\nq\x03X\x01\x00\x00\x00bq\x04X\x06\x00\x00\x00latin1q\x05\x86q\x06Rq\x07\x87q\x08Rq\x09(K\x01K\x02\x85q\x0acnumpy\ndtype\nq\x0bX\x02\x00\x00\x00f8q\x0c\x89\x88\x87q\x0dRq\x0e(K\x03X\x01\x00\x00\x00>q\x0fNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x10b\x89h\x03X\x11\x00\x00\x00?\xc3\xb0\x00\x00\x00\x00\x00\x00@\x00\x00\x00\x00\x00\x00\x00q\x11h\x05\x86q\x12Rq\x13tq\x14b.";
    let l = load_any(data).unwrap();
    let Value::Array(a) = l.arena.get(l.root) else {
        panic!("{:?}", l.arena.get(l.root))
    };
    // ndarray.__setstate__ turns byte-swapped data native, dtype and all.
    assert_eq!(a.dtype.descr(), "<f8");
    assert_eq!(a.shape, vec![2]);
    let ArrayData::Bytes(b) = &a.data else {
        panic!()
    };
    assert_eq!(&b[..8], &1.0f64.to_le_bytes());
}

#[test]
fn benign_corpus_loads() {
    let files = fixtures("benign");
    if files.is_empty() {
        return;
    }
    for p in files {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(&p).unwrap();
        let r = load_any(&data);
        if name.starts_with("model_whole") {
            let Err(EvalError::Unsafe(u)) = r else {
                panic!("{name} loaded")
            };
            assert!(
                u.imports.iter().any(|i| i == "fixture_models.TinyNet"),
                "{:?}",
                u.imports
            );
            let l = load(&data, &name, &opts(Mode::Salvage, Flavor::Any)).unwrap();
            assert!(matches!(l.arena.get(l.root), Value::Object(_)), "{name}");
            continue;
        }
        let l = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.ends_with(".pt") {
            assert!(matches!(l.format, Format::TorchZip | Format::TorchLegacy));
            assert!(!l.storages.is_empty(), "{name}");
            for i in 0..l.storages.len() {
                assert_eq!(l.storage_bytes(i as u32).len() as u64, l.storages[i].nbytes);
            }
            let torch = load(&data, &name, &opts(Mode::Strict, Flavor::Torch)).unwrap();
            assert_eq!(torch.storages.len(), l.storages.len());
        }
    }
}

#[test]
fn attack_corpus_is_refused() {
    for p in fixtures("attacks") {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(&p).unwrap();
        for mode in [Mode::Strict, Mode::Salvage] {
            match load(&data, &name, &opts(mode, Flavor::Any)) {
                Err(EvalError::Unsafe(u)) => {
                    assert!(!u.offenders.is_empty(), "{name}");
                }
                Err(e) => panic!("{name}: refused, but not as unsafe: {e}"),
                Ok(_) => panic!("{name}: loaded in {mode:?}"),
            }
        }
        // Inspect never runs anything either; it may show the file or refuse it.
        let _ = load(&data, &name, &opts(Mode::Inspect, Flavor::Any));
    }
}

#[test]
fn legacy_storage_layout_is_checked() {
    let files = fixtures("benign");
    let Some(p) = files.iter().find(|p| p.ends_with("mlp_state_legacy.pt")) else {
        return;
    };
    let data = std::fs::read(p).unwrap();
    // Cutting the last storage short is an error naming the offset.
    let cut = &data[..data.len() - 3];
    let err = load_any(cut).unwrap_err();
    assert!(err.to_string().contains("the file ends first"), "{err}");
}

#[test]
fn zip_checkpoint_tensor_views() {
    let files = fixtures("benign");
    let Some(p) = files.iter().find(|p| p.ends_with("views_tied.pt")) else {
        return;
    };
    let data = std::fs::read(p).unwrap();
    let l = load_any(&data).unwrap();
    let Value::Dict(d) = l.arena.get(l.root) else {
        panic!()
    };
    let get = |k: &str| {
        d.items
            .iter()
            .find(|(key, _)| l.arena.str_of(*key) == Some(k))
            .map(|p| p.1)
            .unwrap()
    };
    assert_eq!(get("base"), get("alias"));
    let Value::Tensor(t) = l.arena.get(get("col_slice")) else {
        panic!()
    };
    assert_eq!(
        (t.offset, t.shape.clone(), t.stride.clone()),
        (2, vec![4, 3], vec![6, 1])
    );
    let Value::Tensor(b) = l.arena.get(get("base")) else {
        panic!()
    };
    assert_eq!(t.storage.unwrap().index, b.storage.unwrap().index);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn small_limits() -> Limits {
        Limits {
            max_opcodes: 1 << 16,
            max_decompressed: 1 << 20,
            max_eval_memory: 64 << 20,
            ..Limits::default()
        }
    }

    fn run(data: &[u8], mode: Mode) {
        let policy = Policy::default();
        let o = LoadOptions {
            mode,
            flavor: Flavor::Any,
            policy: &policy,
            limits: small_limits(),
            allowed: Allowed::none(),
            encoding: None,
            companions: None,
        };
        if let Err(e) = load(data, "f", &o) {
            // Every error names the file.
            assert!(e.to_string().contains('f'));
        }
        // The evaluator itself, without the scan in front of it.
        let mut r = checkpoint::Reader {
            file: "f".into(),
            opts: &o,
            budget: Budget::new(64 << 20),
        };
        let _ = checkpoint::read(data, &mut r, FileReport::new("f", "?"));
    }

    fn seeds() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = fixtures("benign")
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter(|d| d.len() < 64 << 10)
            .collect();
        v.push(b"\x80\x02]q\x00(]q\x01h\x01ah\x01e.".to_vec());
        v.push(
            b"\x80\x02cmymodule\nNet\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00wq\x03K\x01sb."
                .to_vec(),
        );
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            run(&data, Mode::Strict);
            run(&data, Mode::Inspect);
        }

        #[test]
        fn pickle_opcode_soup_never_panics(
            ops in proptest::collection::vec(prop::sample::select(vec![
                &b"("[..], b")", b"]", b"}", b"\x8f", b"N", b"K\x01", b"K\x02", b"a", b"e", b"s", b"u",
                b"t", b"\x85", b"\x86", b"\x87", b"0", b"2", b"1", b"q\x00", b"h\x00", b"\x94",
                b"l", b"d", b"\x90", b"\x91", b"b", b"R", b"\x81", b"X\x01\x00\x00\x00a",
                b"cbuiltins\nset\n", b"c__builtin__\nset\n", b"ccollections\nOrderedDict\n",
                b"cnumpy\ndtype\n", b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n",
                b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch\nFloatStorage\n", b"Q",
                b"cmymodule\nThing\n", b"\x88", b"\x89", b"C\x04abcd", b"G\x00\x00\x00\x00\x00\x00\x00\x00",
            ]), 0..60),
        ) {
            let mut data = b"\x80\x02".to_vec();
            for op in ops {
                data.extend_from_slice(op);
            }
            data.push(b'.');
            run(&data, Mode::Strict);
            run(&data, Mode::Inspect);
        }

        #[test]
        fn mutated_checkpoints_never_panic(
            which in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let seeds = seeds();
            let mut d = seeds[which.index(seeds.len())].clone();
            for (at, byte) in edits {
                let i = at.index(d.len());
                d[i] = byte;
            }
            if let Some(c) = cut {
                let n = c.index(d.len() + 1);
                d.truncate(n);
            }
            run(&d, Mode::Strict);
            run(&d, Mode::Inspect);
        }
    }
}

#[test]
fn allow_list_syntax_and_matching() {
    use super::AllowList;
    let list =
        AllowList::parse(["argparse:Namespace", "omegaconf.base:*", "pkg:Outer.Inner"]).unwrap();
    assert!(list.permits("argparse:Namespace"));
    assert!(!list.permits("argparse:ArgumentParser"));
    assert!(list.permits("omegaconf.base:Metadata"));
    // `module:*` covers what the module names, never its submodules.
    assert!(!list.permits("omegaconf.base.sub:Metadata"));
    assert!(!list.permits("omegaconf:Metadata"));
    assert!(!list.permits("omegaconf.base:f.<locals>.C"));
    assert!(list.permits("pkg:Outer.Inner"));
    for bad in [
        "argparse",
        "argparse:",
        ":x",
        "a b:c",
        "a:b;c",
        "$(x):y",
        "a:*x",
        "a.:b",
    ] {
        assert!(AllowList::parse([bad]).is_err(), "{bad}");
    }
}

#[test]
fn big_hex_octal_and_binary_ints_read_as_int_s_0() {
    use super::bytes::{long_value, radix_to_twos};
    use super::value::Value;
    // 0x8000000000000000 = 2**63: nine bytes, the top one a zero sign byte.
    let b = radix_to_twos(false, 16, b"8000000000000000").unwrap();
    assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
    let b = radix_to_twos(true, 16, b"8000000000000000").unwrap();
    assert_eq!(long_value(&b), Value::Int(i64::MIN));
    let b = radix_to_twos(true, 2, b"1_0000_0000").unwrap();
    assert_eq!(long_value(&b), Value::Int(-256));
    let b = radix_to_twos(false, 8, b"777").unwrap();
    assert_eq!(long_value(&b), Value::Int(0o777));
    assert!(radix_to_twos(false, 8, b"8").is_none());
}
