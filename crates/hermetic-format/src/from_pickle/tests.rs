use super::*;

#[test]
fn hex_of_big_ints() {
    assert_eq!(big_hex(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), "10000000000000000");
    assert_eq!(big_hex(&[0xff]), "-1");
    assert_eq!(big_hex(&[0]), "0");
}

#[test]
fn every_evaluated_torch_dtype_is_a_format_name() {
    // A converted `$torch_dtype` must read back: the evaluator's dtypes
    // are a subset of the format's closed table.
    for d in eval::TorchDtype::ALL {
        assert!(crate::dtype::is_torch_dtype_name(d.name()), "{}", d.name());
    }
}

#[test]
fn record_descr_has_padding() {
    let d = eval::parse_typestr("<i4").unwrap();
    let rec = NpDtype::Record {
        fields: vec![eval::NpField {
            name: "a".into(),
            dtype: d,
            offset: 4,
            title: None,
        }],
        itemsize: 12,
        aligned: false,
    };
    assert_eq!(
        np_descr(&rec).unwrap(),
        serde_json::json!([["", "|V4"], ["a", "<i4"], ["", "|V4"]])
    );
}
