//! Interop with the reference reader (issue #14): trees planned and written by
//! this crate, read back with the `safetensors` crate's
//! `SafeTensors::deserialize`, give every saved name exactly its dtype, shape
//! and row-major bytes (docs/SPEC.md section 3), for views of shared storage,
//! tied weights, shards and every dtype. The Python suite
//! (tests/test_interop.py) checks the same against the Python readers.

use hermetic_format::*;
use safetensors::{Dtype as S, SafeTensors};
use std::collections::BTreeMap;

/// Every hermetic dtype, with the safetensors dtype the spec stores it as
/// (`None`: the `U8` form with the element size as a last dimension). Written
/// out here, not taken from `Dtype::safetensors`, so the test checks it.
const DTYPES: &[(Dtype, Option<S>)] = &[
    (Dtype::Bool, Some(S::BOOL)),
    (Dtype::U8, Some(S::U8)),
    (Dtype::I8, Some(S::I8)),
    (Dtype::U16, Some(S::U16)),
    (Dtype::I16, Some(S::I16)),
    (Dtype::U32, Some(S::U32)),
    (Dtype::I32, Some(S::I32)),
    (Dtype::U64, Some(S::U64)),
    (Dtype::I64, Some(S::I64)),
    (Dtype::F16, Some(S::F16)),
    (Dtype::BF16, Some(S::BF16)),
    (Dtype::F32, Some(S::F32)),
    (Dtype::F64, Some(S::F64)),
    (Dtype::C64, Some(S::C64)),
    (Dtype::F8E4M3, Some(S::F8_E4M3)),
    (Dtype::F8E4M3Fnuz, Some(S::F8_E4M3FNUZ)),
    (Dtype::F8E5M2, Some(S::F8_E5M2)),
    (Dtype::F8E5M2Fnuz, Some(S::F8_E5M2FNUZ)),
    (Dtype::C128, None),
    (Dtype::C32, None),
    (Dtype::F8E8M0, None),
    (Dtype::F4E2M1X2, None),
    (Dtype::Bits1x8, None),
    (Dtype::Bits2x4, None),
    (Dtype::Bits4x2, None),
    (Dtype::Bits8, None),
    (Dtype::Bits16, None),
    (Dtype::Raw(12), None),
    (Dtype::Raw(3), None),
];

/// A view: name, storage, dtype, shape, byte strides, byte position.
struct V {
    name: String,
    storage: usize,
    dtype: Dtype,
    shape: Vec<u64>,
    strides: Vec<i64>,
    pos: i64,
}

fn v(name: &str, storage: usize, dtype: Dtype, shape: &[u64], strides: &[i64], pos: i64) -> V {
    V {
        name: name.into(),
        storage,
        dtype,
        shape: shape.to_vec(),
        strides: strides.to_vec(),
        pos,
    }
}

/// Row-major byte strides.
fn dense(shape: &[u64], itemsize: u64) -> Vec<i64> {
    contiguous_strides(shape, itemsize).unwrap()
}

/// What a plain reader must see under a view's name: dtype, shape, bytes.
fn expected(view: &V, storages: &[Vec<u8>]) -> (S, Vec<usize>, Vec<u8>) {
    let k = view.dtype.itemsize();
    let st = DTYPES.iter().find(|(d, _)| *d == view.dtype).unwrap().1;
    let mut shape: Vec<usize> = view.shape.iter().map(|&d| d as usize).collect();
    if st.is_none() {
        shape.push(k as usize);
    }
    let bytes = gather(
        &storages[view.storage],
        k,
        &view.shape,
        &view.strides,
        view.pos,
    )
    .unwrap();
    (st.unwrap_or(S::U8), shape, bytes)
}

/// Plans the views (and `refs`: (name, index of a view) reached again, as a
/// binding reports a `$ref` to a tensor) and returns the plan with each
/// entry's bytes.
fn plan(storages: &[Vec<u8>], views: &[V], refs: &[(&str, usize)]) -> (Plan, Vec<Vec<u8>>) {
    let mut p = Planner::new();
    let mut pairs = Vec::new();
    let mut ids = Vec::new();
    for view in views {
        let raw = matches!(view.dtype, Dtype::Raw(_));
        let spec = ViewSpec {
            kind: if raw {
                TensorKind::Numpy
            } else {
                TensorKind::Torch
            },
            dtype: view.dtype,
            shape: view.shape.clone(),
            strides: view.strides.clone(),
            pos: view.pos,
            requires_grad: None,
            np_dtype: raw.then(|| serde_json::json!(format!("|V{}", view.dtype.itemsize()))),
            device: None,
        };
        let id = p
            .add_view(
                view.name.clone(),
                view.storage as u64,
                storages[view.storage].len() as u64,
                spec,
            )
            .unwrap();
        ids.push(id);
        let k = p.tree.push(Node::Str(view.name.clone()));
        pairs.push((k, id));
    }
    for (name, of) in refs {
        // Memo numbers: the root dict 0, then the views in order.
        let r = p.tree.push(Node::Ref(1 + *of));
        p.add_alias(name.to_string(), ids[*of]);
        let k = p.tree.push(Node::Str(name.to_string()));
        pairs.push((k, r));
    }
    let root = p.tree.push(Node::Dict(pairs));
    let (plan, origins) = p.finish(root, vec![]).unwrap();
    let data = origins
        .iter()
        .map(|o| match o {
            EntryOrigin::Storage { key, lo, hi } => {
                storages[*key as usize][*lo as usize..*hi as usize].to_vec()
            }
            EntryOrigin::Gather {
                key,
                lo,
                hi,
                itemsize,
                shape,
                strides,
                offset,
            } => gather(
                &storages[*key as usize][*lo as usize..*hi as usize],
                *itemsize,
                shape,
                strides,
                *offset,
            )
            .unwrap(),
            EntryOrigin::Bytes { .. } => unreachable!(),
        })
        .collect();
    (plan, data)
}

/// Every name a plain reader of `files` sees, with its dtype, shape and bytes,
/// and the `__metadata__` aliases.
#[allow(clippy::type_complexity)]
fn read_plain(
    files: &[Vec<u8>],
) -> (
    BTreeMap<String, (S, Vec<usize>, Vec<u8>)>,
    BTreeMap<String, String>,
) {
    let mut got = BTreeMap::new();
    let mut md = BTreeMap::new();
    for bytes in files {
        let st = SafeTensors::deserialize(bytes).unwrap();
        for (name, t) in st.tensors() {
            let old = got.insert(name, (t.dtype(), t.shape().to_vec(), t.data().to_vec()));
            assert!(old.is_none(), "a name in two files");
        }
        let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
        for (k, val) in meta.metadata().clone().unwrap_or_default() {
            if k != "format" && !k.starts_with("__hermetic") {
                md.insert(k, val);
            }
        }
    }
    (got, md)
}

/// The reference reader sees every view (and every `$ref` name) exactly, and
/// hermetic's own reader agrees with it through the shared storage.
fn check(storages: &[Vec<u8>], views: &[V], refs: &[(&str, usize)], shard: Option<u64>) {
    let (plan, data) = plan(storages, views, refs);
    let slices = || SliceSource(data.iter().map(|d| &d[..]).collect());
    let dir = tempfile::tempdir().unwrap();
    let (files, ar) = match shard {
        None => {
            let bytes = write_to_vec(&plan, &mut slices()).unwrap();
            let f = DataFile::from_bytes("<t>", Box::new(bytes.clone())).unwrap();
            (vec![bytes], Archive::from_file("<t>".into(), f).unwrap())
        }
        Some(max) => {
            let written = write_sharded(
                dir.path(),
                &plan,
                &mut slices(),
                max,
                WriteOptions::default(),
            )
            .unwrap();
            let (index, shards) = written.split_last().unwrap();
            assert!(index.ends_with(INDEX_NAME));
            let idx = read_index(index).unwrap();
            let files: Vec<Vec<u8>> = shards.iter().map(|p| std::fs::read(p).unwrap()).collect();
            // The weight map names the shard of every entry.
            for (p, bytes) in shards.iter().zip(&files) {
                let file = p.file_name().unwrap().to_str().unwrap();
                for name in SafeTensors::deserialize(bytes).unwrap().names() {
                    assert!(idx
                        .weight_map
                        .contains(&(name.to_string(), file.to_string())));
                }
            }
            (files, Archive::open(dir.path()).unwrap())
        }
    };
    ar.verify(None).unwrap();
    ar.verify_views().unwrap();
    let (got, aliases) = read_plain(&files);
    let mut seen = Vec::new();
    let named = views
        .iter()
        .map(|view| (view.name.as_str(), view))
        .chain(refs.iter().map(|(n, of)| (*n, &views[*of])));
    for (name, view) in named {
        let entry = if got.contains_key(name) {
            name.to_string()
        } else {
            // A tied weight: stored once, `__metadata__[alias] = entry`.
            aliases
                .get(name)
                .unwrap_or_else(|| panic!("{name}: neither an entry nor an alias"))
                .clone()
        };
        let want = expected(view, storages);
        assert_eq!(got[&entry], want, "{name} (entry {entry})");
        seen.push(entry.clone());
        // hermetic resolves the name's tree node to the same bytes.
        let (f, e) = ar.locate(&entry).unwrap();
        assert_eq!(ar.files[f].entry_bytes(e), &want.2[..], "{name}");
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        seen,
        "entries no name was saved under"
    );
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A case: its name, its views, and names a view is reached by again.
type Case = (&'static str, Vec<V>, Vec<(&'static str, usize)>);

/// The view cases of tests/test_interop.py over a 12x4 storage of `dtype`.
fn view_cases(dtype: Dtype) -> Vec<Case> {
    let k = dtype.itemsize() as i64;
    let row = 4 * k;
    let w = |n: &str| v(n, 0, dtype, &[12, 4], &[row, k], 0);
    let block = |n: &str, i: i64| v(n, 0, dtype, &[4, 4], &[row, k], 4 * row * i);
    vec![
        ("flat", vec![w("w")], vec![]),
        (
            "qkv_views",
            vec![block("q", 0), block("k", 1), block("v", 2)],
            vec![],
        ),
        (
            "fused_and_views",
            vec![w("W"), block("q", 0), block("k", 1), block("v", 2)],
            vec![],
        ),
        (
            "transposed",
            vec![v("wt", 0, dtype, &[4, 12], &[k, row], 0)],
            vec![],
        ),
        (
            "weight_and_transpose",
            vec![w("w"), v("wt", 0, dtype, &[4, 12], &[k, row], 0)],
            vec![],
        ),
        (
            "offset_view",
            vec![v("o", 0, dtype, &[3, 4], &[row, k], 5 * k)],
            vec![],
        ),
        (
            "weight_and_offset_view",
            vec![w("w"), v("o", 0, dtype, &[3, 4], &[row, k], 5 * k)],
            vec![],
        ),
        (
            "column_chunks",
            vec![
                v("a", 0, dtype, &[12, 2], &[row, k], 0),
                v("b", 0, dtype, &[12, 2], &[row, k], 2 * k),
            ],
            vec![],
        ),
        (
            "strided_and_broadcast",
            vec![
                v("every_other", 0, dtype, &[6, 3], &[2 * row, k], k),
                v("expanded", 0, dtype, &[3, 4], &[0, k], row),
            ],
            vec![],
        ),
        ("tied_two_views", vec![w("embed"), w("lm_head")], vec![]),
        ("tied_same_object", vec![w("embed")], vec![("lm_head", 0)]),
    ]
}

#[test]
fn every_dtype_and_view_reads_exactly_in_the_safetensors_crate() {
    for (i, &(dtype, _)) in DTYPES.iter().enumerate() {
        let storages = vec![random(48 * dtype.itemsize() as usize, i as u64)];
        for (case, views, refs) in view_cases(dtype) {
            for shard in [None, Some(64)] {
                let run = std::panic::catch_unwind(|| check(&storages, &views, &refs, shard));
                assert!(run.is_ok(), "dtype {dtype}, case {case}, shard {shard:?}");
            }
        }
    }
}

#[test]
fn mixed_storages_and_dtypes_in_one_sharded_file() {
    // Several storages of different dtypes, with views and ties, in shards.
    let mut storages = Vec::new();
    let mut views = Vec::new();
    for (i, &(dtype, _)) in DTYPES.iter().enumerate() {
        let k = dtype.itemsize();
        storages.push(random(24 * k as usize, 100 + i as u64));
        let s = storages.len() - 1;
        let name = format!("t{i}");
        views.push(v(&name, s, dtype, &[6, 4], &dense(&[6, 4], k), 0));
        let k = k as i64;
        views.push(v(&format!("{name}.t"), s, dtype, &[4, 6], &[k, 4 * k], 0));
        views.push(v(&format!("{name}.row"), s, dtype, &[4], &[k], 8 * k));
    }
    let refs = [("tied", 0)];
    for shard in [None, Some(100), Some(1)] {
        check(&storages, &views, &refs, shard);
    }
}
