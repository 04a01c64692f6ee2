use super::torch_zip::stoull_as_i64;

/// Each case as torch 2.x's PyTorchStreamReader read it (measured).
#[test]
fn version_records_read_as_torch_reads_them() {
    for (text, want) in [
        (&b"3\n"[..], Some(3)),
        (b"3abc", Some(3)),
        (b" \t\n3", Some(3)),
        (b"+3", Some(3)),
        (b"-3", Some(-3)),
        (b"0x3", Some(0)),
        (b"18446744073709551615", Some(-1)),
        (b"-18446744073709551610", Some(6)),
        (b"99999999999999999999", None),
        (b"", None),
        (b"x", None),
        (b"-", None),
    ] {
        assert_eq!(stoull_as_i64(text), want, "{text:?}");
    }
}
