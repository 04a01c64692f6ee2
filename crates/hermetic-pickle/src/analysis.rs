//! Static analysis of one pickle stream by symbolic execution of the pickle
//! machine: nothing is imported or called; every global the stream resolves,
//! every call it makes and every structural oddity becomes a record.

use crate::codes::FindingCode;
use crate::opcodes::Opcode;
use crate::parser::{Arg, ParseErrorKind, Parser};
use crate::policy::{py2_mapping, Policy, Verdict};
use crate::report::{Finding, GlobalRef, StreamReport};
use crate::stack::{Stack, StackError};
use crate::text;
use crate::Limits;
use sha2::{Digest, Sha256};

/// Strings longer than this are never module or attribute names, so the
/// machine does not keep their text.
const MAX_NAME_LEN: usize = 1024;

#[derive(Clone, Debug)]
enum Sym {
    /// A string constant, kept as its raw bytes and decoded only where a
    /// name is needed (`None` when too long to be a name).
    /// Index into the machine's `strs`: kept out of line, so that the
    /// values that are not strings (most of them) stay small.
    Str(Option<u32>),
    Other,
    List,
    Dict,
    Set,
    /// Only a tuple's first two items matter to the analysis (a forwarded
    /// call's callable, a persistent id's kind and class), so only they are
    /// kept: a tuple costs no allocation, however long or deeply nested.
    Tuple(Head),
    Global(usize),
    /// The result of calling a callable; `callee` is the global it came from.
    Call(Option<usize>),
    /// A persistent-id object. Legacy torch checkpoints refer to a module's
    /// class as `('module', <class>, file, source)`, which torch's
    /// `persistent_load` turns into that class: `class` keeps its global.
    PersId(Option<usize>),
}

/// The first items of a tuple.
#[derive(Clone, Copy, Debug, Default)]
struct Head {
    items: [u32; 2],
    len: u8,
}

impl Head {
    fn of(items: &[u32]) -> Head {
        let mut h = Head::default();
        for (slot, &i) in h.items.iter_mut().zip(items) {
            *slot = i;
            h.len += 1;
        }
        h
    }

    fn items(&self) -> &[u32] {
        &self.items[..usize::from(self.len)]
    }
}

#[derive(Clone, Copy, Debug)]
enum RawStr<'a> {
    Utf8(&'a [u8]),
    Latin1(&'a [u8]),
    Quoted(&'a [u8]),
    RawUnicodeEscape(&'a [u8]),
}

impl RawStr<'_> {
    /// The text as CPython decodes it (lone surrogates become U+FFFD: no
    /// importable name contains one).
    fn decode(self) -> Option<String> {
        match self {
            RawStr::Utf8(b) => Some(text::utf8_lossy(b).into_owned()),
            RawStr::Latin1(b) => Some(b.iter().map(|&c| c as char).collect()),
            RawStr::Quoted(q) => {
                text::escape_decode(q).map(|b| b.iter().map(|&c| c as char).collect())
            }
            RawStr::RawUnicodeEscape(b) => text::decode_raw_unicode_escape(b).map(|cps| {
                cps.iter()
                    .map(|&c| char::from_u32(c).unwrap_or('\u{fffd}'))
                    .collect()
            }),
        }
    }

    fn is(self, expected: &str) -> bool {
        match self {
            RawStr::Utf8(b) | RawStr::Latin1(b) => b == expected.as_bytes(),
            other => other.decode().is_some_and(|s| s == expected),
        }
    }
}

/// The outcome of analysing one stream.
pub struct StreamAnalysis {
    pub report: StreamReport,
    /// Offset just past `STOP`, when the stream parsed to its end.
    pub end: Option<usize>,
}

/// The sha256 blob id of a pickle stream's exact bytes: `sha256:<hex>`.
pub fn blob_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

struct Machine<'p, 'a> {
    policy: &'p Policy,
    base: u64,
    values: Vec<Sym>,
    strs: Vec<RawStr<'a>>,
    stack: Stack,
    globals: Vec<GlobalRef>,
    findings: Vec<Finding>,
    proto: u8,
    persistent_ids: u64,
}

struct Stop {
    code: FindingCode,
    reason: String,
}

fn stop(code: FindingCode, reason: impl Into<String>) -> Stop {
    Stop {
        code,
        reason: reason.into(),
    }
}

impl<'a> Machine<'_, 'a> {
    fn intern(&mut self, s: RawStr<'a>) -> u32 {
        self.strs.push(s);
        (self.strs.len() - 1) as u32
    }

    fn push(&mut self, v: Sym) {
        self.values.push(v);
        self.stack.push((self.values.len() - 1) as u32);
    }

    fn pop(&mut self, op: Opcode) -> Result<u32, Stop> {
        self.stack.pop().map_err(|e| stack_stop(e, op))
    }

    fn top(&self, op: Opcode) -> Result<u32, Stop> {
        self.stack.top().map_err(|e| stack_stop(e, op))
    }

    fn pop_mark(&mut self, op: Opcode) -> Result<Vec<u32>, Stop> {
        self.stack.pop_mark().map_err(|e| stack_stop(e, op))
    }

    fn finding(&mut self, severity: Verdict, code: FindingCode, offset: usize, reason: String) {
        self.findings.push(Finding {
            code,
            severity,
            module: String::new(),
            name: String::new(),
            offset: self.base + offset as u64,
            called: false,
            reason,
        });
    }

    fn add_global(&mut self, module: String, name: String, offset: usize, op: Opcode) -> usize {
        let (module, name) = if self.proto < 3 {
            py2_mapping(&module, &name).unwrap_or((module, name))
        } else {
            (module, name)
        };
        self.globals.push(GlobalRef {
            module,
            name,
            offset: self.base + offset as u64,
            opcode: op.name().into(),
            called: false,
        });
        self.globals.len() - 1
    }

    fn mark_called(
        &mut self,
        callable: u32,
        op: Opcode,
        offset: usize,
    ) -> Result<Option<usize>, Stop> {
        match &self.values[callable as usize] {
            Sym::Global(g) | Sym::PersId(Some(g)) => {
                let g = *g;
                self.globals[g].called = true;
                Ok(Some(g))
            }
            other => {
                let what = describe(other);
                self.finding(
                    Verdict::Dangerous,
                    FindingCode::IndirectCall,
                    offset,
                    format!("{} calls {what}, not a named global: the callable is computed at load time", op.name()),
                );
                Ok(None)
            }
        }
    }

    /// Calls through helpers that call their first argument (`copyreg.__newobj__`,
    /// `copyreg._reconstructor`, `torch._tensor._rebuild_from_type_v2`) also
    /// call that argument.
    fn mark_forwarded_call(&mut self, callee: usize, args: u32) {
        let g = &self.globals[callee];
        let forwards = matches!(
            (g.module.as_str(), g.name.as_str()),
            ("copyreg", "__newobj__" | "__newobj_ex__" | "_reconstructor")
                | ("torch._tensor", "_rebuild_from_type_v2")
        );
        if !forwards {
            return;
        }
        if let Sym::Tuple(head) = &self.values[args as usize] {
            let targets: Vec<usize> = head
                .items()
                .iter()
                .take(2)
                .filter_map(|i| match &self.values[*i as usize] {
                    Sym::Global(g) => Some(*g),
                    _ => None,
                })
                .collect();
            for t in targets {
                self.globals[t].called = true;
            }
        }
    }

    fn container_target(
        &mut self,
        target: u32,
        op: Opcode,
        offset: usize,
        expected: fn(&Sym) -> bool,
    ) {
        let sym = &self.values[target as usize];
        if expected(sym) {
            return;
        }
        if let Sym::Call(callee) = sym {
            // Instances of a model's own classes (already reported) may be
            // list or dict subclasses. Of the allowlisted constructors only
            // the mappings take items; anything else would be made to call a
            // method that BUILD may have replaced.
            let allowed = match callee {
                None => true,
                Some(g) => {
                    let g = &self.globals[*g];
                    !self.policy.is_safe(&g.module, &g.name)
                        || (matches!(op, Opcode::SETITEM | Opcode::SETITEMS)
                            && matches!(
                                (g.module.as_str(), g.name.as_str()),
                                ("collections", "OrderedDict" | "Counter" | "defaultdict")
                                    | ("builtins", "dict")
                            ))
                        // deque's own extend and append (its pickles use APPENDS).
                        || (matches!(op, Opcode::APPEND | Opcode::APPENDS)
                            && (g.module.as_str(), g.name.as_str()) == ("collections", "deque"))
                }
            };
            if allowed {
                return;
            }
        }
        // On anything but its own container type the unpickler looks up and
        // calls a method (`append`, `extend`, `__setitem__`, `add`) by name.
        let what = describe(sym);
        self.finding(
            Verdict::Dangerous,
            FindingCode::MethodCall,
            offset,
            format!(
                "{} on {what} makes the unpickler call a method of it by name",
                op.name()
            ),
        );
    }

    fn step(&mut self, op: Opcode, arg: &Arg<'a>, offset: usize, first: bool) -> Result<(), Stop> {
        use Opcode::*;
        match op {
            INT | BININT | BININT1 | BININT2 | LONG | LONG1 | LONG4 | FLOAT | BINFLOAT | NONE
            | NEWTRUE | NEWFALSE | BINBYTES | SHORT_BINBYTES | BINBYTES8 | BYTEARRAY8 => {
                self.push(Sym::Other)
            }
            STRING | BINSTRING | SHORT_BINSTRING => {
                let s = match *arg {
                    Arg::Quoted(q) if q.len() <= MAX_NAME_LEN => Some(RawStr::Quoted(q)),
                    Arg::Latin1(b) if b.len() <= MAX_NAME_LEN => Some(RawStr::Latin1(b)),
                    _ => None,
                };
                let s = s.map(|s| self.intern(s));
                self.push(Sym::Str(s))
            }
            UNICODE | SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
                let s = match *arg {
                    Arg::Utf8(b) if b.len() <= MAX_NAME_LEN => Some(RawStr::Utf8(b)),
                    Arg::RawUnicodeEscape(b) if b.len() <= MAX_NAME_LEN => {
                        Some(RawStr::RawUnicodeEscape(b))
                    }
                    _ => None,
                };
                let s = s.map(|s| self.intern(s));
                self.push(Sym::Str(s))
            }
            NEXT_BUFFER => {
                self.finding(
                    Verdict::Suspicious,
                    FindingCode::OutOfBandBuffer,
                    offset,
                    "the stream takes an out-of-band buffer supplied by the loader".into(),
                );
                self.push(Sym::Other)
            }
            READONLY_BUFFER => {
                self.top(op)?;
            }
            EMPTY_LIST => self.push(Sym::List),
            EMPTY_DICT => self.push(Sym::Dict),
            EMPTY_SET => self.push(Sym::Set),
            EMPTY_TUPLE => self.push(Sym::Tuple(Head::default())),
            APPEND => {
                self.pop(op)?;
                let t = self.top(op)?;
                self.container_target(t, op, offset, |s| matches!(s, Sym::List));
            }
            APPENDS => {
                self.pop_mark(op)?;
                let t = self.top(op)?;
                self.container_target(t, op, offset, |s| matches!(s, Sym::List));
            }
            SETITEM => {
                self.pop(op)?;
                self.pop(op)?;
                let t = self.top(op)?;
                self.container_target(t, op, offset, |s| matches!(s, Sym::Dict));
            }
            SETITEMS => {
                let items = self.pop_mark(op)?;
                if items.len() % 2 != 0 {
                    return Err(stop(
                        FindingCode::MalformedStream,
                        "SETITEMS with an odd number of items",
                    ));
                }
                let t = self.top(op)?;
                self.container_target(t, op, offset, |s| matches!(s, Sym::Dict));
            }
            ADDITEMS => {
                self.pop_mark(op)?;
                let t = self.top(op)?;
                self.container_target(t, op, offset, |s| matches!(s, Sym::Set));
            }
            LIST => {
                self.pop_mark(op)?;
                self.push(Sym::List)
            }
            DICT => {
                let items = self.pop_mark(op)?;
                if items.len() % 2 != 0 {
                    return Err(stop(
                        FindingCode::MalformedStream,
                        "DICT with an odd number of items",
                    ));
                }
                self.push(Sym::Dict)
            }
            FROZENSET => {
                self.pop_mark(op)?;
                self.push(Sym::Other)
            }
            TUPLE => {
                let items = self.pop_mark(op)?;
                self.push(Sym::Tuple(Head::of(&items)))
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = match op {
                    TUPLE1 => 1,
                    TUPLE2 => 2,
                    _ => 3,
                };
                let items = self.stack.pop_n(n).map_err(|e| stack_stop(e, op))?;
                self.push(Sym::Tuple(Head::of(&items)))
            }
            MARK | POP | POP_MARK | DUP | GET | BINGET | LONG_BINGET | PUT | BINPUT
            | LONG_BINPUT | MEMOIZE => {
                self.stack.apply(op, arg).map_err(|e| stack_stop(e, op))?;
            }
            EXT1 | EXT2 | EXT4 => {
                let code = match arg {
                    Arg::Int(c) => *c,
                    _ => 0,
                };
                self.finding(
                    Verdict::Dangerous,
                    FindingCode::ExtensionCode,
                    offset,
                    format!("{} {code} names a global through the process's copyreg extension registry, which cannot be resolved from the file", op.name()),
                );
                self.push(Sym::Other)
            }
            GLOBAL => {
                let (m, n) = pair(arg)?;
                let g = self.add_global(m, n, offset, op);
                self.push(Sym::Global(g))
            }
            STACK_GLOBAL => {
                let name = self.pop(op)?;
                let module = self.pop(op)?;
                let names = match (&self.values[module as usize], &self.values[name as usize]) {
                    (Sym::Str(Some(m)), Sym::Str(Some(n))) => self.strs[*m as usize]
                        .decode()
                        .zip(self.strs[*n as usize].decode()),
                    _ => None,
                };
                match (
                    names,
                    &self.values[module as usize],
                    &self.values[name as usize],
                ) {
                    (Some((m, n)), _, _) => {
                        let g = self.add_global(m, n, offset, op);
                        self.push(Sym::Global(g))
                    }
                    (None, mv, nv) => {
                        let reason = format!(
                            "STACK_GLOBAL takes its module from {} and its name from {}, so the import is decided at load time",
                            describe(mv),
                            describe(nv)
                        );
                        self.finding(
                            Verdict::Dangerous,
                            FindingCode::DynamicGlobal,
                            offset,
                            reason,
                        );
                        let g = self.add_global("?".into(), "?".into(), offset, op);
                        self.push(Sym::Global(g))
                    }
                }
            }
            REDUCE => {
                let args = self.pop(op)?;
                let callable = self.pop(op)?;
                let callee = self.mark_called(callable, op, offset)?;
                if let Some(c) = callee {
                    self.mark_forwarded_call(c, args);
                }
                self.push(Sym::Call(callee))
            }
            BUILD => {
                self.pop(op)?;
                let obj = self.top(op)?;
                match self.values[obj as usize].clone() {
                    Sym::Global(g) => {
                        let (m, n) = (self.globals[g].module.clone(), self.globals[g].name.clone());
                        self.finding(
                            Verdict::Dangerous,
                            FindingCode::BuildOnGlobal,
                            offset,
                            format!("BUILD sets attributes on the imported object {m}.{n} itself"),
                        );
                    }
                    Sym::Call(Some(g)) => self.globals[g].called = true,
                    _ => {}
                }
            }
            INST => {
                let (m, n) = pair(arg)?;
                self.pop_mark(op)?;
                let g = self.add_global(m, n, offset, op);
                self.globals[g].called = true;
                self.push(Sym::Call(Some(g)))
            }
            OBJ => {
                let items = self.pop_mark(op)?;
                let Some(&cls) = items.first() else {
                    return Err(stop(
                        FindingCode::MalformedStream,
                        "OBJ without a class after MARK",
                    ));
                };
                let callee = self.mark_called(cls, op, offset)?;
                self.push(Sym::Call(callee))
            }
            NEWOBJ => {
                self.pop(op)?;
                let cls = self.pop(op)?;
                let callee = self.mark_called(cls, op, offset)?;
                self.push(Sym::Call(callee))
            }
            NEWOBJ_EX => {
                self.pop(op)?;
                self.pop(op)?;
                let cls = self.pop(op)?;
                let callee = self.mark_called(cls, op, offset)?;
                self.push(Sym::Call(callee))
            }
            PROTO => {
                let v = match arg {
                    Arg::Int(v) => *v,
                    _ => 0,
                };
                if v > 5 {
                    return Err(stop(
                        FindingCode::MalformedStream,
                        format!("unsupported pickle protocol {v}"),
                    ));
                }
                if !first {
                    self.finding(
                        Verdict::Dangerous,
                        FindingCode::ProtoMidStream,
                        offset,
                        "PROTO after the first opcode changes how later names are resolved".into(),
                    );
                }
                self.proto = v as u8;
            }
            FRAME => {}
            PERSID => {
                self.persistent_ids += 1;
                self.push(Sym::PersId(None))
            }
            BINPERSID => {
                let pid = self.pop(op)?;
                self.persistent_ids += 1;
                let class = match &self.values[pid as usize] {
                    Sym::Tuple(head) if head.len >= 2 => {
                        match (
                            &self.values[head.items[0] as usize],
                            &self.values[head.items[1] as usize],
                        ) {
                            (Sym::Str(Some(kind)), Sym::Global(g))
                                if self.strs[*kind as usize].is("module") =>
                            {
                                Some(*g)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                self.push(Sym::PersId(class))
            }
            STOP => {
                self.pop(op)?;
                if !self.stack.is_clear() {
                    self.finding(
                        Verdict::Suspicious,
                        FindingCode::UnusualStructure,
                        offset,
                        "values are left on the stack at STOP; no pickler writes that".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

fn describe(sym: &Sym) -> &'static str {
    match sym {
        Sym::Str(_) => "a string",
        Sym::Other => "a constant",
        Sym::List => "a list",
        Sym::Dict => "a dict",
        Sym::Set => "a set",
        Sym::Tuple(_) => "a tuple",
        Sym::Global(_) => "an imported global",
        Sym::Call(_) => "the result of a call",
        Sym::PersId(_) => "a persistent-id object",
    }
}

fn stack_stop(e: StackError, op: Opcode) -> Stop {
    stop(FindingCode::MalformedStream, e.describe(op))
}

fn pair(arg: &Arg<'_>) -> Result<(String, String), Stop> {
    match arg {
        Arg::Pair(m, n) => {
            let m = std::str::from_utf8(m)
                .map_err(|_| stop(FindingCode::MalformedStream, "module name is not UTF-8"))?;
            let n = std::str::from_utf8(n)
                .map_err(|_| stop(FindingCode::MalformedStream, "global name is not UTF-8"))?;
            Ok((m.to_string(), n.to_string()))
        }
        _ => Err(stop(
            FindingCode::MalformedStream,
            "GLOBAL without module and name",
        )),
    }
}

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
    let verdict = findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Verdict::Safe);
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

#[cfg(test)]
mod tests;
