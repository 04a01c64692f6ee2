//! Pickle streams in a run of bytes: whether a loader would act on them
//! (the probe every container reader uses) and reading consecutive streams
//! as repeated `pickle.load` calls would. Container readers and the
//! whole-file scan both build on this, so it depends on neither.

use crate::analysis::analyze_stream;
use crate::codes::FindingCode;
use crate::parser::Parser;
use crate::policy::{Policy, Verdict};
use crate::report::FileReport;
use crate::Limits;

/// Whether `pickle.load` would act on `data` read from its first byte: it
/// starts with PROTO, or its first stream reaches STOP, or it imports a
/// global before it fails. A stream that fails before importing anything
/// ran nothing but data opcodes, so it is not a pickle a loader could be
/// harmed by.
///
/// The stream is read to its end or to the point where the unpickler
/// would fail, however long: a probe that gave up after a fixed number of
/// opcodes let a payload hide behind harmless padding. Only the scan's
/// limits bound it.
pub fn looks_like_pickle(data: &[u8]) -> bool {
    match data {
        [0x80, 0..=5, ..] => true,
        [] => false,
        _ => is_pickle_reading(&analyze_stream(
            data,
            0,
            0,
            "probe",
            Policy::builtin(),
            &Limits::default(),
        )),
    }
}

/// Whether an analysed stream is one a loader acts on (see
/// [`looks_like_pickle`]).
pub(crate) fn is_pickle_reading(a: &crate::StreamAnalysis) -> bool {
    a.report.protocol.is_some()
        || a.end.is_some()
        || a.report
            .globals
            .iter()
            .any(|g| g.module == "?" || is_importable_name(&g.module, &g.name))
}

/// Whether every byte of `data` parses as pickle opcodes, so that it could be
/// the start of a longer stream that was cut off.
pub(crate) fn opcodes_reach_end(data: &[u8]) -> bool {
    for (i, item) in Parser::new(data, 0).enumerate() {
        match item {
            Ok(instr) if instr.op == crate::Opcode::STOP => return i > 0,
            Ok(_) => {}
            Err(e) => {
                return i > 0
                    && matches!(
                        e.kind,
                        crate::parser::ParseErrorKind::NoStop
                            | crate::parser::ParseErrorKind::Truncated { .. }
                            | crate::parser::ParseErrorKind::MissingNewline
                    );
            }
        }
    }
    false
}

/// Whether `find_class(module, name)` could import something: names with
/// control characters, spaces or empty dotted parts cannot name a module or
/// attribute, so random binary data that happens to parse as GLOBAL is not
/// taken for an import. Anything else could (`__import__` accepts `a-b`).
pub(crate) fn is_importable_name(module: &str, name: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| !part.is_empty())
            && s.chars().all(|c| !c.is_control() && !c.is_whitespace())
    };
    ok(module) && ok(name)
}

/// Scans consecutive pickle streams starting at `start`, as repeated
/// `pickle.load` calls on one file would read them. Data after the last
/// stream that does not parse as another pickle is reported.
pub fn scan_pickle_sequence(
    data: &[u8],
    start: usize,
    base: u64,
    name: &str,
    report: &mut FileReport,
    policy: &Policy,
    limits: &Limits,
) -> usize {
    let mut pos = start;
    let mut index = 0;
    loop {
        if report.streams.len() >= limits.max_streams {
            report.add_finding(
                Verdict::Dangerous,
                FindingCode::LimitExceeded,
                base + pos as u64,
                format!("more than {} pickle streams", limits.max_streams),
            );
            return pos;
        }
        let stream_name = if index == 0 {
            name.to_string()
        } else {
            format!("{name}[{index}]")
        };
        let a = analyze_stream(data, pos, base, &stream_name, policy, limits);
        report.streams.push(a.report);
        match a.end {
            Some(end) if end < data.len() => {
                pos = end;
                index += 1;
                // Bytes that a second load would fail on before importing
                // anything ran nothing (the reading is complete: no cap).
                if !looks_like_pickle(&data[pos..]) {
                    return pos;
                }
            }
            Some(end) => return end,
            None => return data.len(),
        }
    }
}
