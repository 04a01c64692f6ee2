use super::typestr::descr_to_dtype;
use super::*;

#[test]
fn typestrs() {
    let d = parse_typestr("<f8").unwrap();
    assert_eq!(d.itemsize(), 8);
    assert_eq!(d.descr(), "<f8");
    assert_eq!(parse_typestr(">i2").unwrap().descr(), ">i2");
    assert_eq!(parse_typestr("|b1").unwrap().descr(), "|b1");
    assert_eq!(parse_typestr("<U3").unwrap().itemsize(), 12);
    assert_eq!(parse_typestr("<U3").unwrap().descr(), "<U3");
    assert_eq!(parse_typestr("<M8[ns]").unwrap().descr(), "<M8[ns]");
    assert_eq!(parse_typestr("<m8[2s]").unwrap().descr(), "<m8[2s]");
    assert_eq!(parse_typestr("u1").unwrap().descr(), "|u1");
    assert!(parse_typestr("O").unwrap().has_object());
    assert!(parse_typestr("<f3").is_none());
    // numpy's one-letter codes, not kinds: 'b' is int8, '?' is bool.
    assert_eq!(parse_typestr("b").unwrap().descr(), "|i1");
    assert_eq!(parse_typestr("?").unwrap().descr(), "|b1");
    assert_eq!(parse_typestr(">d").unwrap().descr(), ">f8");
    assert_eq!(parse_typestr("c").unwrap().descr(), "|S1");
    assert_eq!(parse_typestr("V").unwrap().descr(), "|V0");
    assert_eq!(parse_typestr("U").unwrap().descr(), "<U0");
    assert_eq!(parse_typestr("|f4").unwrap().descr(), "<f4");
    for refused in ["f12", "c24", "b2", "i0", "B1", "T", "O2", "M4", "f+4"] {
        assert!(parse_typestr(refused).is_none(), "{refused}");
    }
    assert!(parse_typestr("<f8[ns]").is_none());
    assert!(parse_typestr("").is_none());
    assert!(parse_typestr("S99999999999999999999").is_none());
}

#[test]
fn npy_descrs() {
    use crate::containers::pyliteral::literal_eval;
    let d = descr_to_dtype(
        &literal_eval("[('a', '<i4'), ('', '|V4'), ('b', '>f8', (2,))]").unwrap(),
        0,
    )
    .unwrap();
    assert_eq!(d.itemsize(), 24);
    let NpDtype::Record { fields, .. } = &d else {
        panic!()
    };
    assert_eq!(fields.len(), 2);
    assert_eq!(fields[1].offset, 8);
    assert!(descr_to_dtype(&literal_eval("[('a', '<i4'), ('a', '<i4')]").unwrap(), 0).is_err());
}
