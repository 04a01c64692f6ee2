use super::testutil::{zip_with, Opts, E};
use crate::{scan_bytes, Limits, Policy};
use proptest::prelude::*;
use std::io::Write;

const PICKLE: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01cos\nsystem\nq\x02X\x01\x00\x00\x00bq\x03]q\x04(K\x01K\x02eu.";

fn npy(descr: &str, payload: &[u8]) -> Vec<u8> {
    let header = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2,), }}\n");
    let mut d = b"\x93NUMPY\x01\x00".to_vec();
    d.extend_from_slice(&(header.len() as u16).to_le_bytes());
    d.extend_from_slice(header.as_bytes());
    d.extend_from_slice(payload);
    d
}

fn seeds() -> Vec<Vec<u8>> {
    let torch = vec![
        E::torch("archive/data.pkl", PICKLE),
        E::torch("archive/data/0", &[1, 2, 3, 4]),
        E::deflated("archive/extra.pkl", PICKLE),
    ];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(PICKLE).unwrap();
    let mut joblib = b"\x80\x04".to_vec();
    joblib.extend(super::joblib::tests::wrapper(2, true));
    joblib.extend_from_slice(&[2, 0xff, 0xff]);
    joblib.extend_from_slice(&[0; 16]);
    joblib.push(b'.');
    vec![
        zip_with(&torch, &Opts::default()),
        zip_with(
            &torch,
            &Opts {
                zip64: true,
                ..Opts::default()
            },
        ),
        npy("'|O'", PICKLE),
        npy("'<f8'", &[0; 16]),
        zip_with(
            &[E::stored("a.npy", &npy("'|O'", PICKLE))],
            &Opts::default(),
        ),
        PICKLE.to_vec(),
        gz.finish().unwrap(),
        joblib,
        super::tar::tests::tar(&[
            ("pickle", PICKLE, b'0'),
            ("storages", b"\x80\x02K\x00.\x80\x02].", b'0'),
        ]),
    ]
}

fn limits() -> Limits {
    Limits {
        max_decompressed: 1 << 20,
        max_opcodes: 1 << 16,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        scan_bytes(&data, "t", &Policy::default(), &limits());
    }

    #[test]
    fn random_bytes_behind_magic_never_panic(
        magic in 0usize..8,
        data in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let prefix: &[u8] = [
            &b"PK\x03\x04"[..], b"PK\x05\x06", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x03\x00",
            b"\x1f\x8b\x08\x00", b"BZh9", b"\x5d\x00\x00\x80\x00", b"\xfd7zXZ\x00",
        ][magic];
        let mut d = prefix.to_vec();
        d.extend_from_slice(&data);
        scan_bytes(&d, "t", &Policy::default(), &limits());
    }

    #[test]
    fn mutated_containers_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let seeds = seeds();
        let mut d = seeds[which.index(seeds.len())].clone();
        for (at, byte) in edits {
            let i = at.index(d.len());
            d[i] = byte;
        }
        if truncate {
            let n = cut.index(d.len() + 1);
            d.truncate(n);
        }
        scan_bytes(&d, "t", &Policy::default(), &limits());
    }
}

#[test]
fn seeds_scan_cleanly_before_mutation() {
    for s in seeds() {
        let r = scan_bytes(&s, "t", &Policy::default(), &limits());
        assert_ne!(r.format, "none");
        assert!(!r.streams.is_empty() || r.format == "npy", "{}", r.format);
    }
}
