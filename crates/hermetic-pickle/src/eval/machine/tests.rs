use super::super::bytes::{decimal_to_twos, long_value};
use super::*;

#[test]
fn decimal_and_long_agree() {
    for (text, bytes) in [
        ("0", vec![0u8]),
        ("255", vec![0xff, 0]),
        ("-1", vec![0xff]),
        ("-256", vec![0, 0xff]),
        ("128", vec![0x80, 0]),
        ("-128", vec![0x80]),
    ] {
        assert_eq!(decimal_to_twos(text.as_bytes()).unwrap(), bytes, "{text}");
    }
    assert_eq!(long_value(&[0xff, 0xff]), Value::Int(-1));
    assert_eq!(long_value(&[]), Value::Int(0));
    let big =
        decimal_to_twos(b"1606938044258990275541962092341162602522202993782792835313497").unwrap();
    assert!(matches!(long_value(&big), Value::BigInt(_)));
}

#[test]
fn surrogates_are_kept() {
    let (b, utf8) = encode_code_points(&[0x41, 0xd800]);
    assert!(!utf8);
    assert_eq!(b, vec![0x41, 0xed, 0xa0, 0x80]);
}
