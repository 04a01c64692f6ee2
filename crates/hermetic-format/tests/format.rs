//! End-to-end: files the writer makes are valid safetensors, read back, and
//! every corruption the spec lists is rejected with a clear error.

use hermetic_format::*;
use proptest::prelude::*;
use std::path::Path;

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn sample() -> Vec<u8> {
    let a = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = vec![7u8, 8, 9];
    let c: Vec<u8> = (0..16u8).collect();
    tensors_to_vec(
        &[
            ("a", Dtype::F32, &[2, 3], &a),
            ("b", Dtype::U8, &[3], &b),
            ("c", Dtype::C128, &[1], &c),
        ],
        &[("note", "hi")],
    )
    .unwrap()
}

fn open_bytes(b: Vec<u8>) -> Result<Archive> {
    let f = DataFile::from_bytes("<t>", Box::new(b))?;
    Archive::from_file("<t>".into(), f)
}

#[test]
fn safetensors_crate_reads_what_we_write() {
    let bytes = sample();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let a = st.tensor("a").unwrap();
    assert_eq!(a.dtype(), safetensors::Dtype::F32);
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(a.data(), &f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])[..]);
    // complex128 has no safetensors code: a U8 entry with a trailing itemsize dim.
    let c = st.tensor("c").unwrap();
    assert_eq!(
        (c.dtype(), c.shape()),
        (safetensors::Dtype::U8, &[1usize, 16][..])
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().clone().unwrap();
    assert_eq!(md["format"], "pt");
    assert_eq!(md["note"], "hi");
    assert!(md.contains_key(HERMETIC_KEY));
}

#[test]
fn layout_is_aligned() {
    let bytes = sample();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!((8 + n) % 64, 0, "data section starts on a 64-byte boundary");
    let ar = open_bytes(bytes).unwrap();
    for f in &ar.files {
        for e in &f.header.entries {
            let want = e.dtype().map(|d| d.alignment()).unwrap_or(1);
            assert_eq!(e.start % want, 0, "{} at {}", e.name, e.start);
        }
    }
    // The 16-byte complex entry comes first.
    assert_eq!(ar.entry_names(), ["c", "a", "b"]);
}

#[test]
fn reads_back_tree_and_verifies() {
    let ar = open_bytes(sample()).unwrap();
    assert!(ar.has_tree());
    assert_eq!(ar.metadata().get("note").map(String::as_str), Some("hi"));
    let tree = ar.tree();
    let ts = tree.tensors();
    assert_eq!(ts.len(), 3);
    let (_, e, r) = ar.resolve(ts[2]).unwrap();
    assert_eq!(e.name, "c");
    assert_eq!((r.dtype, r.shape.clone()), (Dtype::C128, vec![1]));
    ar.verify(None).unwrap();
}

#[test]
fn verify_catches_a_flipped_payload_byte() {
    let mut bytes = sample();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    let ar = open_bytes(bytes).unwrap();
    let e = ar.verify(None).unwrap_err();
    assert_eq!(e.code(), "digest_mismatch");
    assert!(e.to_string().contains("tensor entry `b` is corrupt"), "{e}");
    let checks = ar.check(None).unwrap();
    assert_eq!(checks.iter().filter(|c| !c.ok).count(), 1);
}

#[test]
fn plain_safetensors_is_a_flat_dict_without_digests() {
    let a = f32s(&[1.0, 2.0]);
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &a).unwrap();
    let bytes = safetensors::serialize([("w", view)], None).unwrap();
    let ar = open_bytes(bytes).unwrap();
    assert!(!ar.has_tree());
    assert_eq!(ar.tree().tensors()[0].entry, "w");
    assert_eq!(ar.verify(None).unwrap_err().code(), "no_digests");
}

fn header_with(json: &str, data: usize) -> Vec<u8> {
    let mut v = (json.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v.resize(v.len() + data, 0);
    v
}

fn rejects(bytes: Vec<u8>, needle: &str) {
    match open_bytes(bytes) {
        Ok(_) => panic!("accepted; expected an error containing {needle:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains(needle), "{s:?} does not contain {needle:?}");
            assert!(s.starts_with("<t>: "), "names the file: {s}");
        }
    }
}

#[test]
fn hostile_files() {
    let good = sample();
    // Truncated anywhere.
    for cut in [0, 5, 8, 40, good.len() - 1] {
        assert!(open_bytes(good[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    rejects(good[..4].to_vec(), "8-byte header length");
    rejects(good[..good.len() - 1].to_vec(), "truncated");
    // Huge header length.
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    rejects(huge, "header length exceeds the limit");
    // Offsets out of range, overlapping, wrong dtype sizes.
    rejects(
        header_with(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            4,
        ),
        "truncated",
    );
    rejects(
        header_with(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        ),
        "data_offsets",
    );
    rejects(
        header_with(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        ),
        "shape times its dtype size",
    );
    rejects(header_with("{not json", 0), "JSON");
    // Trees that break the spec.
    let tree_file = |tree: &str, digest: &str| {
        let doc = format!(
            r#"{{"version":1,"digest":"xxh3-128","digests":{{"a":"{digest}"}},"tree":{tree}}}"#
        );
        let md = serde_json::json!({"format": "pt", HERMETIC_KEY: doc});
        let h = format!(
            r#"{{"__metadata__":{md},"a":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#
        );
        header_with(&h, 8)
    };
    let d = digest(&[0u8; 8]);
    open_bytes(tree_file(r#"{"$tensor":"a"}"#, &d))
        .unwrap()
        .verify(None)
        .unwrap();
    rejects(tree_file(r#"{"$tensor":"zz"}"#, &d), "missing entry `zz`");
    rejects(
        tree_file(r#"{"$tensor":{"entry":"a","dtype":"F32","shape":[3]}}"#, &d),
        "the entry has 8 bytes",
    );
    rejects(
        tree_file(
            r#"{"$tensor":{"entry":"a","dtype":"F32","shape":[2],"strides":[-4],"offset":4}}"#,
            &d,
        ),
        "non-negative strides",
    );
    rejects(
        tree_file(
            r#"{"$tensor":{"entry":"a","dtype":"F64","shape":[1],"offset":1}}"#,
            &d,
        ),
        "reaches bytes",
    );
    rejects(tree_file(r#"{"$tensor":"a"}"#, "xyz"), "32 lowercase hex");
    let deep = "[".repeat(MAX_DEPTH + 5) + &"]".repeat(MAX_DEPTH + 5);
    rejects(
        tree_file(&deep, &d),
        "container nesting depth exceeds the limit",
    );
    let deeper = "[".repeat(10_000) + &"]".repeat(10_000);
    assert!(open_bytes(tree_file(&deeper, &d)).is_err());
}

#[test]
fn writes_atomically_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    let a = f32s(&[1.0]);
    save_tensors(
        &path,
        &[("a", Dtype::F32, &[1], &a)],
        &[],
        WriteOptions::default(),
    )
    .unwrap();
    // A failing source leaves the old file intact and no temporary behind.
    struct Failing;
    impl EntrySource for Failing {
        fn write_entry(
            &mut self,
            _: usize,
            _: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        ) -> Result<()> {
            Err(FormatError::Source {
                entry: "a".into(),
                detail: "preempted".into(),
            })
        }
    }
    let plan = Plan {
        entries: vec![PlannedEntry {
            name: "a".into(),
            dtype: safetensors::Dtype::F32,
            shape: vec![1],
            nbytes: 4,
            align: 4,
            follows: false,
        }],
        tree: None,
        metadata: vec![],
    };
    assert!(write_file(&path, &plan, &mut Failing, WriteOptions::default()).is_err());
    Archive::open(&path).unwrap().verify(None).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn digests_hashed_beside_the_write_match_the_bytes() {
    // Slices of 256 KiB and more are hashed on another thread while they are
    // written; a source may hand an entry over in several slices of any size.
    struct Chunked(Vec<Vec<u8>>);
    impl EntrySource for Chunked {
        fn write_entry(
            &mut self,
            index: usize,
            sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        ) -> Result<()> {
            let data = &self.0[index];
            let mut at = 0;
            for step in [1, 300 << 10, 5 << 10, 9 << 20] {
                let end = (at + step).min(data.len());
                sink(&data[at..end]).map_err(|e| FormatError::Source {
                    entry: index.to_string(),
                    detail: e.to_string(),
                })?;
                at = end;
            }
            sink(&data[at..]).map_err(|e| FormatError::Source {
                entry: index.to_string(),
                detail: e.to_string(),
            })
        }
    }
    let sizes = [(10 << 20) + 4, 3 << 10, 20 << 20];
    let data: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|i| (i * 7 + k) as u8).collect())
        .collect();
    let plan = Plan {
        entries: sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| PlannedEntry {
                name: format!("t{k}"),
                dtype: safetensors::Dtype::U8,
                shape: vec![n as u64],
                nbytes: n as u64,
                align: 1,
                follows: false,
            })
            .collect(),
        tree: None,
        metadata: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    write_file(
        &path,
        &plan,
        &mut Chunked(data.clone()),
        WriteOptions::default(),
    )
    .unwrap();
    let ar = Archive::open(&path).unwrap();
    ar.verify(None).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (k, want) in data.iter().enumerate() {
        assert_eq!(st.tensor(&format!("t{k}")).unwrap().data(), &want[..]);
    }
}

#[test]
fn sharded_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 100]).collect();
    let mut p = Planner::new();
    let mut pairs = Vec::new();
    for i in 0..data.len() {
        let id = p
            .add_view(
                format!("w{i}"),
                i as u64,
                100,
                ViewSpec {
                    kind: TensorKind::Torch,
                    dtype: Dtype::U8,
                    shape: vec![100],
                    strides: vec![1],
                    pos: 0,
                    requires_grad: None,
                    np_dtype: None,
                    device: None,
                },
            )
            .unwrap();
        let k = p.tree.push(Node::Str(format!("w{i}")));
        pairs.push((k, id));
    }
    let root = p.tree.push(Node::Dict(pairs));
    let (plan, origins) = p.finish(root, vec![]).unwrap();
    let slices: Vec<&[u8]> = origins
        .iter()
        .map(|o| match o {
            EntryOrigin::Storage { key, .. } => &data[*key as usize][..],
            _ => unreachable!(),
        })
        .collect();
    let written = write_sharded(
        dir.path(),
        &plan,
        &mut SliceSource(slices),
        250,
        WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(written.len(), 4, "3 shards + index: {written:?}");
    for ar in [
        Archive::open(dir.path()).unwrap(),
        Archive::open(&dir.path().join(INDEX_NAME)).unwrap(),
    ] {
        assert!(ar.has_tree());
        assert_eq!(ar.files.len(), 3);
        ar.verify(None).unwrap();
        let (f, e) = ar.locate("w4").unwrap();
        assert_eq!(ar.files[f].entry_bytes(e), &data[4][..]);
    }
    // Each shard alone reads as a flat dict.
    let shard = Archive::open(&dir.path().join(shard_name(0, 3))).unwrap();
    assert!(!shard.has_tree());
    assert_eq!(shard.entry_names(), ["w0", "w1"]);
    // A new save with fewer shards removes the stale ones.
    let one: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
    write_sharded(
        dir.path(),
        &plan,
        &mut SliceSource(one),
        1 << 20,
        WriteOptions::default(),
    )
    .unwrap();
    assert!(!dir.path().join(shard_name(0, 3)).exists());
    Archive::open(dir.path()).unwrap().verify(None).unwrap();
}

#[test]
fn index_rejects_escaping_shard_names() {
    let dir = tempfile::tempdir().unwrap();
    let ix = dir.path().join(INDEX_NAME);
    std::fs::write(&ix, r#"{"weight_map":{"a":"../etc/passwd"}}"#).unwrap();
    let e = Archive::open(dir.path()).err().unwrap();
    assert_eq!(e.code(), "invalid_index", "{e}");
    assert!(!Path::new("/nonexistent").exists());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_error_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = open_bytes(data);
    }

    #[test]
    fn mutated_files_error_or_verify(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = sample();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(ar) = open_bytes(bytes) {
            // A flip in the payload is caught by verify; one in the header's
            // padding or a digest string may leave a readable file.
            let _ = ar.verify(None);
        }
    }

    #[test]
    fn random_trees_round_trip(json in arb_tree()) {
        let t = Tree::from_json(&json, "<t>").unwrap();
        prop_assert_eq!(t.to_json().unwrap(), json);
    }
}

fn arb_tree() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|x| {
            if x.is_finite() {
                serde_json::to_string(&x).unwrap()
            } else {
                format!(r#"{{"$float":"{:016x}"}}"#, x.to_bits())
            }
        }),
        ".*".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| format!(r#"{{"$tuple":[{}]}}"#, v.join(","))),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(|v| {
                let items: Vec<String> = v.into_iter().map(|(k, v)| format!("{k},{v}")).collect();
                format!(r#"{{"$dict":[{}]}}"#, items.join(","))
            }),
        ]
    })
}

/// A view of a storage: name, dtype, shape, byte strides, byte position.
type ViewOf<'a> = (&'a str, Dtype, &'a [u64], &'a [i64], i64);

/// Plans views of one storage and writes them, materializing each entry from
/// its origin the way a binding does.
fn write_views(storage: &[u8], views: &[ViewOf<'_>]) -> Vec<u8> {
    let mut p = Planner::new();
    let mut pairs = Vec::new();
    for (name, dtype, shape, strides, pos) in views {
        let spec = ViewSpec {
            kind: TensorKind::Torch,
            dtype: *dtype,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            pos: *pos,
            requires_grad: None,
            np_dtype: None,
            device: None,
        };
        let id = p
            .add_view(name.to_string(), 1, storage.len() as u64, spec)
            .unwrap();
        let k = p.tree.push(Node::Str(name.to_string()));
        pairs.push((k, id));
    }
    let root = p.tree.push(Node::Dict(pairs));
    let (plan, origins) = p.finish(root, vec![]).unwrap();
    let data: Vec<Vec<u8>> = origins
        .iter()
        .map(|o| match o {
            EntryOrigin::Storage { lo, hi, .. } => storage[*lo as usize..*hi as usize].to_vec(),
            EntryOrigin::Gather {
                lo,
                hi,
                itemsize,
                shape,
                strides,
                offset,
                ..
            } => gather(
                &storage[*lo as usize..*hi as usize],
                *itemsize,
                shape,
                strides,
                *offset,
            )
            .unwrap(),
            EntryOrigin::Bytes { .. } => unreachable!(),
        })
        .collect();
    write_to_vec(
        &plan,
        &mut SliceSource(data.iter().map(|d| &d[..]).collect()),
    )
    .unwrap()
}

#[test]
fn views_of_one_storage_read_exactly_in_the_safetensors_crate() {
    // W = 12x4 int32 0..48; q, k, v its row blocks; W.T; a strided slice
    // W[::2, 1::2]; two overlapping windows of the flat storage.
    let storage: Vec<u8> = (0..48i32).flat_map(|x| x.to_le_bytes()).collect();
    let views: &[ViewOf<'_>] = &[
        ("q", Dtype::I32, &[4, 4], &[16, 4], 0),
        ("k", Dtype::I32, &[4, 4], &[16, 4], 64),
        ("v", Dtype::I32, &[4, 4], &[16, 4], 128),
        ("wt", Dtype::I32, &[4, 12], &[4, 16], 0),
        ("strided", Dtype::I32, &[6, 2], &[32, 8], 4),
        ("win1", Dtype::I32, &[10], &[4], 8),
        ("win2", Dtype::I32, &[10], &[4], 20),
    ];
    let file = write_views(&storage, views);
    let st = safetensors::SafeTensors::deserialize(&file).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        ["k", "q", "strided", "v", "win1", "win2", "wt"]
            .map(String::from)
            .iter()
            .collect::<Vec<_>>()
    );
    let ar = open_bytes(file.clone()).unwrap();
    ar.verify(None).unwrap();
    for (name, dtype, shape, strides, pos) in views {
        let want = gather(&storage, dtype.itemsize(), shape, strides, *pos).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I32, "{name}");
        assert_eq!(
            t.shape(),
            shape.iter().map(|&d| d as usize).collect::<Vec<_>>()
        );
        assert_eq!(t.data(), &want[..], "{name}");
        // hermetic reads the same values through the shared storage.
        let tr = ar
            .tree()
            .tensors()
            .into_iter()
            .find(|t| t.entry == *name)
            .unwrap()
            .clone();
        let (f, storage_e, r) = ar.resolve(&tr).unwrap();
        let start = storage_e.start as usize;
        let region = &ar.files[f].backing.bytes()[start..start + storage_e.nbytes as usize];
        let got = gather(
            region,
            r.dtype.itemsize(),
            &r.shape,
            &r.strides,
            r.offset as i64,
        );
        assert_eq!(got.as_deref(), Some(&want[..]), "{name}");
        assert_eq!(storage_e.name, "q", "{name} shares q's storage");
    }
    // q, k, v cost no extra bytes: 48 storage bytes... plus the copies.
    let q = st.tensor("q").unwrap().data().as_ptr() as usize;
    let k = st.tensor("k").unwrap().data().as_ptr() as usize;
    assert_eq!(k - q, 64);
}

#[test]
fn a_based_view_that_disagrees_with_its_entry_fails_verify() {
    let storage: Vec<u8> = (0..16i32).flat_map(|x| x.to_le_bytes()).collect();
    let views: &[ViewOf<'_>] = &[
        ("w", Dtype::I32, &[4, 4], &[16, 4], 0),
        ("wt", Dtype::I32, &[4, 4], &[4, 16], 0),
    ];
    let mut file = write_views(&storage, views);
    let st = safetensors::SafeTensors::deserialize(&file).unwrap();
    let wt = st.tensor("wt").unwrap().data().as_ptr() as usize - file.as_ptr() as usize;
    drop(st);
    // Change a byte of wt (verify_views looks at views, not digests).
    file[wt + 4] ^= 1;
    let ar = open_bytes(file.clone()).unwrap();
    let err = ar.verify_views().unwrap_err().to_string();
    assert!(err.contains("differs from its own entry"), "{err}");
}

#[test]
fn a_view_is_its_whole_entry_only_when_it_covers_it_row_major_from_byte_0() {
    let r = |shape: &[u64], strides: &[i64], offset: u64| Resolved {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        strides: strides.to_vec(),
        offset,
    };
    assert!(r(&[], &[], 0).is_whole_entry(4));
    assert!(r(&[5], &[4], 0).is_whole_entry(20));
    assert!(r(&[2, 3], &[12, 4], 0).is_whole_entry(24));
    assert!(r(&[1, 4, 1], &[16, 4, 4], 0).is_whole_entry(16));
    // A size-1 dimension with another stride reads the same bytes, but the
    // tensor would not carry the stride the file records.
    assert!(!r(&[1, 4, 1], &[64, 4, 4], 0).is_whole_entry(16));
    assert!(!r(&[3, 2], &[4, 12], 0).is_whole_entry(24)); // transposed
    assert!(!r(&[4], &[4], 4).is_whole_entry(20)); // offset
    assert!(!r(&[4], &[4], 0).is_whole_entry(20)); // part of the entry
    assert!(!r(&[0], &[4], 0).is_whole_entry(0)); // empty
    assert!(!r(&[u64::MAX, 2], &[8, 4], 0).is_whole_entry(8)); // overflow
}
