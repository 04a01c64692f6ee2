use super::*;
use crate::{scan_bytes, Limits, Policy};

/// A ustar header block for a member.
pub fn header(name: &str, size: usize, typeflag: u8) -> Vec<u8> {
    let mut h = vec![0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

pub fn tar(members: &[(&str, &[u8], u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, t) in members {
        out.extend(header(name, data.len(), *t));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.extend(vec![0u8; 2 * BLOCK]);
    out
}

const SYS_INFO: &[u8] = b"\x80\x02}q\x00X\x0d\x00\x00\x00little_endianq\x01\x88s.";
const MAIN: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor\nq\x02(X\x01\x00\x00\x001q\x03K\x00K\x02\x85K\x01\x85tq\x04Rq\x05s.";
const EVIL: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.";

fn storages(record: &[u8]) -> Vec<u8> {
    let mut s = b"\x80\x02K\x01.".to_vec();
    s.extend_from_slice(record);
    s.extend_from_slice(&2u64.to_le_bytes());
    s.extend_from_slice(&[0u8; 8]);
    s.extend_from_slice(b"\x80\x02].");
    s
}

fn tensors() -> Vec<u8> {
    let mut t = b"\x80\x02K\x01.".to_vec();
    t.extend_from_slice(b"\x80\x02X\x01\x00\x00\x001X\x01\x00\x00\x001ctorch\nFloatTensor\n\x87.");
    t.extend_from_slice(&1i32.to_le_bytes());
    t.extend_from_slice(&[0; 4]);
    t.extend_from_slice(&2i64.to_le_bytes());
    t.extend_from_slice(&1i64.to_le_bytes());
    t.extend_from_slice(&0i64.to_le_bytes());
    t
}

const RECORD: &[u8] = b"\x80\x02X\x01\x00\x00\x001X\x03\x00\x00\x00cpuctorch\nFloatStorage\n\x87.";

fn scan(d: &[u8]) -> crate::FileReport {
    scan_bytes(d, "t", &Policy::default(), &Limits::default())
}

#[test]
fn torch_tar_is_walked() {
    let s = storages(RECORD);
    let t = tensors();
    let d = tar(&[
        ("sys_info", SYS_INFO, b'0'),
        ("pickle", MAIN, b'0'),
        ("storages", &s, b'0'),
        ("tensors", &t, b'0'),
    ]);
    let r = scan(&d);
    assert_eq!(r.format, "torch-tar");
    let names: Vec<&str> = r.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "sys_info",
            "pickle",
            "storages",
            "storages[0]",
            "storages:views",
            "tensors",
            "tensors[0]"
        ]
    );
    // torch.FloatTensor is not allowlisted.
    assert_eq!(
        r.verdict,
        Verdict::Suspicious,
        "{:?}",
        r.all_findings().collect::<Vec<_>>()
    );
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn evil_storage_record_is_found() {
    let s = storages(EVIL);
    let d = tar(&[("storages", &s, b'0')]);
    let r = scan(&d);
    assert_eq!(r.format, "torch-tar");
    assert_eq!(r.verdict, Verdict::Dangerous);
    // The evil record names no storage type, so the walk stops there.
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::UnreadableRecord));
}

#[test]
fn links_and_duplicates() {
    let d = tar(&[("pickle", b"", b'2')]);
    let r = scan(&d);
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::UnreadableRecord));
    let d = tar(&[("pickle", MAIN, b'0'), ("pickle", EVIL, b'0')]);
    let r = scan(&d);
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::AmbiguousTar));
    assert_eq!(r.streams.len(), 2);
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn bad_counts_are_unreadable() {
    let mut s = b"\x80\x02X\x01\x00\x00\x00x.".to_vec();
    s.extend_from_slice(RECORD);
    let r = scan(&tar(&[("storages", &s, b'0')]));
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::UnreadableRecord));
    let r = scan(&tar(&[("storages", b"\x80\x02J\xff\xff\xff\x7f.", b'0')]));
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::UnreadableRecord));
    let mut t = b"\x80\x02K\x01.".to_vec();
    t.extend_from_slice(b"\x80\x02X\x01\x00\x00\x001X\x01\x00\x00\x001N\x87.");
    t.extend_from_slice(&(-1i32).to_le_bytes());
    let r = scan(&tar(&[("tensors", &t, b'0')]));
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::UnreadableRecord));
}

#[test]
fn generic_tar() {
    let d = tar(&[("readme.txt", b"hello", b'0'), ("model.pkl", EVIL, b'0')]);
    let r = scan(&d);
    assert_eq!(r.format, "tar");
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert_eq!(r.streams[0].name, "model.pkl");
    let d = tar(&[("readme.txt", b"hello", b'0')]);
    assert_eq!(scan(&d).verdict, Verdict::Safe);
}

#[test]
fn long_names_and_pax() {
    let long = "x".repeat(150) + ".pkl";
    let mut d = Vec::new();
    d.extend(header("././@LongLink", long.len() + 1, b'L'));
    d.extend_from_slice(long.as_bytes());
    d.push(0);
    d.resize(d.len().div_ceil(BLOCK) * BLOCK, 0);
    d.extend(tar(&[("short", EVIL, b'0')]));
    let a = parse_tar(&d, 10).unwrap();
    assert_eq!(a.members[0].name, long.as_bytes());
    let rec = b"19 path=pickle.pkl\n";
    let mut d = Vec::new();
    d.extend(header("pax", rec.len(), b'x'));
    d.extend_from_slice(rec);
    d.resize(d.len().div_ceil(BLOCK) * BLOCK, 0);
    d.extend(tar(&[("other", EVIL, b'0')]));
    let a = parse_tar(&d, 10).unwrap();
    assert_eq!(a.members[0].name, b"pickle.pkl");
}

#[test]
fn octal_fields() {
    assert_eq!(nti(b"0000644\0"), Some(0o644));
    assert_eq!(nti(b"  12 \0"), Some(0o12));
    assert_eq!(nti(b"\0\0\0"), Some(0));
    assert_eq!(nti(b"9\0"), None);
    assert_eq!(nti(&[0x80, 0, 0, 1, 0]), Some(256));
    assert!(!is_tar(&[0u8; 512]));
    assert!(!is_tar(b"hello"));
}
