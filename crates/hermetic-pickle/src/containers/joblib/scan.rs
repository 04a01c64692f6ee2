//! Scanning a joblib dump: the pickle opcodes and, after each wrapper's
//! BUILD, the array bytes skipped exactly as `read_array` consumes them.

use super::*;

/// Scans the joblib stream at `start` and any streams that follow it.
/// Returns whether any array wrapper was found (whether it really is joblib).
pub(crate) fn scan_joblib(data: &[u8], start: usize, loc: &Loc, sc: &mut Scanner<'_>) -> bool {
    let mut pos = start;
    let mut index = 0;
    let mut any = false;
    loop {
        let name = if index == 0 {
            loc.stream_name()
        } else {
            format!("{}[{index}]", loc.stream_name())
        };
        let Some((end, wrappers)) = scan_one(data, pos, loc, &name, sc) else {
            return any;
        };
        any |= wrappers > 0;
        let Some(end) = end else {
            return any;
        };
        if end >= data.len() {
            return any;
        }
        // Bytes that a second load would fail on before importing anything
        // ran nothing (the reading is complete: no opcode cap).
        if !looks_like_pickle(&data[end..]) {
            return any;
        }
        pos = end;
        index += 1;
    }
}

/// Walks and analyses one stream; `None` when the stream limit is reached.
/// Returns where the stream ended (past STOP) and how many wrappers it has.
pub(super) fn scan_one(
    data: &[u8],
    start: usize,
    loc: &Loc,
    name: &str,
    sc: &mut Scanner<'_>,
) -> Option<(Option<usize>, usize)> {
    if !sc.stream_allowed(loc, start as u64) {
        return None;
    }
    let slot = sc.report.streams.len();
    let mut m = Machine::new();
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let mut seg_start = start;
    let mut parser = Parser::new(data, start);
    let mut end = None;
    let mut opcodes: u64 = 0;
    let mut frame_end: Option<usize> = None;
    let mut wrappers = 0usize;
    let mut machinery: Vec<u64> = Vec::new();
    let mut arrays = 0usize;
    let cut = |at: usize| at.saturating_add(ERROR_CONTEXT).min(data.len());
    loop {
        let Some(item) = parser.next() else {
            segments.push((seg_start, data.len()));
            break;
        };
        let instr = match item {
            Ok(i) => i,
            Err(e) => {
                segments.push((seg_start, cut(e.offset)));
                break;
            }
        };
        opcodes += 1;
        if opcodes > sc.limits.max_opcodes || m.stack.depth() > sc.limits.max_stack {
            segments.push((seg_start, cut(instr.offset)));
            break;
        }
        if instr.op == Opcode::FRAME {
            if let Arg::U64(len) = instr.arg {
                frame_end = Some(
                    instr
                        .end
                        .saturating_add(usize::try_from(len).unwrap_or(usize::MAX)),
                );
            }
        }
        if m.step(&instr).is_err() {
            segments.push((seg_start, cut(instr.end)));
            break;
        }
        if instr.op == Opcode::STOP {
            segments.push((seg_start, instr.end));
            end = Some(instr.end);
            break;
        }
        if instr.op != Opcode::BUILD {
            continue;
        }
        let Ok(top) = m.top() else {
            continue;
        };
        let Some(kind) = m.wrapper_kind(top) else {
            continue;
        };
        wrappers += 1;
        machinery.extend(
            m.wrapper_machinery(top)
                .into_iter()
                .map(|o| loc.base + o as u64),
        );
        if kind == WrapperKind::Companion {
            m.replace_top(V::Other);
            continue;
        }
        segments.push((seg_start, instr.end));
        let unreadable = |sc: &mut Scanner<'_>, why: String| {
            sc.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::UnreadableRecord,
                instr.end as u64,
                format!("joblib array data after the wrapper at byte {} cannot be walked: {why}; joblib.load reads it as raw bytes", loc.base + instr.offset as u64),
            );
        };
        if frame_end.is_some_and(|fe| fe > instr.end) {
            unreadable(sc, "the wrapper ends inside a pickle frame, so joblib would read the array from after the frame".into());
            break;
        }
        let next = match m.layout(top) {
            Err(why) => {
                unreadable(sc, why);
                break;
            }
            Ok(Layout::Object) => {
                let array_name = format!("{name}:array[{arrays}]");
                arrays += 1;
                match sc
                    .single_stream(data, instr.end, loc, &array_name)
                    .and_then(|a| a.end)
                {
                    Some(e) => e,
                    None => break,
                }
            }
            Ok(Layout::Raw { padded, nbytes }) => {
                let mut p = instr.end;
                if padded {
                    let Some(&pad) = data.get(p) else {
                        unreadable(sc, "the padding length byte is missing".into());
                        break;
                    };
                    p += 1 + usize::from(pad);
                }
                match usize::try_from(nbytes)
                    .ok()
                    .and_then(|n| p.checked_add(n))
                    .filter(|&e| e <= data.len())
                {
                    Some(e) => e,
                    None => {
                        unreadable(
                            sc,
                            format!("{nbytes} bytes of array data run past the end of the data"),
                        );
                        break;
                    }
                }
            }
        };
        m.replace_top(V::Other);
        seg_start = next;
        frame_end = None;
        parser = Parser::new(data, next);
    }

    // Analyse the opcode bytes without the array data in between.
    let mut spliced = Vec::new();
    let mut map: Vec<(usize, usize, usize)> = Vec::new();
    for &(a, b) in &segments {
        let b = b.max(a).min(data.len());
        let a = a.min(b);
        map.push((spliced.len(), a, b - a));
        spliced.extend_from_slice(&data[a..b]);
    }
    let a = analyze_stream(&spliced, 0, 0, name, sc.policy, sc.limits);
    let to_file = |off: u64| -> u64 {
        let off = off as usize;
        let abs = map
            .iter()
            .rev()
            .find(|(s, _, _)| *s <= off)
            .map_or(start + off, |(s, f, _)| f + (off - s));
        loc.base + abs as u64
    };
    let mut report = a.report;
    report.findings.retain_mut(|f| {
        f.offset = to_file(f.offset);
        let wrapper = (f.module == MODULE || f.module == "joblib.numpy_pickle_compat")
            && is_wrapper_name(f.name.as_bytes())
            && f.code == FindingCode::DangerousImport;
        let helper = machinery.contains(&f.offset)
            && matches!(
                (f.module.as_str(), f.name.as_str()),
                ("copyreg", "_reconstructor" | "__newobj__") | ("builtins", "object")
            )
            && matches!(f.code, FindingCode::DangerousImport | FindingCode::UnknownImport);
        // joblib's own NumpyArrayWrapper, whose array this walk read (raw
        // bytes, or a nested pickle scanned as a stream of its own), runs
        // nothing: it is data. The old wrappers point at companion files
        // this scan does not read, so they stay findings.
        let inline_wrapper = f.name == "NumpyArrayWrapper" && f.module == MODULE;
        if (wrapper && inline_wrapper) || helper {
            return false;
        } else if wrapper {
            f.code = FindingCode::JoblibArrayWrapper;
            f.severity = Verdict::Suspicious;
            f.reason = "joblib's old array placeholder: joblib.load reads the array from a companion file, which this scan does not read (hermetic.joblib.load reads numeric companions)".into();
        }
        true
    });
    for g in &mut report.globals {
        g.offset = to_file(g.offset);
    }
    report.rejudge();
    report.offset = loc.base + start as u64;
    let stream_end = end
        .or_else(|| segments.last().map(|s| s.1))
        .unwrap_or(start);
    report.length = stream_end.saturating_sub(start) as u64;
    sc.report
        .streams
        .insert(slot.min(sc.report.streams.len()), report);
    Some((end, wrappers))
}
