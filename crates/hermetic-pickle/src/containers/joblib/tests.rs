use super::*;
use crate::{scan_bytes, FileReport, Limits, Policy};

/// A joblib-style wrapper for a float64 array of `n` elements, protocol 4.
pub fn wrapper(n: u8, align: bool) -> Vec<u8> {
    let mut d =
        b"\x8c\x13joblib.numpy_pickle\x94\x8c\x11NumpyArrayWrapper\x94\x93\x94)\x81\x94}\x94("
            .to_vec();
    d.extend_from_slice(b"\x8c\x08subclass\x94\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94");
    d.extend_from_slice(b"\x8c\x05shape\x94K");
    d.push(n);
    d.extend_from_slice(b"\x85\x94\x8c\x05order\x94\x8c\x01C\x94");
    d.extend_from_slice(b"\x8c\x05dtype\x94\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02f8\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b");
    d.extend_from_slice(b"\x8c\x0aallow_mmap\x94\x88");
    if align {
        d.extend_from_slice(b"\x8c\x1bnumpy_array_alignment_bytes\x94K\x10");
    }
    d.extend_from_slice(b"ub");
    d
}

fn dump(arrays: &[(u8, bool)], tail: &[u8]) -> Vec<u8> {
    let mut d = b"\x80\x04]\x94(".to_vec();
    for &(n, align) in arrays {
        d.extend(wrapper(n, align));
        if align {
            d.push(3);
            d.extend_from_slice(&[0xff; 3]);
        }
        d.extend(vec![0x2e; 8 * n as usize]);
    }
    d.extend_from_slice(tail);
    d.extend_from_slice(b"e.");
    d
}

fn scan(d: &[u8]) -> FileReport {
    scan_bytes(d, "t", &Policy::default(), &Limits::default())
}

#[test]
fn plain_dump_is_safe() {
    let d = dump(&[(3, true), (2, false)], b"K\x01");
    let r = scan(&d);
    assert_eq!(r.format, "joblib");
    assert_eq!(r.streams.len(), 1);
    assert_eq!(
        r.verdict,
        Verdict::Safe,
        "{:?}",
        r.all_findings().collect::<Vec<_>>()
    );
    assert_eq!(r.streams[0].length as usize, d.len());
}

#[test]
fn payload_after_arrays_is_found_at_its_file_offset() {
    let evil = b"\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94";
    let d = dump(&[(2, true)], evil);
    let r = scan(&d);
    assert_eq!(r.verdict, Verdict::Dangerous);
    let f = r.streams[0]
        .findings
        .iter()
        .find(|f| f.name == "system")
        .unwrap();
    assert_eq!(d[f.offset as usize], 0x93);
}

#[test]
fn object_arrays_are_nested_streams() {
    let mut d = b"\x80\x04".to_vec();
    // The same wrapper with an object dtype.
    let mut w = wrapper(1, true);
    let at = w.windows(4).position(|x| x == b"\x8c\x02f8").unwrap();
    w[at + 2] = b'O';
    d.extend(w);
    d.extend_from_slice(b"\x80\x05cos\nsystem\n\x8c\x02id\x85R.");
    d.extend_from_slice(b".");
    let r = scan(&d);
    assert_eq!(r.format, "joblib");
    assert_eq!(r.streams.len(), 2);
    assert_eq!(r.streams[1].name, "pickle:array[0]");
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn unwalkable_arrays_are_dangerous() {
    // Array data shorter than the shape says.
    let mut d = b"\x80\x04".to_vec();
    d.extend(wrapper(200, false));
    d.extend_from_slice(&[0; 10]);
    let r = scan(&d);
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == FindingCode::UnreadableRecord));
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn protocol_1_wrapper_machinery_is_not_dangerous() {
    let mut d = b"ccopy_reg\n_reconstructor\n(cjoblib.numpy_pickle\nNumpyArrayWrapper\nc__builtin__\nobject\nNtR}(".to_vec();
    d.extend_from_slice(b"X\x05\x00\x00\x00shapeK\x02\x85X\x05\x00\x00\x00dtypecnumpy\ndtype\n(X\x02\x00\x00\x00f8I00\nI01\ntR");
    d.extend_from_slice(b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbub");
    d.extend_from_slice(&[b'.'; 16]);
    d.push(b'.');
    let r = scan(&d);
    assert_eq!(r.format, "joblib");
    assert_eq!(
        r.verdict,
        Verdict::Safe,
        "{:?}",
        r.all_findings().collect::<Vec<_>>()
    );
    // The same machinery around something else keeps its classification.
    let r = scan(b"ccopy_reg\n_reconstructor\n(cmymod\nThing\nc__builtin__\nobject\nNtR.");
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn pickle_mentioning_the_name_is_plain() {
    let r = scan(b"\x80\x04\x8c\x11NumpyArrayWrapper\x94.");
    assert_eq!(r.format, "pickle");
    assert_eq!(r.verdict, Verdict::Safe);
}
