use super::*;

fn scan(data: &[u8]) -> StreamAnalysis {
    analyze_stream(data, 0, 0, "t", &Policy::default(), &Limits::default())
}

#[test]
fn os_system_is_dangerous_and_called() {
    let a = scan(b"cos\nsystem\n(S'echo hi'\ntR.");
    assert_eq!(a.report.verdict, Verdict::Dangerous);
    let f = &a.report.findings[0];
    assert_eq!(
        (f.module.as_str(), f.name.as_str(), f.called),
        ("os", "system", true)
    );
    assert_eq!(f.offset, 0);
}

#[test]
fn stack_global_from_memo() {
    // proto 4: 'builtins' MEMOIZE 'eval' MEMOIZE, then GET both, STACK_GLOBAL
    let mut d = vec![0x80, 4];
    d.extend_from_slice(b"\x8c\x08builtins\x94\x8c\x04eval\x94h\x00h\x01\x93");
    d.extend_from_slice(b"\x8c\x011\x85R.");
    let a = scan(&d);
    assert_eq!(a.report.verdict, Verdict::Dangerous);
    assert!(a
        .report
        .findings
        .iter()
        .any(|f| f.name == "eval" && f.called));
}

#[test]
fn dynamic_global_is_dangerous() {
    let a = scan(b"\x80\x04N\x8c\x04eval\x93.");
    assert!(a
        .report
        .findings
        .iter()
        .any(|f| f.code == FindingCode::DynamicGlobal));
}

#[test]
fn truncated_is_dangerous() {
    let a = scan(b"\x80\x02cos\nsystem\n");
    assert_eq!(a.report.verdict, Verdict::Dangerous);
    assert!(a.end.is_none());
}

#[test]
fn py2_builtin_mapping() {
    let a = scan(b"c__builtin__\neval\n(S'1'\ntR.");
    assert_eq!(a.report.findings[0].module, "builtins");
    assert_eq!(a.report.verdict, Verdict::Dangerous);
}

#[test]
fn plain_data_is_safe() {
    let a = scan(b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.");
    assert_eq!(a.report.verdict, Verdict::Safe);
    assert_eq!(a.end, Some(a.report.length as usize));
}

/// Every opcode leaves a value behind, so the value type's size is the
/// analysis's memory per opcode (a 40 KB gzip holds 8 M opcodes).
#[test]
fn values_stay_small() {
    assert!(
        std::mem::size_of::<Sym>() <= 24,
        "{}",
        std::mem::size_of::<Sym>()
    );
}

/// Memo puts whose keys each double the last: a 99-byte stream once
/// asked for 4 GB (the memo itself is tested in `stack`).
#[test]
fn growing_memo_keys_cost_one_entry_each() {
    let mut d = b"\x80\x04N".to_vec();
    let mut key: u32 = 1024;
    for _ in 0..21 {
        d.push(b'r'); // LONG_BINPUT
        d.extend_from_slice(&key.to_le_bytes());
        key = key.saturating_mul(2).saturating_add(1);
    }
    d.push(b'.');
    let a = scan(&d);
    assert_eq!(a.report.verdict, Verdict::Safe);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes give a report, never a panic; anything that is
        /// not a clean stream is never called safe.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let a = scan(&data);
            if a.end.is_none() {
                prop_assert_eq!(a.report.verdict, Verdict::Dangerous);
            }
        }

        /// Mutating one byte of a real pickle never panics.
        #[test]
        fn mutated_pickles_never_panic(pos in 0usize..40, byte in any::<u8>()) {
            let mut data = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K\x01\x8c\x01b\x94]\x94(K\x02K\x03eu.".to_vec();
            let i = pos % data.len();
            data[i] = byte;
            let _ = scan(&data);
        }
    }
}
