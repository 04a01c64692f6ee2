use super::*;

#[test]
fn dcp_classes_are_inert() {
    // The tail of INERT_CLASSES: exactly DCP's nine classes.
    assert_eq!(crate::policy::DCP_METADATA_CLASSES.len(), 9);
    for c in crate::policy::DCP_METADATA_CLASSES {
        assert!(c.0.starts_with("torch.distributed.checkpoint."), "{c:?}");
        assert!(crate::policy::is_inert_class(c.0, c.1), "{c:?}");
        assert_eq!(
            Policy::builtin().classify(c.0, c.1).verdict,
            Verdict::Safe,
            "{c:?}"
        );
    }
}

#[test]
fn plain_names() {
    assert!(is_plain_name("__0_0.distcp"));
    for bad in ["", ".", "..", "../x", "/etc/passwd", "a\\b", "a\0"] {
        assert!(!is_plain_name(bad), "{bad:?}");
    }
}

#[test]
fn metadata_that_is_not_dcp_is_refused() {
    // {"a": 1}, protocol 2.
    let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.";
    let e = parse_metadata(p, "x").unwrap_err();
    assert!(e.contains("Metadata"), "{e}");
}

fn sharded() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dcp_sharded")
}

#[test]
fn two_ranks_are_read_and_consolidated() {
    let dir = sharded();
    let md = parse_metadata(&read(&dir.join(METADATA)).unwrap(), "m").unwrap();
    let Some((_, Item::Tensor { size, chunks, .. })) = md.items.iter().find(|(n, _)| n == "b")
    else {
        panic!("no tensor b");
    };
    assert_eq!(size, &[5, 2]);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1].offsets, vec![0, 1]);
    let l = consolidate(&dir).unwrap();
    // b = arange(10).reshape(5, 2), saved as two column shards.
    let i = l
        .storages
        .iter()
        .position(|s| s.nbytes == 40)
        .expect("b's storage");
    let b: Vec<f32> = l
        .storage_bytes(i as u32)
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(b, (0..10).map(|x| x as f32).collect::<Vec<_>>());
}

#[test]
fn the_folder_scans_safe_and_each_item_is_named() {
    let (reports, _) = crate::walk::scan_paths(&[sharded()], Policy::builtin(), Some(1)).unwrap();
    let formats: Vec<(&str, Verdict)> = reports
        .iter()
        .map(|r| (r.format.as_str(), r.verdict))
        .collect();
    assert_eq!(
        formats,
        vec![
            ("dcp-metadata", Verdict::Safe),
            ("dcp-shard", Verdict::Safe),
            ("dcp-shard", Verdict::Safe)
        ]
    );
    assert!(reports[1]
        .streams
        .iter()
        .any(|s| s.name.starts_with("w@0:")));
}
