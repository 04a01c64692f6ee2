//! joblib dumps: pickle streams with numpy array bytes inline.
//!
//! `joblib.numpy_pickle.NumpyPickler` replaces each ndarray by a
//! `NumpyArrayWrapper` (built with NEWOBJ and BUILD; for protocol 4+ the
//! frame is committed right after) and writes the array right after the
//! BUILD that sets the wrapper's state:
//!
//! * object arrays: a complete nested pickle (protocol 5) that
//!   `read_array` loads with a fresh unpickler;
//! * other arrays: when the wrapper has `numpy_array_alignment_bytes` (not
//!   `None`; joblib >= 1.2 on seekable files), one byte giving a padding
//!   length and that many padding bytes; then `prod(shape) * itemsize` raw
//!   bytes.
//!
//! `NumpyUnpickler.load_build` does the reverse, so a joblib stream cannot be
//! analysed by a plain pickle reader. The scan runs a small symbolic
//! machine over the opcodes to find each wrapper's BUILD and its shape and
//! dtype, skips the array bytes, analyses nested object-array pickles as
//! streams of their own, and analyses the opcode bytes in between as one
//! stream (its blob id hashes those opcode bytes, without the inline array
//! data). The wrapper classes themselves are reported as Suspicious
//! `joblib_array_wrapper` findings rather than Dangerous imports.
//!
//! Old dumps (joblib < 0.10) use `NDArrayWrapper`, whose arrays live in
//! companion files; nothing is inline.

use super::{Loc, Scanner};
use crate::analysis::analyze_stream;
use crate::codes::FindingCode;
use crate::opcodes::Opcode;
use crate::parser::{Arg, Instr, Parser};
use crate::policy::{py2_mapping, Verdict};
use crate::stack::Stack;
use crate::streams::looks_like_pickle;
use crate::text;

/// The module joblib's wrappers live in.
pub const MODULE: &str = "joblib.numpy_pickle";

/// Bytes of data kept after a parse error so the analysis reproduces it.
const ERROR_CONTEXT: usize = 1 << 20;

/// Strings longer than this are never attribute names or dtype codes.
const MAX_TEXT: usize = 256;

fn is_wrapper_name(n: &[u8]) -> bool {
    matches!(
        n,
        b"NumpyArrayWrapper" | b"NDArrayWrapper" | b"ZNDArrayWrapper"
    )
}

/// Whether the stream at `start` names a joblib array wrapper before it
/// ends or stops parsing.
pub fn is_joblib(data: &[u8], start: usize) -> bool {
    for item in Parser::new(data, start) {
        let Ok(instr) = item else {
            return false;
        };
        match &instr.arg {
            Arg::Pair(m, n) if m.starts_with(b"joblib.") && is_wrapper_name(n) => return true,
            Arg::Utf8(s) | Arg::Latin1(s) if is_wrapper_name(s) => return true,
            _ => {}
        }
        if instr.op == Opcode::STOP {
            return false;
        }
    }
    false
}

#[derive(Clone, Debug)]
enum V {
    Int(i64),
    Str(Option<String>),
    None,
    Tuple(Vec<u32>),
    List(Vec<u32>),
    Dict(Vec<(u32, u32)>),
    /// A global and the offset of the opcode that imported it.
    Global(String, String, usize),
    /// The result of calling `callable`; `init` when `__init__` ran with the
    /// arguments (REDUCE, INST, OBJ on the class itself).
    Obj {
        callable: u32,
        args: Option<u32>,
        init: bool,
        states: Vec<u32>,
    },
    Other,
}

struct Machine {
    values: Vec<V>,
    stack: Stack,
    proto: u8,
}

/// A failed step; the analysis reports the same problem.
struct Halt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WrapperKind {
    /// `NumpyArrayWrapper`: array data follows inline.
    Inline,
    /// `NDArrayWrapper`/`ZNDArrayWrapper`: the array is in a companion file.
    Companion,
}

enum Layout {
    Object,
    Raw { padded: bool, nbytes: u64 },
}

impl Machine {
    fn new() -> Self {
        Machine {
            values: Vec::new(),
            stack: Stack::default(),
            proto: 0,
        }
    }

    fn push(&mut self, v: V) {
        self.values.push(v);
        self.stack.push((self.values.len() - 1) as u32);
    }

    fn pop(&mut self) -> Result<u32, Halt> {
        self.stack.pop().map_err(|_| Halt)
    }

    fn top(&self) -> Result<u32, Halt> {
        self.stack.top().map_err(|_| Halt)
    }

    fn pop_mark(&mut self) -> Result<Vec<u32>, Halt> {
        self.stack.pop_mark().map_err(|_| Halt)
    }

    /// Puts a new value in the place of the top one.
    fn replace_top(&mut self, v: V) {
        self.values.push(v);
        // Callers have just read the top; it cannot be gone.
        let _ = self.stack.replace_top((self.values.len() - 1) as u32);
    }

    fn text(arg: &Arg<'_>) -> Option<String> {
        match arg {
            Arg::Utf8(b) if b.len() <= MAX_TEXT => Some(text::utf8_lossy(b).into_owned()),
            Arg::Latin1(b) if b.len() <= MAX_TEXT => Some(b.iter().map(|&c| c as char).collect()),
            Arg::Quoted(q) if q.len() <= MAX_TEXT => {
                text::escape_decode(q).map(|b| b.iter().map(|&c| c as char).collect())
            }
            Arg::RawUnicodeEscape(b) if b.len() <= MAX_TEXT => {
                text::decode_raw_unicode_escape(b).and_then(|cps| text::code_points_to_string(&cps))
            }
            _ => None,
        }
    }

    fn global(&self, module: String, name: String, offset: usize) -> V {
        let (module, name) = if self.proto < 3 {
            py2_mapping(&module, &name).unwrap_or((module, name))
        } else {
            (module, name)
        };
        V::Global(module, name, offset)
    }

    fn step(&mut self, instr: &Instr<'_>) -> Result<(), Halt> {
        use Opcode::*;
        let op = instr.op;
        match op {
            INT | BININT | BININT1 | BININT2 | LONG => self.push(match instr.arg {
                Arg::Int(v) => V::Int(v),
                Arg::Bool(b) => V::Int(b as i64),
                _ => V::Other,
            }),
            LONG1 | LONG4 => self.push(match &instr.arg {
                Arg::LongBytes(b) if b.len() <= 8 => {
                    let neg = b.last().is_some_and(|x| x & 0x80 != 0);
                    let mut a = [if neg { 0xff } else { 0 }; 8];
                    a[..b.len()].copy_from_slice(b);
                    V::Int(i64::from_le_bytes(a))
                }
                _ => V::Other,
            }),
            NEWTRUE => self.push(V::Int(1)),
            NEWFALSE => self.push(V::Int(0)),
            NONE => self.push(V::None),
            FLOAT | BINFLOAT | BINBYTES | SHORT_BINBYTES | BINBYTES8 | BYTEARRAY8 | NEXT_BUFFER
            | EXT1 | EXT2 | EXT4 => self.push(V::Other),
            STRING | BINSTRING | SHORT_BINSTRING | UNICODE | SHORT_BINUNICODE | BINUNICODE
            | BINUNICODE8 => {
                let s = Self::text(&instr.arg);
                self.push(V::Str(s))
            }
            READONLY_BUFFER => {
                self.top()?;
            }
            EMPTY_LIST => self.push(V::List(Vec::new())),
            EMPTY_DICT => self.push(V::Dict(Vec::new())),
            EMPTY_SET => self.push(V::Other),
            EMPTY_TUPLE => self.push(V::Tuple(Vec::new())),
            APPEND => {
                let v = self.pop()?;
                let t = self.top()?;
                if let V::List(l) = &mut self.values[t as usize] {
                    l.push(v);
                }
            }
            APPENDS => {
                let items = self.pop_mark()?;
                let t = self.top()?;
                if let V::List(l) = &mut self.values[t as usize] {
                    l.extend(items);
                }
            }
            SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                let t = self.top()?;
                if let V::Dict(d) = &mut self.values[t as usize] {
                    d.push((k, v));
                }
            }
            SETITEMS => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(Halt);
                }
                let t = self.top()?;
                if let V::Dict(d) = &mut self.values[t as usize] {
                    d.extend(items.chunks_exact(2).map(|c| (c[0], c[1])));
                }
            }
            ADDITEMS => {
                self.pop_mark()?;
                self.top()?;
            }
            LIST => {
                let items = self.pop_mark()?;
                self.push(V::List(items))
            }
            DICT => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(Halt);
                }
                self.push(V::Dict(
                    items.chunks_exact(2).map(|c| (c[0], c[1])).collect(),
                ))
            }
            FROZENSET => {
                self.pop_mark()?;
                self.push(V::Other)
            }
            TUPLE => {
                let items = self.pop_mark()?;
                self.push(V::Tuple(items))
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = match op {
                    TUPLE1 => 1,
                    TUPLE2 => 2,
                    _ => 3,
                };
                let items = self.stack.pop_n(n).map_err(|_| Halt)?;
                self.push(V::Tuple(items))
            }
            MARK | POP | POP_MARK | DUP | GET | BINGET | LONG_BINGET | PUT | BINPUT
            | LONG_BINPUT | MEMOIZE => {
                self.stack.apply(op, &instr.arg).map_err(|_| Halt)?;
            }
            GLOBAL => {
                let Arg::Pair(m, n) = instr.arg else {
                    return Err(Halt);
                };
                let m = std::str::from_utf8(m).map_err(|_| Halt)?.to_string();
                let n = std::str::from_utf8(n).map_err(|_| Halt)?.to_string();
                let g = self.global(m, n, instr.offset);
                self.push(g)
            }
            STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let g = match (&self.values[module as usize], &self.values[name as usize]) {
                    (V::Str(Some(m)), V::Str(Some(n))) => {
                        V::Global(m.clone(), n.clone(), instr.offset)
                    }
                    _ => V::Other,
                };
                self.push(g)
            }
            REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.push(V::Obj {
                    callable,
                    args: Some(args),
                    init: true,
                    states: Vec::new(),
                })
            }
            BUILD => {
                let state = self.pop()?;
                let obj = self.top()?;
                if let V::Obj { states, .. } = &mut self.values[obj as usize] {
                    states.push(state);
                }
            }
            INST => {
                let Arg::Pair(m, n) = instr.arg else {
                    return Err(Halt);
                };
                let m = std::str::from_utf8(m).map_err(|_| Halt)?.to_string();
                let n = std::str::from_utf8(n).map_err(|_| Halt)?.to_string();
                let items = self.pop_mark()?;
                let g = self.global(m, n, instr.offset);
                self.values.push(g);
                let callable = (self.values.len() - 1) as u32;
                self.values.push(V::Tuple(items));
                let args = (self.values.len() - 1) as u32;
                self.push(V::Obj {
                    callable,
                    args: Some(args),
                    init: true,
                    states: Vec::new(),
                })
            }
            OBJ => {
                let items = self.pop_mark()?;
                let (&callable, rest) = items.split_first().ok_or(Halt)?;
                self.values.push(V::Tuple(rest.to_vec()));
                let args = (self.values.len() - 1) as u32;
                self.push(V::Obj {
                    callable,
                    args: Some(args),
                    init: true,
                    states: Vec::new(),
                })
            }
            NEWOBJ => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.push(V::Obj {
                    callable,
                    args: Some(args),
                    init: false,
                    states: Vec::new(),
                })
            }
            NEWOBJ_EX => {
                self.pop()?;
                let args = self.pop()?;
                let callable = self.pop()?;
                self.push(V::Obj {
                    callable,
                    args: Some(args),
                    init: false,
                    states: Vec::new(),
                })
            }
            PROTO => {
                let v = match instr.arg {
                    Arg::Int(v) => v,
                    _ => 0,
                };
                if v > 5 {
                    return Err(Halt);
                }
                self.proto = v as u8;
            }
            FRAME => {}
            PERSID => self.push(V::Other),
            BINPERSID => {
                self.pop()?;
                self.push(V::Other)
            }
            STOP => {
                self.pop()?;
            }
        }
        Ok(())
    }

    /// The class an object was made from, seeing through copyreg helpers.
    fn class_of(&self, obj: u32) -> Option<(&str, &str)> {
        let V::Obj { callable, args, .. } = &self.values[obj as usize] else {
            return None;
        };
        let V::Global(m, n, _) = &self.values[*callable as usize] else {
            return None;
        };
        if m == "copyreg"
            && matches!(
                n.as_str(),
                "_reconstructor" | "__newobj__" | "__newobj_ex__"
            )
        {
            let V::Tuple(items) = &self.values[(*args)? as usize] else {
                return None;
            };
            let V::Global(m, n, _) = &self.values[*items.first()? as usize] else {
                return None;
            };
            return Some((m, n));
        }
        Some((m, n))
    }

    /// Offsets of the pickling machinery that rebuilt a wrapper under
    /// protocols 0 and 1: `copyreg._reconstructor(cls, builtins.object, None)`
    /// (or `copyreg.__newobj__`). They are part of joblib's placeholder.
    fn wrapper_machinery(&self, obj: u32) -> Vec<usize> {
        let V::Obj { callable, args, .. } = &self.values[obj as usize] else {
            return Vec::new();
        };
        let V::Global(m, n, at) = &self.values[*callable as usize] else {
            return Vec::new();
        };
        match (m.as_str(), n.as_str()) {
            ("copyreg", "__newobj__") => vec![*at],
            ("copyreg", "_reconstructor") => {
                let Some(V::Tuple(items)) = args.map(|a| &self.values[a as usize]) else {
                    return Vec::new();
                };
                match items.as_slice() {
                    [_, base, state] => {
                        match (&self.values[*base as usize], &self.values[*state as usize]) {
                            (V::Global(bm, bn, b_at), V::None)
                                if bm == "builtins" && bn == "object" =>
                            {
                                vec![*at, *b_at]
                            }
                            _ => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn wrapper_kind(&self, obj: u32) -> Option<WrapperKind> {
        match self.class_of(obj)? {
            (MODULE, "NumpyArrayWrapper") => Some(WrapperKind::Inline),
            (MODULE | "joblib.numpy_pickle_compat", "NDArrayWrapper" | "ZNDArrayWrapper") => {
                Some(WrapperKind::Companion)
            }
            _ => None,
        }
    }

    fn str_of(&self, id: u32) -> Option<&str> {
        match &self.values[id as usize] {
            V::Str(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The wrapper's attributes: `__init__` arguments, then each BUILD state
    /// (a dict, or a `(state, slotstate)` pair) in order; last one wins.
    fn attribute(&self, obj: u32, name: &str) -> Attr {
        let V::Obj {
            callable,
            args,
            init,
            states,
        } = &self.values[obj as usize]
        else {
            return Attr::Missing;
        };
        let mut found = Attr::Missing;
        let direct =
            matches!(&self.values[*callable as usize], V::Global(m, _, _) if m != "copyreg");
        if *init && direct {
            if let Some(V::Tuple(items)) = args.map(|a| &self.values[a as usize]) {
                const PARAMS: [&str; 6] = [
                    "subclass",
                    "shape",
                    "order",
                    "dtype",
                    "allow_mmap",
                    "numpy_array_alignment_bytes",
                ];
                if let Some(i) = PARAMS.iter().position(|p| *p == name) {
                    found = match items.get(i) {
                        Some(&v) => Attr::Value(v),
                        None if name == "numpy_array_alignment_bytes" => Attr::Default16,
                        None => Attr::Missing,
                    };
                }
            }
        }
        for &s in states {
            let dicts: Vec<u32> = match &self.values[s as usize] {
                V::Dict(_) => vec![s],
                V::Tuple(pair) if pair.len() == 2 => pair.clone(),
                _ => Vec::new(),
            };
            for d in dicts {
                if let V::Dict(items) = &self.values[d as usize] {
                    for &(k, v) in items {
                        if self.str_of(k) == Some(name) {
                            found = Attr::Value(v);
                        }
                    }
                }
            }
        }
        found
    }

    /// `(itemsize, hasobject)` of a pickled `numpy.dtype`.
    fn dtype_info(&self, id: u32, depth: u32) -> Result<(u64, bool), String> {
        if depth > 16 {
            return Err("dtype nested too deeply".into());
        }
        let V::Obj {
            callable,
            args,
            states,
            ..
        } = &self.values[id as usize]
        else {
            return Err("the dtype is not a reconstructed numpy.dtype".into());
        };
        match &self.values[*callable as usize] {
            V::Global(m, n, _) if (m == "numpy" || m.starts_with("numpy.")) && n == "dtype" => {}
            _ => return Err("the dtype is not built by numpy.dtype".into()),
        }
        let typestr = match args.map(|a| &self.values[a as usize]) {
            Some(V::Tuple(items)) => items.first().and_then(|&i| self.str_of(i)),
            _ => None,
        }
        .ok_or("the dtype has no type string")?;
        let code = typestr.trim_start_matches(['<', '>', '|', '=']);
        let kind = code.chars().next().ok_or("empty dtype type string")?;
        let digits: String = code
            .chars()
            .skip(1)
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let mut has_object = kind == 'O';
        let mut elsize: Option<i64> = None;
        if let Some(&state) = states.last() {
            if let V::Tuple(items) = &self.values[state as usize] {
                if let Some(&V::Int(e)) = items.get(5).map(|&i| &self.values[i as usize]) {
                    elsize = Some(e);
                }
                if let Some(&V::Int(flags)) = items.get(7).map(|&i| &self.values[i as usize]) {
                    has_object |= flags & 1 != 0;
                }
                if let Some(V::Tuple(sub)) = items.get(2).map(|&i| &self.values[i as usize]) {
                    if let Some(&base) = sub.first() {
                        has_object |= self.dtype_info(base, depth + 1)?.1;
                    }
                }
                if let Some(V::Dict(fields)) = items.get(4).map(|&i| &self.values[i as usize]) {
                    for &(_, f) in fields {
                        if let V::Tuple(parts) = &self.values[f as usize] {
                            if let Some(&dt) = parts.first() {
                                has_object |= self.dtype_info(dt, depth + 1)?.1;
                            }
                        }
                    }
                }
            }
        }
        let itemsize = match elsize {
            Some(e) if e > 0 => e as u64,
            _ => digits
                .parse::<u64>()
                .map_err(|_| format!("cannot tell the item size of dtype `{typestr}`"))?,
        };
        Ok((itemsize, has_object))
    }

    fn layout(&self, wrapper: u32) -> Result<Layout, String> {
        let dtype = match self.attribute(wrapper, "dtype") {
            Attr::Value(v) => v,
            _ => return Err("the wrapper has no dtype".into()),
        };
        let (itemsize, has_object) = self.dtype_info(dtype, 0)?;
        if has_object {
            return Ok(Layout::Object);
        }
        let shape = match self.attribute(wrapper, "shape") {
            Attr::Value(v) => v,
            _ => return Err("the wrapper has no shape".into()),
        };
        let V::Tuple(dims) = &self.values[shape as usize] else {
            return Err("the wrapper's shape is not a tuple".into());
        };
        let mut count: u64 = 1;
        for &d in dims {
            let V::Int(n) = self.values[d as usize] else {
                return Err("the wrapper's shape holds something other than integers".into());
            };
            let n = u64::try_from(n).map_err(|_| "the wrapper's shape is negative".to_string())?;
            count = count
                .checked_mul(n)
                .ok_or("the wrapper's shape overflows")?;
        }
        let nbytes = count
            .checked_mul(itemsize)
            .ok_or("the array size overflows")?;
        let padded = match self.attribute(wrapper, "numpy_array_alignment_bytes") {
            Attr::Missing => false,
            Attr::Default16 => true,
            Attr::Value(v) => !matches!(self.values[v as usize], V::None),
        };
        Ok(Layout::Raw { padded, nbytes })
    }
}

enum Attr {
    Missing,
    Value(u32),
    /// `__init__`'s default `numpy_array_alignment_bytes=16`.
    Default16,
}

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
fn scan_one(
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
    report.verdict = report
        .findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Verdict::Safe);
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

#[cfg(test)]
pub(crate) mod tests;
