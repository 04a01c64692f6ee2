use super::*;
use proptest::prelude::*;

fn dis(data: &[u8]) -> String {
    match disassemble(data, 0) {
        Ok(d) => d.text,
        Err(e) => panic!("{e}\n{}", e.partial_text),
    }
}

fn dis_err(data: &[u8]) -> DisError {
    disassemble(data, 0).expect_err("pickletools raises here")
}

/// Expected texts below are `pickletools.dis` output from CPython 3.11.7.
#[test]
fn string_quoting_and_escapes() {
    let text = "\x7f\u{ad}\u{2028}\u{1f600}\u{1fae8}é";
    let mut data = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00(".to_vec();
    data.extend_from_slice(b"\x8c\x03a'b\x8c\x05a'b\"c\x8c\x04\\\n\t\x00X");
    // The lone surrogate U+D800 in CPython's surrogatepass UTF-8.
    let mut utf8 = text.as_bytes()[..6].to_vec();
    utf8.extend_from_slice(b"\xed\xa0\x80");
    utf8.extend_from_slice(&text.as_bytes()[6..]);
    data.extend_from_slice(&(utf8.len() as u32).to_le_bytes());
    data.extend_from_slice(&utf8);
    data.extend_from_slice(b"C\x02'\"\x96\x02\x00\x00\x00\x00\x00\x00\x00'xU\x02\xe9\xa0t.");
    let want = concat!(
        "    0: \\x80 PROTO      4\n",
        "    2: \\x95 FRAME      0\n",
        "   11: (    MARK\n",
        "   12: \\x8c     SHORT_BINUNICODE \"a'b\"\n",
        "   17: \\x8c     SHORT_BINUNICODE 'a\\'b\"c'\n",
        "   24: \\x8c     SHORT_BINUNICODE '\\\\\\n\\t\\x00'\n",
        "   30: X        BINUNICODE '\\x7f\\xad\\u2028\\ud800😀\\U0001fae8é'\n",
        "   54: C        SHORT_BINBYTES b'\\'\"'\n",
        "   58: \\x96     BYTEARRAY8 bytearray(b\"\\'x\")\n",
        "   69: U        SHORT_BINSTRING 'é\\xa0'\n",
        "   73: t        TUPLE      (MARK at 11)\n",
        "   74: .    STOP\n",
        "highest protocol among opcodes = 5\n",
    );
    assert_eq!(dis(&data), want);
}

#[test]
fn printable_follows_unicode_14() {
    assert!(is_printable('é'));
    assert!(is_printable('😀'));
    assert!(!is_printable('\u{a0}'));
    assert!(!is_printable('\u{ad}'));
    assert!(!is_printable('\u{2028}'));
    assert!(!is_printable('\u{e000}'));
    assert!(!is_printable('\u{1fae8}')); // assigned in Unicode 15
    assert!(!is_printable('\u{31350}')); // assigned in Unicode 15
    assert!(is_printable('\u{3134a}'));
    let utf8 = b"\xf0\x9f\x9b\x9c\xf4\x8f\xbf\xbf\xed\xbf\xbf";
    assert_eq!(check_utf8(utf8), Ok(()));
    assert_eq!(
        str_repr(&Text::Surrogates(utf8), usize::MAX).as_deref(),
        Some("'\\U0001f6dc\\U0010ffff\\udfff'")
    );
    let text = Text::RawUnicodeEscape(br"\\u0041\u0041\U0001F6DC\\");
    assert_eq!(
        str_repr(&text, usize::MAX).as_deref(),
        Some(r"'\\\\u0041A\U0001f6dc\\\\'")
    );
    assert_eq!(str_repr(&text, 10), None);
}

#[test]
fn float_repr_edge_cases() {
    let cases: &[(f64, &str)] = &[
        (1.0, "1.0"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (1e-5, "1e-05"),
        (1e-4, "0.0001"),
        (0.1, "0.1"),
        (123.456, "123.456"),
        (-1.5e300, "-1.5e+300"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::NAN, "nan"),
        (9999999999999998.0, "9999999999999998.0"),
        (12345678901234567890.0, "1.2345678901234567e+19"),
        // Exactly halfway between two 17-digit candidates: CPython
        // rounds half to even, Rust's formatter rounds up.
        (162341648443658.0 + 0.625, "162341648443658.62"),
        (1989521545203322.0 + 0.25, "1989521545203322.2"),
    ];
    for &(x, want) in cases {
        assert_eq!(float_repr(x), want, "{x:e}");
    }
}

#[test]
fn long_repr_twos_complement() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "0"),
        (b"\xff", "-1"),
        (b"\x80", "-128"),
        (b"\x00\x80", "-32768"),
        (b"\xff\x00", "255"),
        (b"\x00\xff", "-256"),
        (
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
            "39614081257132168796771975167",
        ),
        (
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80",
            "-39614081257132168796771975168",
        ),
        (b"\x05\x00\x00\x00\x00\x00", "5"),
        (b"\xfe\xff\xff\xff\xff\xff", "-2"),
    ];
    for &(bytes, want) in cases {
        assert_eq!(long_repr(bytes).as_deref(), Ok(want), "{bytes:?}");
    }
    // 10**4299 has 4300 digits, 10**4300 has 4301: the first is the last
    // CPython prints.
    let big = |digits: usize| {
        let mut v = vec![0u8; 1800];
        // A magnitude with exactly `digits` digits: 10^(digits-1), built
        // by repeated multiplication by 10 on little-endian bytes.
        v[0] = 1;
        for _ in 1..digits {
            let mut carry = 0u16;
            for b in v.iter_mut() {
                let x = u16::from(*b) * 10 + carry;
                *b = x as u8;
                carry = x >> 8;
            }
        }
        v
    };
    assert_eq!(long_repr(&big(4300)).map(|s| s.len()), Ok(4300));
    assert!(long_repr(&big(4301))
        .unwrap_err()
        .starts_with("Exceeds the limit (4300 digits)"));
    assert!(long_repr(&[0x7f; 4000]).is_err());
    // A huge argument with a small value is cheap and fine.
    let mut padded = vec![0xffu8; 100_000];
    padded[0] = 0xfe;
    assert_eq!(long_repr(&padded).as_deref(), Ok("-2"));
}

#[test]
fn decimal_arguments_follow_python_int() {
    assert_eq!(
        dis(b"I01\n."),
        "    0: I    INT        True\n    4: .    STOP\nhighest protocol among opcodes = 0\n"
    );
    let one = |line: &[u8]| {
        let mut data = b"I".to_vec();
        data.extend_from_slice(line);
        data.extend_from_slice(b"\n.");
        match disassemble(&data, 0) {
            Ok(d) => Ok(d.text.lines().next().unwrap_or("")[16..].trim().to_owned()),
            Err(e) => Err(e.message),
        }
    };
    assert_eq!(one(b" 1_000 ").as_deref(), Ok("1000"));
    assert_eq!(one(b"-0").as_deref(), Ok("0"));
    assert_eq!(one(b"007").as_deref(), Ok("7"));
    assert_eq!(one(b"00").as_deref(), Ok("False"));
    assert_eq!(one(b"\x0b+12\x0c").as_deref(), Ok("12"));
    assert_eq!(
        one(b"-123456789012345678901234567890123456789012").as_deref(),
        Ok("-123456789012345678901234567890123456789012")
    );
    assert_eq!(
        one(b"1__0").unwrap_err(),
        "invalid literal for int() with base 10: b'1__0'"
    );
    assert_eq!(
        one(b"1\x002").unwrap_err(),
        "invalid literal for int() with base 10: b'1\\x002'"
    );
    let long = one(&[b'1'; 5000]).unwrap_err();
    assert!(long.contains("value has 5000 digits"), "{long}");
    let junk = one(&[b'x'; 300]).unwrap_err();
    assert_eq!(
        junk.len(),
        "invalid literal for int() with base 10: ".len() + 200
    );
}

#[test]
fn mark_nesting_and_notes() {
    let want = concat!(
        "    0: (    MARK\n",
        "    1: (        MARK\n",
        "    2: (            MARK\n",
        "    3: N                NONE\n",
        "    4: N                NONE\n",
        "    5: t                TUPLE      (MARK at 2)\n",
        "    6: I            INT        True\n",
        "   10: t            TUPLE      (MARK at 1)\n",
        "   11: (        MARK\n",
        "   12: l            LIST       (MARK at 11)\n",
        "   13: (        MARK\n",
        "   14: d            DICT       (MARK at 13)\n",
        "   15: t        TUPLE      (MARK at 0)\n",
    );
    assert_eq!(
        dis(b"(((NNtI01\nt(l(dt."),
        format!("{want}   16: .    STOP\nhighest protocol among opcodes = 0\n")
    );
    let err = dis_err(b"(((NNtI01\nt(l(dtt.");
    assert_eq!(err.message, "no MARK exists on stack");
    assert_eq!(
        err.partial_text,
        format!("{want}   16: t    TUPLE      no MARK exists on stack\n")
    );
    assert_eq!(err.offset, 16);
}

#[test]
fn memoize_numbering() {
    let data =
        b"\x80\x04\x95\x11\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94\x8c\x01a\x94a]\x94h\x02ae.";
    let want = concat!(
        "    0: \\x80 PROTO      4\n",
        "    2: \\x95 FRAME      17\n",
        "   11: ]    EMPTY_LIST\n",
        "   12: \\x94 MEMOIZE    (as 0)\n",
        "   13: (    MARK\n",
        "   14: ]        EMPTY_LIST\n",
        "   15: \\x94     MEMOIZE    (as 1)\n",
        "   16: \\x8c     SHORT_BINUNICODE 'a'\n",
        "   19: \\x94     MEMOIZE    (as 2)\n",
        "   20: a        APPEND\n",
        "   21: ]        EMPTY_LIST\n",
        "   22: \\x94     MEMOIZE    (as 3)\n",
        "   23: h        BINGET     2\n",
        "   25: a        APPEND\n",
        "   26: e        APPENDS    (MARK at 13)\n",
        "   27: .    STOP\n",
        "highest protocol among opcodes = 4\n",
    );
    assert_eq!(dis(data), want);
    // PUT 0 spelled `00` is key False, which is key 0.
    let err = dis_err(b"Np00\np0\n.");
    assert_eq!(err.message, "memo key 0 already defined");
    let err = dis_err(b"N\x94p0\n.");
    assert_eq!(err.message, "memo key 0 already defined");
    let err = dis_err(b"Np1\n\x94.");
    assert_eq!(err.message, "memo key None already defined");
}

#[test]
fn errors_carry_the_partial_text() {
    let err = dis_err(b"N\x94h\x05.");
    assert_eq!(err.message, "memo key 5 has never been stored into");
    assert_eq!(
        err.partial_text,
        "    0: N    NONE\n    1: \\x94 MEMOIZE    (as 0)\n    2: h    BINGET     5\n"
    );
    // pickletools' own IndexError, raised after the position is printed.
    let err = dis_err(b"(Nal.");
    assert_eq!(
        (err.exception, err.message.as_str()),
        ("IndexError", "list index out of range")
    );
    assert_eq!(
        err.partial_text,
        "    0: (    MARK\n    1: N        NONE\n    2: a        APPEND\n    3: "
    );
    let err = dis_err(b"NN.");
    assert_eq!(err.message, "stack not empty after STOP: [None]");
    assert!(err
        .partial_text
        .ends_with("highest protocol among opcodes = 0\n"));
    let err = dis_err(b"N\xff");
    assert_eq!(err.message, "at position 1, opcode b'\\xff' unknown");
    assert_eq!(err.partial_text, "    0: N    NONE\n");
    let err = dis_err(b"N");
    assert_eq!(err.message, "pickle exhausted before seeing STOP");
    assert_eq!(err.offset, 1);
    let err = dis_err(b"a.");
    assert_eq!(
        err.message,
        "tries to pop 2 items from stack with only 0 items"
    );
    let err = dis_err(b"S'\xe9'\n.");
    assert_eq!(err.exception, "UnicodeDecodeError");
    assert_eq!(
        err.message,
        "'ascii' codec can't decode byte 0xe9 in position 0: ordinal not in range(128)"
    );
    let err = dis_err(b"X\x04\x00\x00\x00a\xe0\x80\x80.");
    assert_eq!(
        err.message,
        "'utf-8' codec can't decode byte 0xe0 in position 1: invalid continuation byte"
    );
    let err = dis_err(b"Vab\\u12zz\n.");
    assert_eq!(
        err.message,
        "'rawunicodeescape' codec can't decode bytes in position 2-5: truncated \\uXXXX escape"
    );
    let mut huge = b"\x8b\xa0\x0f\x00\x00".to_vec();
    huge.extend_from_slice(&[0x7f; 4000]);
    huge.push(b'.');
    let err = dis_err(&huge);
    assert_eq!(err.partial_text, "    0: ");
    assert!(err.message.starts_with("Exceeds the limit (4300 digits)"));
}

#[test]
fn string_arguments_as_pickletools_reads_them() {
    let first = |data: &[u8]| dis(data).lines().next().unwrap_or("").to_owned();
    assert_eq!(first(b"S'\n."), "    0: S    STRING     ''");
    assert_eq!(
        first(b"S'a\\x41\\101\\q'\n."),
        "    0: S    STRING     'aAA\\\\q'"
    );
    assert_eq!(
        first(b"cmod\\x41\nna me\n."),
        "    0: c    GLOBAL     'modA na me'"
    );
    assert_eq!(
        first(b"V\\u00e9\\\\u0041\n."),
        "    0: V    UNICODE    'é\\\\\\\\u0041'"
    );
    assert_eq!(
        dis_err(b"S'abc\n.").message,
        "strinq quote b\"'\" not found at both ends of b\"'abc\""
    );
    assert_eq!(
        dis_err(b"Sabc\n.").message,
        "no string quotes around b'abc'"
    );
    assert_eq!(
        dis_err(b"S'\\x4'\n.").message,
        "invalid \\x escape at position 0"
    );
    assert_eq!(dis_err(b"S'ab\\'\n.").message, "Trailing \\ in string");
}

#[test]
fn offsets_are_relative_to_start() {
    let data = b"N.\x80\x02K\x05.\xfftail";
    let first = disassemble(data, 0).unwrap();
    assert_eq!(first.end, 2);
    let second = disassemble(data, first.end).unwrap();
    assert_eq!(second.end, 7);
    assert_eq!(
        second.text,
        "    0: \\x80 PROTO      2\n    2: K    BININT1    5\n    4: .    STOP\nhighest protocol among opcodes = 2\n"
    );
    let err = disassemble(data, 7).unwrap_err();
    assert_eq!(err.message, "at position 0, opcode b'\\xff' unknown");
    assert_eq!(err.offset, 7);
    assert!(disassemble(data, 100).is_err());
}

#[test]
fn text_is_bounded() {
    let mut data = vec![b'('; 10_000];
    data.push(b'.');
    let err = disassemble_with_limit(&data, 0, 1 << 20).unwrap_err();
    assert_eq!(err.exception, "LimitExceeded");
    assert!(err.partial_text.len() <= 1 << 20);
    // A long argument stops at the limit instead of being rendered whole.
    let mut data = b"X\x00\x00\x10\x00".to_vec();
    data.extend(std::iter::repeat_n(b'\x01', 1 << 20));
    data.push(b'.');
    let err = disassemble_with_limit(&data, 0, 1000).unwrap_err();
    assert_eq!(err.exception, "LimitExceeded");
    assert_eq!(err.message, "disassembly exceeds 1000 bytes of text");
    assert!(disassemble_with_limit(&data, 0, 5 << 20).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), start in 0usize..210) {
        let _ = disassemble(&data, start);
    }

    #[test]
    fn opcode_soup_never_panics(
        ops in proptest::collection::vec((0usize..68, proptest::collection::vec(any::<u8>(), 0..6)), 0..40),
        tail in proptest::sample::select(vec![b"\n".to_vec(), b"'\n".to_vec(), b"1\n".to_vec(), vec![]]),
    ) {
        let mut data = Vec::new();
        for (i, arg) in ops {
            data.push(Opcode::ALL[i].byte());
            data.extend_from_slice(&arg);
            data.extend_from_slice(&tail);
        }
        data.push(b'.');
        match disassemble(&data, 0) {
            Ok(d) => prop_assert!(d.end <= data.len()),
            Err(e) => prop_assert!(e.offset <= data.len()),
        }
    }
}
