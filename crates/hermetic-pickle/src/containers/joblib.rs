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

mod scan;
mod wrapper;

pub(crate) use scan::scan_joblib;

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
}

#[cfg(test)]
pub(crate) mod tests;
