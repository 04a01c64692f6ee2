use super::super::testutil::{zip_with, Opts, E};
use super::*;
use crate::codes::FindingCode;
use crate::policy::Verdict;
use crate::{scan_bytes, FileReport, Limits, Policy};

const SAFE: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.";
const EVIL: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.";

fn scan(d: &[u8]) -> FileReport {
    scan_bytes(d, "t", &Policy::default(), &Limits::default())
}

fn torch_like(pkl: &[u8]) -> Vec<E> {
    vec![
        E::torch("archive/data.pkl", pkl),
        E::torch("archive/data/0", &[0x80, 0x02, 1, 2, 3, 4, 5, 6]),
        E::torch("archive/version", b"3\n"),
    ]
}

fn zip(entries: &[E]) -> Vec<u8> {
    zip_with(entries, &Opts::default())
}

fn rules(r: &FileReport) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.code == FindingCode::AmbiguousZip)
        .map(|f| f.reason.clone())
        .collect()
}

fn assert_rule(r: &FileReport, rule: ZipRule) {
    let reasons = rules(r);
    assert!(
        reasons
            .iter()
            .any(|x| x.contains(&format!("({})", rule.as_str()))),
        "expected {rule:?} in {reasons:#?}"
    );
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn torch_like_archive_is_clean() {
    let d = zip(&torch_like(SAFE));
    let a = ZipArchive::parse(&d, 100).unwrap();
    assert!(a.issues.is_empty(), "{:?}", a.issues);
    let r = scan(&d);
    assert_eq!(r.format, "torch-zip");
    assert_eq!(r.verdict, Verdict::Safe, "{:?}", r.findings);
    assert_eq!(r.streams.len(), 1);
    assert_eq!(r.streams[0].name, "archive/data.pkl");
    // Absolute offset of the record's data.
    let off = r.streams[0].offset as usize;
    assert_eq!(&d[off..off + SAFE.len()], SAFE);
}

#[test]
fn any_root_name_and_every_pkl() {
    let mut e = torch_like(SAFE);
    for x in &mut e {
        x.name = String::from_utf8_lossy(&x.name)
            .replace("archive/", "mymodel/")
            .into_bytes();
    }
    e.push(E::torch("mymodel/extra.pkl", EVIL));
    let r = scan(&zip(&e));
    assert_eq!(r.format, "torch-zip");
    assert_eq!(r.streams.len(), 2);
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert!(r.streams.iter().any(|s| s.name == "mymodel/extra.pkl"));
}

#[test]
fn zip64_end_records_like_torch() {
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            zip64: true,
            ..Opts::default()
        },
    );
    let a = ZipArchive::parse(&d, 100).unwrap();
    assert!(a.zip64);
    assert!(a.issues.is_empty(), "{:?}", a.issues);
    assert_eq!(scan(&d).verdict, Verdict::Safe);
}

#[test]
fn record_lookup_ignores_case_like_miniz() {
    let e = vec![
        E::torch("Archive/DATA.PKL", EVIL),
        E::torch("Archive/version", b"3\n"),
    ];
    let r = scan(&zip(&e));
    assert_eq!(r.format, "torch-zip");
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn torchscript_is_suspicious() {
    let mut e = torch_like(SAFE);
    e.push(E::torch(
        "archive/code/__torch__.py",
        b"def forward(self): pass\n",
    ));
    e.push(E::torch("archive/constants.pkl", b"\x80\x02)."));
    let r = scan(&zip(&e));
    assert_eq!(r.format, "torchscript");
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::TorchscriptCode && f.severity == Verdict::Suspicious));
    assert_eq!(r.verdict, Verdict::Suspicious);
    assert_eq!(r.streams.len(), 2);
}

#[test]
fn duplicate_names() {
    let mut e = torch_like(SAFE);
    e.push(E::torch("archive/data.pkl", EVIL));
    let r = scan(&zip(&e));
    assert_rule(&r, ZipRule::DuplicateName);
    // Both copies are scanned.
    assert_eq!(r.streams.len(), 2);
    let mut e = torch_like(SAFE);
    e.push(E::torch("archive/DATA.pkl", EVIL));
    assert_rule(&scan(&zip(&e)), ZipRule::DuplicateName);
    let mut e = torch_like(SAFE);
    e.push(E::stored("archive/data.pkl\0x", SAFE));
    assert_rule(&scan(&zip(&e)), ZipRule::BadName);
}

#[test]
fn overlapping_entries() {
    // Two central entries pointing at the same local header.
    let e = torch_like(SAFE);
    let d = zip_with(
        &e,
        &Opts {
            central_offsets: Some(vec![0, 0, 0]),
            ..Opts::default()
        },
    );
    let r = scan(&d);
    assert!(rules(&r)
        .iter()
        .any(|x| x.contains("overlapping") || x.contains("out of order")));
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn out_of_order() {
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            central_order: Some(vec![1, 0, 2]),
            ..Opts::default()
        },
    );
    assert_rule(&scan(&d), ZipRule::OutOfOrder);
}

#[test]
fn header_mismatches() {
    let mut e = torch_like(SAFE);
    e[0].local_name = Some(b"archive/other.pkl".to_vec());
    assert_rule(&scan(&zip(&e)), ZipRule::HeaderMismatch);
    let mut e = vec![E::stored("a.pkl", SAFE)];
    e[0].local_crc = Some(0x1234_5678);
    assert_rule(&scan(&zip(&e)), ZipRule::HeaderMismatch);
    let mut e = vec![E::stored("a.pkl", SAFE)];
    e[0].local_method = Some(8);
    assert_rule(&scan(&zip(&e)), ZipRule::HeaderMismatch);
}

#[test]
fn bad_crc_on_scanned_record() {
    let mut e = torch_like(SAFE);
    e[0].crc = Some(0xdead_beef);
    let r = scan(&zip(&e));
    assert_rule(&r, ZipRule::BadCrc);
    // A bad CRC on a tensor record is not read, so not reported.
    let mut e = torch_like(SAFE);
    e[1].crc = Some(0xdead_beef);
    let r = scan(&zip(&e));
    assert_eq!(r.verdict, Verdict::Safe, "{:?}", r.findings);
}

#[test]
fn trailing_and_leading_data() {
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            suffix: b"junk".to_vec(),
            ..Opts::default()
        },
    );
    assert_rule(&scan(&d), ZipRule::TrailingData);
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            prefix: b"JUNKJUNK".to_vec(),
            ..Opts::default()
        },
    );
    let r = scan(&d);
    assert_eq!(r.format, "torch-zip");
    assert_rule(&r, ZipRule::LeadingData);
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            prefix: b"JUNKJUNK".to_vec(),
            absolute: true,
            ..Opts::default()
        },
    );
    assert_rule(&scan(&d), ZipRule::LeadingData);
}

#[test]
fn bytes_between_records() {
    // A local header hidden between two records: a streaming unzipper
    // walking local headers reads `hidden.pkl`, torch.load never does.
    let hidden = zip(&[E::stored("hidden.pkl", b"cos\nsystem\n.")]);
    let cd = hidden.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            after: vec![hidden[..cd].to_vec()],
            ..Opts::default()
        },
    );
    let r = scan(&d);
    assert_eq!(r.format, "torch-zip");
    assert_rule(&r, ZipRule::Gap);
    // The same bytes after the last record, before the central directory.
    let n = torch_like(SAFE).len();
    let mut after = vec![Vec::new(); n];
    after[n - 1] = b"padding".to_vec();
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            after,
            ..Opts::default()
        },
    );
    assert_rule(&scan(&d), ZipRule::Gap);
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            before_end: b"hidden".to_vec(),
            ..Opts::default()
        },
    );
    assert_rule(&scan(&d), ZipRule::Gap);
    // Records that follow each other, data descriptors included, have none.
    let r = scan(&zip(&torch_like(SAFE)));
    assert!(
        !rules(&r).iter().any(|x| x.contains("between")),
        "{:?}",
        rules(&r)
    );
}

#[test]
fn polyglot_pickle_then_zip() {
    let d = zip_with(
        &[E::stored("a.pkl", SAFE)],
        &Opts {
            prefix: EVIL.to_vec(),
            ..Opts::default()
        },
    );
    let r = scan(&d);
    assert_eq!(r.format, "pickle");
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::PolyglotPickleZip && f.severity == Verdict::Dangerous));
    assert!(r.streams.iter().any(|s| s.name == "a.pkl"));
    assert!(r.streams.iter().any(|s| s.name == "pickle"));
}

#[test]
fn zip_that_parses_as_a_pickle_is_not_a_polyglot() {
    // `P` (PERSID) reads the rest of the local header up to a newline as
    // a persistent id; the entry's data is the rest of a pickle. No
    // stock unpickler accepts PERSID without a persistent_load.
    let name = "x\n";
    let tail = b"\x85.";
    let d = zip(&[E::stored(name, tail)]);
    assert_eq!(
        d.iter().position(|&b| b == b'\n'),
        Some(31),
        "the line must end in the name"
    );
    let r = scan(&d);
    assert!(
        r.findings
            .iter()
            .all(|f| f.code != FindingCode::PolyglotPickleZip),
        "{:?}",
        r.findings
    );
    assert_eq!(r.format, "zip");
}

#[test]
fn encryption_and_descriptor() {
    let mut e = vec![E::stored("a.pkl", SAFE)];
    e[0].flags = FLAG_ENCRYPTED;
    assert_rule(&scan(&zip(&e)), ZipRule::Encrypted);
    // Bit 3 with a matching descriptor (as torch writes) is fine.
    let e = vec![E::torch("a/data.pkl", SAFE)];
    let a = ZipArchive::parse(&zip(&e), 10).unwrap();
    assert!(a.issues.is_empty(), "{:?}", a.issues);
    // Bit 3 without a descriptor is not.
    let mut e = vec![E::torch("a/data.pkl", SAFE)];
    e[0].descriptor = false;
    assert_rule(&scan(&zip(&e)), ZipRule::DataDescriptor);
}

#[test]
fn count_mismatch() {
    let d = zip_with(
        &torch_like(SAFE),
        &Opts {
            count: Some(2),
            ..Opts::default()
        },
    );
    assert_rule(&scan(&d), ZipRule::CountMismatch);
}

#[test]
fn unsupported_method_on_scanned_entry() {
    let mut e = vec![E::stored("a.pkl", SAFE)];
    e[0].method = 12;
    e[0].local_method = Some(12);
    assert_rule(&scan(&zip(&e)), ZipRule::UnsupportedMethod);
}

#[test]
fn deflated_entries_and_npz() {
    let e = vec![E::deflated("a.pkl", EVIL)];
    let r = scan(&zip(&e));
    assert_eq!(r.format, "zip");
    assert_eq!(r.streams[0].name, "deflate:a.pkl");
    assert_eq!(r.verdict, Verdict::Dangerous);
    let npy = b"\x93NUMPY\x01\x00\x46\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }            \n\0\0\0\0\0\0\0\0";
    let r = scan(&zip(&[E::stored("a.npy", npy), E::deflated("b.npy", npy)]));
    assert_eq!(r.format, "npz");
    assert_eq!(r.verdict, Verdict::Safe, "{:?}", r.findings);
}

#[test]
fn generic_zip_content_rules() {
    let inner = zip(&[E::stored("evil.bin", EVIL)]);
    let r = scan(&zip(&[
        E::stored("readme.txt", b"hello"),
        E::stored("nested.zip", &inner),
    ]));
    assert_eq!(r.format, "zip");
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert!(
        r.streams.iter().any(|s| s.name == "nested.zip:evil.bin"),
        "{:?}",
        r.streams
    );
    let r = scan(&zip(&[E::stored("readme.txt", b"hello")]));
    assert_eq!(r.verdict, Verdict::Safe);
    assert!(r.streams.is_empty());
}

#[test]
fn overlapping_entries_are_scanned_once() {
    let inner = zip(&[E::stored("x.pkl", SAFE)]);
    let e: Vec<E> = (0..50)
        .map(|i| E::stored(&format!("n{i}.zip"), &inner))
        .collect();
    let offsets = vec![0u64; 50];
    let d = zip_with(
        &e,
        &Opts {
            central_offsets: Some(offsets),
            ..Opts::default()
        },
    );
    let r = scan(&d);
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert_eq!(r.streams.len(), 1);
}

#[test]
fn nesting_is_bounded() {
    let mut d = zip(&[E::stored("x.pkl", EVIL)]);
    for _ in 0..20 {
        d = zip(&[E::stored("n.zip", &d)]);
    }
    let r = scan(&d);
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::LimitExceeded));
}

#[test]
fn entry_limit() {
    let e: Vec<E> = (0..10).map(|i| E::stored(&format!("f{i}"), b"x")).collect();
    let d = zip(&e);
    let limits = Limits {
        max_archive_entries: 5,
        ..Limits::default()
    };
    let r = scan_bytes(&d, "t", &Policy::default(), &limits);
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::LimitExceeded));
}

#[test]
fn broken_zips() {
    let r = scan(b"PK\x03\x04 not really");
    assert_eq!(r.format, "zip");
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::MalformedContainer));
    let d = zip(&torch_like(SAFE));
    // Corrupt the central directory signature.
    let a = ZipArchive::parse(&d, 10).unwrap();
    let mut bad = d.clone();
    bad[a.central_offset as usize] = b'X';
    let r = scan(&bad);
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::AmbiguousZip));
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert!(scan(b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").verdict == Verdict::Safe);
}
