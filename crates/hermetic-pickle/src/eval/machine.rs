//! The pickle machine, run for real over the value arena: the stack, marks
//! and memo are [`crate::stack`]'s, shared with the symbolic machine in
//! [`crate::analysis`] and the joblib walk, but every value is concrete and
//! every call goes through [`super::calls`], where only allowlisted globals
//! have a meaning.

use super::bytes::{byteswap, decimal_to_twos, long_value, radix_to_twos};
use super::calls;
use super::error::{malformed, unsupported, Budget, EvalError, Problem};
use super::heap::{check_hashable, Ctx, Heap, Persist, Py2Str};
use super::value::{
    self, Arena, ArrayData, Global, Id, Known, Made, Object, Str, Value, FALSE, TRUE,
};
use super::Mode;
use crate::opcodes::Opcode;
use crate::parser::{Arg, ParseErrorKind, Parser};
use crate::policy::py2_mapping;
use crate::stack::{Stack, StackError};
use crate::text;
use std::borrow::Cow;
use std::collections::HashMap;

mod build;
mod joblib;

use joblib::old_wrapper;

/// CPython refuses to convert longer decimal integers (`sys.int_info.default_max_str_digits`).
const MAX_DECIMAL_DIGITS: usize = 4300;

pub(crate) struct Machine<'a, 'm> {
    pub heap: Heap<'a, 'm>,
    stack: Stack,
    proto: u8,
}

/// Evaluates the stream at `start` in `data`. `base` is the offset of
/// `data` in the file named `file`. Returns the value and the offset just
/// past STOP.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_stream<'a>(
    data: &'a [u8],
    start: usize,
    base: u64,
    file: &str,
    ctx: &Ctx<'_>,
    arena: &mut Arena<'a>,
    budget: &mut Budget,
    persist: &mut dyn Persist<'a>,
) -> Result<(Id, usize), EvalError> {
    let mut m = Machine {
        heap: Heap {
            arena,
            budget,
            ctx,
            np_singletons: std::collections::HashSet::new(),
        },
        stack: Stack::default(),
        proto: 0,
    };
    let mut opcodes: u64 = 0;
    let mut parser = Parser::new(data, start);
    let mut i = 0usize;
    while let Some(item) = parser.next() {
        i += 1;
        let instr = item.map_err(|e| {
            let what = match e.kind {
                ParseErrorKind::NoStop => "the stream ends before STOP".to_string(),
                _ => e.to_string(),
            };
            EvalError::Malformed {
                file: file.to_string(),
                offset: base + e.offset as u64,
                what,
            }
        })?;
        let at = base + instr.offset as u64;
        opcodes += 1;
        if opcodes > ctx.limits.max_opcodes {
            return Err(
                Problem::Limit(format!("more than {} opcodes", ctx.limits.max_opcodes))
                    .at(file, at),
            );
        }
        if instr.op == Opcode::STOP {
            let v = m.pop(instr.op).map_err(|p| p.at(file, at))?;
            return Ok((v, instr.end));
        }
        m.step(instr.op, &instr.arg, persist, i == 1)
            .map_err(|p| p.at(file, at).with_context(instr.op))?;
        if instr.op == Opcode::BUILD && ctx.joblib {
            if let Some(next) = m.joblib_inline(data, instr.end, base, file, persist)? {
                // The array's bytes are not opcodes: go on after them.
                parser = Parser::new(data, next);
            }
            if ctx.companions.is_some() {
                m.joblib_companion(file, at)?;
            }
        }
        if m.stack.depth() > ctx.limits.max_stack {
            return Err(Problem::Limit(format!(
                "the stack grew past {} entries",
                ctx.limits.max_stack
            ))
            .at(file, at));
        }
    }
    // The parser always ends with STOP or an error.
    Err(EvalError::Malformed {
        file: file.to_string(),
        offset: base + data.len() as u64,
        what: "the stream ends before STOP".into(),
    })
}

impl EvalError {
    /// Prefixes the opcode to malformed/unsupported messages.
    fn with_context(self, op: Opcode) -> EvalError {
        match self {
            EvalError::Malformed { file, offset, what } => EvalError::Malformed {
                file,
                offset,
                what: format!("{}: {what}", op.name()),
            },
            EvalError::Unsupported { file, offset, what } => EvalError::Unsupported {
                file,
                offset,
                what: format!("{}: {what}", op.name()),
            },
            other => other,
        }
    }
}

impl<'a> Machine<'a, '_> {
    pub(crate) fn push_value(&mut self, v: Value<'a>) -> Result<Id, Problem> {
        self.heap.push_value(v)
    }

    fn push(&mut self, v: Value<'a>) -> Result<(), Problem> {
        let id = self.push_value(v)?;
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self, op: Opcode) -> Result<Id, Problem> {
        self.stack.pop().map_err(|e| stack_problem(e, op))
    }

    fn top(&self, op: Opcode) -> Result<Id, Problem> {
        self.stack.top().map_err(|e| stack_problem(e, op))
    }

    fn pop_mark(&mut self, op: Opcode) -> Result<Vec<Id>, Problem> {
        self.stack.pop_mark().map_err(|e| stack_problem(e, op))
    }

    /// Puts `v` in the place of the top value.
    fn replace_top(&mut self, v: Id) {
        // Callers have just read the top; it cannot be gone.
        let _ = self.stack.replace_top(v);
    }

    fn charge_items(&mut self, n: usize) -> Result<(), Problem> {
        self.heap.budget.charge_problem(8 * n as u64)
    }

    fn str_value(&self, bytes: &'a [u8]) -> Value<'a> {
        Value::Str(Str {
            bytes: Cow::Borrowed(bytes),
            utf8: std::str::from_utf8(bytes).is_ok(),
        })
    }

    fn py2_str(&mut self, raw: Cow<'a, [u8]>) -> Result<Value<'a>, Problem> {
        match self.heap.ctx.py2_str {
            Py2Str::Ascii if raw.is_ascii() => {}
            Py2Str::Ascii => return Err(malformed(
                "a Python 2 str with non-ASCII bytes (pickle.load decodes them as ASCII and fails; pass encoding=\"latin1\" or \"bytes\")",
            )),
            Py2Str::Utf8 => {
                if std::str::from_utf8(&raw).is_err() {
                    return Err(malformed(
                        "a Python 2 str that is not UTF-8 (torch.load decodes them as UTF-8 and fails; pass encoding=\"latin1\" or \"bytes\")",
                    ));
                }
            }
            Py2Str::Bytes => return Ok(Value::Bytes(raw)),
            Py2Str::Latin1 if raw.is_ascii() => {}
            Py2Str::Latin1 => {
                let text: String = raw.iter().map(|&b| char::from(b)).collect();
                self.heap.budget.charge_problem(text.len() as u64)?;
                return Ok(Value::Str(Str {
                    bytes: Cow::Owned(text.into_bytes()),
                    utf8: true,
                }));
            }
        }
        Ok(Value::Str(Str {
            bytes: raw,
            utf8: true,
        }))
    }

    fn resolve(&mut self, module: &str, name: &str) -> Result<Value<'a>, Problem> {
        let (module, name) = if self.proto < 3 {
            py2_mapping(module, name).unwrap_or_else(|| (module.to_string(), name.to_string()))
        } else {
            (module.to_string(), name.to_string())
        };
        if self.heap.ctx.joblib && module == "joblib.numpy_pickle" && name == "NumpyArrayWrapper" {
            return Ok(calls::known_value(Known::JoblibWrapper));
        }
        if self.heap.ctx.joblib
            && self.heap.ctx.companions.is_some()
            && old_wrapper(&module, &name).is_some()
        {
            // A placeholder `joblib_companion` replaces by the companion's array.
            return Ok(Value::Global(Box::new(Global::Foreign { module, name })));
        }
        match calls::resolve(&module, &name, self.heap.ctx.torch_names) {
            Some(k) => Ok(calls::known_value(k)),
            None if self.heap.ctx.mode == Mode::Strict => {
                let trusted = self.heap.ctx.allowed.permits(&module, &name)
                    && (crate::policy::Policy::builtin()
                        .classify(&module, &name)
                        .verdict
                        != crate::policy::Verdict::Dangerous
                        || (module == "builtins" && name == "object"));
                if trusted || crate::policy::is_inert_class(&module, &name) {
                    Ok(Value::Global(Box::new(Global::Foreign { module, name })))
                } else if crate::policy::Policy::builtin().is_safe(&module, &name) {
                    Err(unsupported(format!(
                        "{module}.{name}: the scanner allows it, but it has no meaning in hermetic's evaluator (quantized, sparse and subclassed tensors are not built)"
                    )))
                } else {
                    Err(Problem::Foreign(module, name))
                }
            }
            None => Ok(Value::Global(Box::new(Global::Foreign { module, name }))),
        }
    }

    fn step(
        &mut self,
        op: Opcode,
        arg: &Arg<'a>,
        persist: &mut dyn Persist<'a>,
        first: bool,
    ) -> Result<(), Problem> {
        use Opcode::*;
        match op {
            INT | BININT | BININT1 | BININT2 | LONG => {
                let v = match arg {
                    Arg::Int(i) => Value::Int(*i),
                    Arg::Bool(b) if op == INT => Value::Bool(*b),
                    Arg::Bool(b) => Value::Int(*b as i64),
                    Arg::BigDecimal(d) => self.big_decimal(d)?,
                    Arg::BigRadix {
                        negative,
                        base,
                        digits,
                    } => {
                        self.heap.budget.charge_problem(digits.len() as u64)?;
                        let bytes = radix_to_twos(*negative, *base, digits)
                            .ok_or_else(|| malformed("bad integer argument"))?;
                        long_value(&bytes)
                    }
                    _ => return Err(malformed("bad integer argument")),
                };
                self.push(v)?;
            }
            LONG1 | LONG4 => {
                let Arg::LongBytes(b) = arg else {
                    return Err(malformed("bad LONG argument"));
                };
                let v = long_value(b);
                self.push(v)?;
            }
            FLOAT | BINFLOAT => {
                let Arg::Float(f) = arg else {
                    return Err(malformed("bad float argument"));
                };
                self.push(Value::Float(*f))?;
            }
            NONE => self.stack.push(value::NONE),
            NEWTRUE => self.stack.push(TRUE),
            NEWFALSE => self.stack.push(FALSE),
            STRING => {
                let Arg::Quoted(q) = arg else {
                    return Err(malformed("bad STRING argument"));
                };
                let raw = text::escape_decode(q)
                    .ok_or_else(|| malformed("STRING has a bad escape sequence"))?;
                self.heap.budget.charge_problem(raw.len() as u64)?;
                let v = self.py2_str(Cow::Owned(raw))?;
                self.push(v)?;
            }
            BINSTRING | SHORT_BINSTRING => {
                let Arg::Latin1(b) = arg else {
                    return Err(malformed("bad BINSTRING argument"));
                };
                let v = self.py2_str(Cow::Borrowed(b))?;
                self.push(v)?;
            }
            BINBYTES | SHORT_BINBYTES | BINBYTES8 => {
                let Arg::Bytes(b) = arg else {
                    return Err(malformed("bad BINBYTES argument"));
                };
                self.push(Value::Bytes(Cow::Borrowed(b)))?;
            }
            BYTEARRAY8 => {
                let Arg::ByteArray(b) = arg else {
                    return Err(malformed("bad BYTEARRAY8 argument"));
                };
                self.push(Value::ByteArray(Cow::Borrowed(b)))?;
            }
            UNICODE => {
                let Arg::RawUnicodeEscape(b) = arg else {
                    return Err(malformed("bad UNICODE argument"));
                };
                let cps = text::decode_raw_unicode_escape(b)
                    .ok_or_else(|| malformed("UNICODE is not valid raw-unicode-escape text"))?;
                let (bytes, utf8) = encode_code_points(&cps);
                self.heap.budget.charge_problem(bytes.len() as u64)?;
                self.push(Value::Str(Str {
                    bytes: Cow::Owned(bytes),
                    utf8,
                }))?;
            }
            SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
                let Arg::Utf8(b) = arg else {
                    return Err(malformed("bad BINUNICODE argument"));
                };
                let v = self.str_value(b);
                self.push(v)?;
            }
            NEXT_BUFFER => {
                return Err(unsupported(
                    "an out-of-band buffer (pickle protocol 5 buffers are not stored in the file)",
                ))
            }
            READONLY_BUFFER => {
                let t = self.top(op)?;
                let v = match self.heap.arena.get(t) {
                    Value::ByteArray(b) => Value::Bytes(b.clone()),
                    Value::Bytes(_) => return Ok(()),
                    other => {
                        return Err(malformed(format!(
                            "READONLY_BUFFER on {}, not a buffer",
                            other.describe()
                        )))
                    }
                };
                let id = self.push_value(v)?;
                self.replace_top(id);
            }
            EMPTY_LIST => self.push(Value::List(Vec::new()))?,
            EMPTY_DICT => self.push(calls::dict(super::value::DictKind::Dict, Vec::new()))?,
            EMPTY_SET => self.push(Value::Set(Vec::new()))?,
            EMPTY_TUPLE => self.push(Value::Tuple(Vec::new()))?,
            APPEND => {
                let v = self.pop(op)?;
                let t = self.top(op)?;
                self.extend_list(t, vec![v], op)?;
            }
            APPENDS => {
                let items = self.pop_mark(op)?;
                let t = self.top(op)?;
                self.extend_list(t, items, op)?;
            }
            SETITEM => {
                let v = self.pop(op)?;
                let k = self.pop(op)?;
                let t = self.top(op)?;
                self.set_items(t, vec![(k, v)], op)?;
            }
            SETITEMS => {
                let items = self.pop_mark(op)?;
                if items.len() % 2 != 0 {
                    return Err(malformed("SETITEMS with an odd number of items"));
                }
                let pairs = items.chunks(2).map(|p| (p[0], p[1])).collect();
                let t = self.top(op)?;
                self.set_items(t, pairs, op)?;
            }
            ADDITEMS => {
                let items = self.pop_mark(op)?;
                let t = self.top(op)?;
                self.charge_items(items.len())?;
                if matches!(self.heap.arena.get(t), Value::Set(_)) {
                    check_hashable(&self.heap, items.iter().copied())?;
                }
                match self.heap.arena.get_mut(t) {
                    Value::Set(s) => s.extend(items),
                    Value::Object(o) => o.list_items.extend(items),
                    other => {
                        return Err(malformed(format!(
                            "ADDITEMS on {}: the unpickler would call its `add` method",
                            other.describe()
                        )))
                    }
                }
            }
            LIST => {
                let items = self.pop_mark(op)?;
                self.push(Value::List(items))?;
            }
            TUPLE => {
                let items = self.pop_mark(op)?;
                self.push(Value::Tuple(items))?;
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = match op {
                    TUPLE1 => 1,
                    TUPLE2 => 2,
                    _ => 3,
                };
                let items = self.stack.pop_n(n).map_err(|e| stack_problem(e, op))?;
                self.push(Value::Tuple(items))?;
            }
            DICT => {
                let items = self.pop_mark(op)?;
                if items.len() % 2 != 0 {
                    return Err(malformed("DICT with an odd number of items"));
                }
                check_hashable(&self.heap, items.iter().step_by(2).copied())?;
                let pairs = items.chunks(2).map(|p| (p[0], p[1])).collect();
                self.push(calls::dict(super::value::DictKind::Dict, pairs))?;
            }
            FROZENSET => {
                let items = self.pop_mark(op)?;
                check_hashable(&self.heap, items.iter().copied())?;
                self.push(Value::FrozenSet(items))?;
            }
            MARK | POP | POP_MARK | DUP | GET | BINGET | LONG_BINGET | PUT | BINPUT
            | LONG_BINPUT | MEMOIZE => {
                self.stack
                    .apply(op, arg)
                    .map_err(|e| stack_problem(e, op))?;
                // What a mark and a memo entry cost CPython (a slot, a dict entry).
                match op {
                    MARK => self.heap.budget.charge_problem(24)?,
                    PUT | BINPUT | LONG_BINPUT | MEMOIZE => self.heap.budget.charge_problem(32)?,
                    _ => {}
                }
            }
            EXT1 | EXT2 | EXT4 => return Err(unsupported(
                "an extension code, which names a global through the process's copyreg registry",
            )),
            GLOBAL | INST => {
                let Arg::Pair(m, n) = arg else {
                    return Err(malformed("GLOBAL without module and name"));
                };
                let module = std::str::from_utf8(m)
                    .map_err(|_| malformed("the module name is not UTF-8"))?;
                let name = std::str::from_utf8(n)
                    .map_err(|_| malformed("the global name is not UTF-8"))?;
                let g = self.resolve(module, name)?;
                if op == GLOBAL {
                    self.push(g)?;
                } else {
                    let args = self.pop_mark(op)?;
                    let cls = self.push_value(g)?;
                    let args = self.push_value(Value::Tuple(args))?;
                    let v = self.call(cls, args, Made::Call)?;
                    self.stack.push(v);
                }
            }
            STACK_GLOBAL => {
                let name = self.pop(op)?;
                let module = self.pop(op)?;
                let (Some(m), Some(n)) =
                    (self.heap.arena.str_of(module), self.heap.arena.str_of(name))
                else {
                    return Err(malformed("STACK_GLOBAL needs two str values"));
                };
                let (m, n) = (m.to_string(), n.to_string());
                let g = self.resolve(&m, &n)?;
                self.push(g)?;
            }
            REDUCE => {
                let args = self.pop(op)?;
                let callable = self.pop(op)?;
                let v = self.call(callable, args, Made::Call)?;
                self.stack.push(v);
            }
            OBJ => {
                let mut items = self.pop_mark(op)?;
                if items.is_empty() {
                    return Err(malformed("OBJ without a class after MARK"));
                }
                let cls = items.remove(0);
                let args = self.push_value(Value::Tuple(items))?;
                let v = self.call(cls, args, Made::Call)?;
                self.stack.push(v);
            }
            NEWOBJ => {
                let args = self.pop(op)?;
                let cls = self.pop(op)?;
                let v = self.newobj(cls, args, None)?;
                self.stack.push(v);
            }
            NEWOBJ_EX => {
                let kwargs = self.pop(op)?;
                let args = self.pop(op)?;
                let cls = self.pop(op)?;
                let v = self.newobj(cls, args, Some(kwargs))?;
                self.stack.push(v);
            }
            BUILD => {
                let state = self.pop(op)?;
                let obj = self.top(op)?;
                calls::build(&mut self.heap, obj, state)?;
            }
            PROTO => {
                let v = match arg {
                    Arg::Int(v) => *v,
                    _ => 0,
                };
                if v > 5 {
                    return Err(malformed(format!("unsupported pickle protocol {v}")));
                }
                if !first && self.heap.ctx.mode == Mode::Strict {
                    return Err(malformed("PROTO after the first opcode"));
                }
                self.proto = v as u8;
            }
            FRAME => {}
            PERSID => {
                let Arg::Line(l) = arg else {
                    return Err(malformed("bad PERSID argument"));
                };
                if !l.is_ascii() {
                    return Err(malformed("PERSID's id is not ASCII"));
                }
                let pid = self.push_value(self.str_value(l))?;
                let v = persist.load(self.heap.arena, self.heap.budget, pid)?;
                self.stack.push(v);
            }
            BINPERSID => {
                let pid = self.pop(op)?;
                let v = persist.load(self.heap.arena, self.heap.budget, pid)?;
                self.stack.push(v);
            }
            STOP => {}
        }
        Ok(())
    }
}

fn stack_problem(e: StackError, op: Opcode) -> Problem {
    malformed(e.describe(op))
}

/// Code points to surrogate-passing UTF-8, and whether it is plain UTF-8.
pub(crate) fn encode_code_points(cps: &[u32]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(cps.len());
    let mut utf8 = true;
    for &c in cps {
        match char::from_u32(c) {
            Some(ch) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            None => {
                // A lone surrogate (U+D800..U+DFFF): three bytes, as surrogatepass writes it.
                utf8 = false;
                out.push(0xe0 | ((c >> 12) & 0x0f) as u8);
                out.push(0x80 | ((c >> 6) & 0x3f) as u8);
                out.push(0x80 | (c & 0x3f) as u8);
            }
        }
    }
    (out, utf8)
}

/// The objects the stream made by calling a class (every `Value::Object`),
/// but not joblib < 0.10's array placeholders, which the memo keeps while
/// the array stands in their place: what a builder must construct even
/// where the result does not reach it, since the unpickler called each.
pub fn made_objects(arena: &super::value::Arena<'_>) -> Vec<Id> {
    (0..arena.len() as Id)
        .filter(|&i| match arena.get(i) {
            Value::Object(o) => !matches!(
                arena.get(o.class),
                Value::Global(g) if matches!(&**g, Global::Foreign { module, name } if old_wrapper(module, name).is_some())
            ),
            _ => false,
        })
        .collect()
}

#[cfg(test)]
mod tests;
