//! The opcode parser and the symbolic machine on arbitrary bytes: any input
//! gives a report; an input that is not one clean stream is never "safe".
#![no_main]

use hermetic_pickle::{analyze_stream, Limits, Parser, Policy, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for instr in Parser::new(data, 0) {
        if let Ok(i) = instr {
            assert!(i.offset < i.end && i.end <= data.len());
        }
    }
    let a = analyze_stream(data, 0, 0, "fuzz", &Policy::default(), &Limits::default());
    if a.end.is_none() {
        assert_eq!(a.report.verdict, Verdict::Dangerous);
    }
});
