//! The run over one stream: parsing, stepping the symbolic machine, and
//! the findings that the end of the stream (or its absence) brings.

use super::*;

/// Analyses the pickle stream that starts at `start` in `data`. `base` is
/// added to every reported offset (the position of `data` in its file), and
/// `name` identifies the stream in reports.
pub fn analyze_stream(
    data: &[u8],
    start: usize,
    base: u64,
    name: &str,
    policy: &Policy,
    limits: &Limits,
) -> StreamAnalysis {
    let mut m = Machine {
        policy,
        base,
        values: Vec::new(),
        strs: Vec::new(),
        stack: Stack::default(),
        globals: Vec::new(),
        findings: Vec::new(),
        proto: 0,
        persistent_ids: 0,
    };
    let mut protocol = None;
    let mut end = None;
    let mut opcodes: u64 = 0;
    let mut frame_end: Option<usize> = None;
    let mut halted = false;
    for (i, item) in Parser::new(data, start).enumerate() {
        let instr = match item {
            Ok(instr) => instr,
            Err(e) => {
                let code = match e.kind {
                    ParseErrorKind::Truncated { .. } | ParseErrorKind::NoStop => {
                        FindingCode::TruncatedStream
                    }
                    _ => FindingCode::MalformedStream,
                };
                m.finding(
                    Verdict::Dangerous,
                    code,
                    e.offset,
                    format!("{e}; the unpickler runs everything before this point"),
                );
                halted = true;
                break;
            }
        };
        opcodes += 1;
        if opcodes > limits.max_opcodes {
            m.finding(
                Verdict::Dangerous,
                FindingCode::LimitExceeded,
                instr.offset,
                format!(
                    "more than {} opcodes; not analysed further",
                    limits.max_opcodes
                ),
            );
            halted = true;
            break;
        }
        if let Some(fe) = frame_end {
            if instr.offset < fe && (instr.end > fe || instr.op == Opcode::FRAME) {
                m.finding(
                    Verdict::Dangerous,
                    FindingCode::FrameViolation,
                    instr.offset,
                    format!(
                        "{} crosses the end of the frame at byte {}; the C and pure-Python unpicklers read this differently",
                        instr.op.name(),
                        base + fe as u64
                    ),
                );
            }
        }
        if instr.op == Opcode::FRAME {
            if let Arg::U64(len) = instr.arg {
                let available = (data.len() - instr.end) as u64;
                if len > available {
                    m.finding(
                        Verdict::Dangerous,
                        FindingCode::FrameViolation,
                        instr.offset,
                        format!("FRAME of {len} bytes runs past the end of the data"),
                    );
                }
                frame_end = Some(instr.end.saturating_add(len.min(available) as usize));
            }
        }
        if instr.op == Opcode::PROTO && i == 0 {
            if let Arg::Int(v) = instr.arg {
                protocol = u8::try_from(v).ok();
            }
        }
        if m.stack.depth() > limits.max_stack {
            m.finding(
                Verdict::Dangerous,
                FindingCode::LimitExceeded,
                instr.offset,
                format!("the stack grew past {} entries", limits.max_stack),
            );
            halted = true;
            break;
        }
        if let Err(s) = m.step(instr.op, &instr.arg, instr.offset, i == 0) {
            m.finding(
                Verdict::Dangerous,
                s.code,
                instr.offset,
                format!(
                    "{}; the unpickler runs everything before this point",
                    s.reason
                ),
            );
            halted = true;
            break;
        }
        if instr.op == Opcode::STOP {
            end = Some(instr.end);
        }
    }
    let _ = halted;
    let stream_end = end.unwrap_or(data.len());
    let bytes = &data[start.min(data.len())..stream_end];

    let mut findings = Vec::new();
    for g in &m.globals {
        if g.module == "?" {
            continue;
        }
        let c = m.policy.classify(&g.module, &g.name);
        if let Some(code) = c.code {
            findings.push(Finding {
                code,
                severity: c.verdict,
                module: g.module.clone(),
                name: g.name.clone(),
                offset: g.offset,
                called: g.called,
                reason: c.reason,
            });
        }
    }
    findings.append(&mut m.findings);
    findings.sort_by_key(|f| f.offset);
    let verdict = crate::report::worst(&findings);
    StreamAnalysis {
        report: StreamReport {
            name: name.to_string(),
            offset: base + start as u64,
            length: bytes.len() as u64,
            sha256: blob_id(bytes),
            protocol,
            verdict,
            findings,
            globals: m.globals,
            persistent_ids: m.persistent_ids,
            opcodes,
        },
        end,
    }
}
