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

mod calls;
mod driver;

pub use driver::analyze_stream;

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

#[cfg(test)]
mod tests;
