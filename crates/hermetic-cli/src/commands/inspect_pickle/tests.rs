use super::*;

#[test]
fn decimals() {
    assert_eq!(big_decimal(&[0xff]), "-1");
    assert_eq!(big_decimal(&[0, 1]), "256");
    assert_eq!(big_decimal(&[0]), "0");
    let two_64: Vec<u8> = vec![0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(big_decimal(&two_64), "18446744073709551616");
}

#[test]
fn contiguity() {
    assert!(contiguous(&[2, 3], &[3, 1]));
    assert!(!contiguous(&[2, 3], &[1, 2]));
    assert!(contiguous(&[1, 3], &[100, 1]));
}
