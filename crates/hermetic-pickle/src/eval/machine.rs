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

    fn big_decimal(&mut self, digits: &[u8]) -> Result<Value<'a>, Problem> {
        if digits.len() > MAX_DECIMAL_DIGITS + 1 {
            return Err(Problem::Limit(format!(
                "an integer of more than {MAX_DECIMAL_DIGITS} decimal digits"
            )));
        }
        let bytes = decimal_to_twos(digits).ok_or_else(|| malformed("bad decimal integer"))?;
        self.heap.budget.charge_problem(bytes.len() as u64)?;
        Ok(long_value(&bytes))
    }

    fn extend_list(&mut self, target: Id, items: Vec<Id>, op: Opcode) -> Result<(), Problem> {
        self.charge_items(items.len())?;
        match self.heap.arena.get_mut(target) {
            Value::List(l) => l.extend(items),
            Value::Object(o) => o.list_items.extend(items),
            other => {
                return Err(malformed(format!(
                    "{} on {}: the unpickler would call its `append`/`extend` method",
                    op.name(),
                    other.describe()
                )))
            }
        }
        Ok(())
    }

    fn set_items(&mut self, target: Id, pairs: Vec<(Id, Id)>, op: Opcode) -> Result<(), Problem> {
        self.charge_items(2 * pairs.len())?;
        if matches!(self.heap.arena.get(target), Value::Dict(_)) {
            check_hashable(&self.heap, pairs.iter().map(|p| p.0))?;
        }
        match self.heap.arena.get_mut(target) {
            Value::Dict(d) => d.items.extend(pairs),
            Value::Object(o) => o.dict_items.extend(pairs),
            other => {
                return Err(malformed(format!(
                    "{} on {}: the unpickler would call its `__setitem__` method",
                    op.name(),
                    other.describe()
                )))
            }
        }
        Ok(())
    }

    /// `callable(*args)`.
    pub(crate) fn call(&mut self, callable: Id, args: Id, made: Made) -> Result<Id, Problem> {
        if self.heap.arena.seq_of(args).is_none()
            || !matches!(self.heap.arena.get(args), Value::Tuple(_))
        {
            return Err(malformed(format!(
                "the arguments of a call are {}, not a tuple",
                self.heap.arena.get(args).describe()
            )));
        }
        match self.heap.arena.get(callable) {
            Value::Global(g) => match &**g {
                Global::Known(k) => {
                    let k = *k;
                    calls::call_known(&mut self.heap, k, args)
                }
                Global::Foreign { module, name } => {
                    let forwarded = (module == "copyreg" || module == "copy_reg")
                        && matches!(
                            name.as_str(),
                            "_reconstructor" | "__newobj__" | "__newobj_ex__"
                        );
                    let forwarded_made = if name == "_reconstructor" {
                        Made::Reconstructor
                    } else {
                        Made::New
                    };
                    if forwarded {
                        if let Some((&cls, rest)) =
                            self.heap.arena.seq_of(args).and_then(|s| s.split_first())
                        {
                            let rest = rest.to_vec();
                            if let Value::Global(g) = self.heap.arena.get(cls) {
                                if let (Global::Known(k), Mode::Strict, false) =
                                    (&**g, self.heap.ctx.mode, name == "_reconstructor")
                                {
                                    // copyreg.__newobj__(dict, ...) is dict.__new__(dict, ...).
                                    let k = *k;
                                    let rest = self.push_value(Value::Tuple(rest))?;
                                    return calls::new_known(&mut self.heap, k, rest);
                                }
                                if name == "_reconstructor" {
                                    return self.reconstructed(
                                        cls,
                                        rest.first().copied(),
                                        rest.get(1).copied(),
                                    );
                                }
                                let rest = Some(self.push_value(Value::Tuple(rest))?);
                                return self.opaque(cls, rest, None, forwarded_made);
                            }
                        }
                    }
                    self.opaque(callable, Some(args), None, made)
                }
            },
            _ if self.heap.ctx.mode != Mode::Strict => {
                self.opaque(callable, Some(args), None, made)
            }
            other => Err(malformed(format!(
                "a call of {}: only named globals can be called",
                other.describe()
            ))),
        }
    }

    /// `cls.__new__(cls, *args, **kwargs)`.
    fn newobj(&mut self, cls: Id, args: Id, kwargs: Option<Id>) -> Result<Id, Problem> {
        if !matches!(self.heap.arena.get(args), Value::Tuple(_)) {
            return Err(malformed(format!(
                "NEWOBJ's arguments are {}, not a tuple",
                self.heap.arena.get(args).describe()
            )));
        }
        if let Some(kw) = kwargs {
            let empty = matches!(self.heap.arena.get(kw), Value::Dict(d) if d.items.is_empty());
            if !empty
                && !matches!(self.heap.arena.get(cls), Value::Global(g) if matches!(**g, Global::Foreign { .. }))
            {
                return Err(unsupported("NEWOBJ_EX with keyword arguments"));
            }
        }
        match self.heap.arena.get(cls) {
            Value::Global(g) => match &**g {
                Global::Known(k) => {
                    let k = *k;
                    calls::new_known(&mut self.heap, k, args)
                }
                Global::Foreign { .. } => self.opaque(cls, Some(args), kwargs, Made::New),
            },
            _ if self.heap.ctx.mode != Mode::Strict => {
                self.opaque(cls, Some(args), kwargs, Made::New)
            }
            other => Err(malformed(format!(
                "NEWOBJ on {}, not a class",
                other.describe()
            ))),
        }
    }

    pub(crate) fn opaque(
        &mut self,
        class: Id,
        args: Option<Id>,
        kwargs: Option<Id>,
        made: Made,
    ) -> Result<Id, Problem> {
        self.object(class, made, args, kwargs, None)
    }

    /// After BUILD on a joblib `NumpyArrayWrapper`: reads the array that
    /// follows in the file, as joblib's `read_array` does (for raw data a
    /// padding byte and that many bytes, then the C- or Fortran-order bytes;
    /// for object dtypes a nested pickle stream), and puts it in the wrapper's
    /// place. Returns where the opcodes go on.
    fn joblib_inline(
        &mut self,
        data: &'a [u8],
        at: usize,
        base: u64,
        file: &str,
        persist: &mut dyn Persist<'a>,
    ) -> Result<Option<usize>, EvalError> {
        let Ok(top) = self.stack.top() else {
            return Ok(None);
        };
        let (padded, dtype, count, shape, fortran) = match self.heap.arena.get(top) {
            Value::Array(a) => match a.data {
                ArrayData::Joblib(Some(p)) => {
                    // numel() could wrap on a crafted shape: checked here.
                    let count = a.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
                    (p, a.dtype.clone(), count, a.shape.clone(), a.fortran)
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let err = |what: String, off: usize| EvalError::Malformed {
            file: file.to_string(),
            offset: base + off as u64,
            what,
        };
        let mut pos = at;
        // Object arrays are a nested pickle right away; only raw data is padded.
        if padded && !dtype.has_object() {
            let pad = *data.get(pos).ok_or_else(|| {
                err(
                    "the file ends before a joblib array's padding byte".into(),
                    pos,
                )
            })?;
            pos += 1 + usize::from(pad);
        }
        if dtype.has_object() {
            // joblib reads it with a plain Unpickler: no wrappers inside.
            let nested = Ctx {
                joblib: false,
                ..*self.heap.ctx
            };
            let (arr, end) = run_stream(
                data,
                pos,
                base,
                file,
                &nested,
                self.heap.arena,
                self.heap.budget,
                persist,
            )?;
            if !matches!(self.heap.arena.get(arr), Value::Array(a) if a.dtype.has_object()) {
                return Err(err(
                    "a joblib object array's nested pickle is not an object array".into(),
                    pos,
                ));
            }
            self.replace_top(arr);
            return Ok(Some(end));
        }
        let nbytes = count
            .and_then(|c| c.checked_mul(dtype.itemsize()))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| err("a joblib array larger than memory".into(), pos))?;
        let end = pos
            .checked_add(nbytes)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                err(
                    format!("the file ends inside a joblib array of {nbytes} bytes"),
                    pos,
                )
            })?;
        // A new node: the memo keeps the wrapper, as joblib's does (a later
        // memo get of it is the wrapper there, and refused here).
        let (dtype, bytes) = if dtype.native_order() {
            (dtype, Cow::Borrowed(&data[pos..end]))
        } else {
            // joblib.load's `_ensure_native_byte_order`: a swapped copy.
            self.heap
                .budget
                .charge_problem(nbytes as u64)
                .map_err(|p| p.at(file, base + pos as u64))?;
            let (d, b) = native_order(dtype, data[pos..end].to_vec())
                .map_err(|p| p.at(file, base + pos as u64))?;
            (d, Cow::Owned(b))
        };
        let arr = self
            .push_value(Value::Array(Box::new(value::NdArray {
                readonly: false,
                dtype,
                shape,
                fortran,
                data: ArrayData::Bytes(bytes),
            })))
            .map_err(|p| p.at(file, base + pos as u64))?;
        self.replace_top(arr);
        Ok(Some(end))
    }

    /// After BUILD on joblib < 0.10's `NDArrayWrapper` / `ZNDArrayWrapper`:
    /// the array `joblib.load` reads from the companion file the wrapper
    /// names, in the wrapper's place on the stack (the memo keeps the
    /// wrapper, as joblib's does). `NDArrayWrapper`: an `.npy` file, read as
    /// `np.load` reads it, numeric dtypes only. `ZNDArrayWrapper`: a z-file
    /// of the raw data, given to `_reconstruct(*init_args).__setstate__(state
    /// + (data,))`. Either comes back in the native byte order, as joblib's
    /// `_ensure_native_byte_order` makes it.
    fn joblib_companion(&mut self, file: &str, at: u64) -> Result<(), EvalError> {
        let Ok(top) = self.stack.top() else {
            return Ok(());
        };
        let (zipped, state) = match self.heap.arena.get(top) {
            Value::Object(o) => match self.heap.arena.get(o.class) {
                Value::Global(g) => match &**g {
                    Global::Foreign { module, name } => match old_wrapper(module, name) {
                        Some(z) => (z, o.state),
                        None => return Ok(()),
                    },
                    Global::Known(_) => return Ok(()),
                },
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        let Some(companions) = self.heap.ctx.companions else {
            return Ok(());
        };
        let fail = |p: Problem| p.at(file, at);
        let attrs = self.wrapper_attrs(state).map_err(fail)?;
        let get = |k: &str| {
            attrs.get(k).copied().ok_or_else(|| {
                fail(malformed(format!(
                    "a joblib array placeholder without `{k}`"
                )))
            })
        };
        let name = match self.heap.arena.get(get("filename")?) {
            Value::Str(s) => s
                .as_str()
                .ok_or_else(|| fail(malformed("a companion file name that is not UTF-8")))?
                .to_string(),
            other => {
                return Err(fail(malformed(format!(
                    "a companion file name that is {}",
                    other.describe()
                ))))
            }
        };
        let bytes = companions
            .read(&name, self.heap.budget.left())
            .map_err(|e| fail(unsupported(format!("joblib's companion array: {e}"))))?;
        self.heap
            .budget
            .charge_problem(bytes.len() as u64)
            .map_err(fail)?;
        let arr = if zipped {
            self.companion_z(get("init_args")?, get("state")?, &bytes, &name)
        } else {
            self.companion_npy(get("subclass")?, bytes, &name)
        }
        .map_err(fail)?;
        self.replace_top(arr);
        Ok(())
    }

    fn wrapper_attrs(&self, state: Option<Id>) -> Result<HashMap<String, Id>, Problem> {
        let Some(Value::Dict(d)) = state.map(|s| self.heap.arena.get(s)) else {
            return Err(malformed(
                "a joblib array placeholder whose state is not a dict",
            ));
        };
        let mut attrs = HashMap::new();
        for (k, v) in self.heap.arena.dict_items(&d.items) {
            let key = self.heap.arena.str_of(k).ok_or_else(|| {
                malformed("a joblib array placeholder attribute that is not a str")
            })?;
            attrs.insert(key.to_string(), v);
        }
        Ok(attrs)
    }

    fn companion_npy(&mut self, subclass: Id, bytes: Vec<u8>, name: &str) -> Result<Id, Problem> {
        if !matches!(self.heap.arena.get(subclass), Value::Global(g) if matches!(**g, Global::Known(Known::NpNdarray)))
        {
            return Err(unsupported(format!(
                "a joblib companion array of the subclass {} (only numpy.ndarray is read)",
                self.heap.arena.get(subclass).describe()
            )));
        }
        let (dtype, shape, fortran, offset) =
            super::numpy::npy_header_in(&bytes, 0, name).map_err(|e| unsupported(e.to_string()))?;
        if dtype.has_object() {
            return Err(unsupported(format!(
                "{name} is an object array: joblib.load unpickles it with np.load(allow_pickle=True)"
            )));
        }
        let n = super::numpy::array_nbytes(&shape, dtype.itemsize())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| malformed(format!("{name}: the array's size overflows")))?;
        let end = offset
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                malformed(format!(
                    "{name}: the array needs {n} bytes of data; the file ends first"
                ))
            })?;
        let mut data = bytes;
        data.truncate(end);
        data.drain(..offset);
        let (dtype, data) = native_order(dtype, data)?;
        self.push_value(Value::Array(Box::new(value::NdArray {
            readonly: false,
            dtype,
            shape,
            fortran,
            data: ArrayData::Bytes(Cow::Owned(data)),
        })))
    }

    fn companion_z(
        &mut self,
        init_args: Id,
        state: Id,
        bytes: &[u8],
        name: &str,
    ) -> Result<Id, Problem> {
        let data = crate::containers::compress::read_zfile(bytes, self.heap.budget.left())
            .map_err(|e| malformed(format!("{name}: {e}")))?;
        let arr = super::numpy::call(&mut self.heap, Known::NpReconstruct, init_args)?;
        let mut items = self
            .heap
            .arena
            .seq_of(state)
            .filter(|_| matches!(self.heap.arena.get(state), Value::Tuple(_)))
            .ok_or_else(|| malformed("a ZNDArrayWrapper state that is not a tuple"))?
            .to_vec();
        let d = self.push_value(Value::Bytes(Cow::Owned(data)))?;
        items.push(d);
        let full = self.push_value(Value::Tuple(items))?;
        super::numpy::array_setstate(&mut self.heap, arr, full)?;
        let Value::Array(a) = self.heap.arena.get(arr) else {
            return Err(malformed("a ZNDArrayWrapper that made no array"));
        };
        if a.dtype.has_object() {
            return Err(unsupported(format!("{name}: an object array in a z-file")));
        }
        if !a.dtype.native_order() {
            let a = (**a).clone();
            let bytes = match a.data {
                ArrayData::Bytes(b) => b.into_owned(),
                _ => return Err(malformed("a ZNDArrayWrapper array without data")),
            };
            let (dtype, data) = native_order(a.dtype, bytes)?;
            return self.push_value(Value::Array(Box::new(value::NdArray {
                readonly: false,
                dtype,
                shape: a.shape,
                fortran: a.fortran,
                data: ArrayData::Bytes(Cow::Owned(data)),
            })));
        }
        Ok(arr)
    }

    /// Arguments a standard-library class gets that keep its work bounded.
    fn check_inert_call(&self, module: &str, name: &str, args: Id) -> Result<(), Problem> {
        let items = self.heap.arena.seq_of(args).unwrap_or(&[]);
        let global = |id: Id| match self.heap.arena.get(id) {
            Value::Global(g) => match &**g {
                Global::Foreign { module, name } => Some((module.as_str(), name.as_str())),
                Global::Known(_) => None,
            },
            _ => None,
        };
        let refuse = |why: &str| Err(unsupported(format!("{module}.{name} {why}")));
        match (module, name) {
            ("numpy.random._pickle", "__bit_generator_ctor") => {
                // It calls a class it is given: only numpy's bit generators.
                let ok = items.len() <= 1
                    && items.iter().all(|&a| match self.heap.arena.get(a) {
                        Value::Str(_) => true,
                        _ => global(a).is_some_and(|(m, n)| crate::policy::is_bit_generator(m, n)),
                    });
                return if ok {
                    Ok(())
                } else {
                    refuse("called with other than a bit generator's name or class")
                };
            }
            ("numpy.random._pickle", "__randomstate_ctor" | "__generator_ctor") => {
                // (name or bit generator, ctor): the ctor is called with the
                // name, so it may only be numpy's own.
                let made_bit_generator = |a: Id| match self.heap.arena.get(a) {
                    Value::Str(_) => true,
                    Value::Object(o) => global(o.class).is_some_and(|(m, n)| {
                        crate::policy::is_bit_generator(m, n)
                            || (m, n) == ("numpy.random._pickle", "__bit_generator_ctor")
                    }),
                    _ => false,
                };
                let ok = items.len() <= 2
                    && items.first().is_none_or(|&a| made_bit_generator(a))
                    && items.get(1).is_none_or(|&c| {
                        global(c) == Some(("numpy.random._pickle", "__bit_generator_ctor"))
                    });
                return if ok {
                    Ok(())
                } else {
                    refuse("called with other than a bit generator and numpy's own constructor")
                };
            }
            ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING") => {
                // An Enum called with a value looks the member up; with more
                // arguments it would build a new enum class.
                let ok =
                    matches!(items, [v] if matches!(self.heap.arena.get(*v), Value::Int(0..=2)));
                return if ok {
                    Ok(())
                } else {
                    refuse("called with other than one of its values 0, 1 or 2")
                };
            }
            ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence") => {
                let ok = items.first().and_then(|&c| global(c))
                    == Some(("numpy.random.bit_generator", "SeedSequence"));
                return if ok {
                    Ok(())
                } else {
                    refuse("called for a class other than SeedSequence")
                };
            }
            _ => {}
        }
        if module != "fractions" || name != "Fraction" {
            return Ok(());
        }
        // Fraction("1e999999999") builds 10**999999999, and the gcd of two
        // huge ints is quadratic: ints of at most 4096 bits only.
        let bounded = items.len() <= 2
            && items.iter().all(|&i| match self.heap.arena.get(i) {
                Value::Int(_) | Value::Bool(_) => true,
                Value::BigInt(b) => b.len() <= 512,
                _ => false,
            });
        if bounded {
            Ok(())
        } else {
            Err(unsupported(
                "fractions.Fraction called with other than one or two ints of at most 4096 bits",
            ))
        }
    }

    /// `copyreg._reconstructor(cls, base, state)`.
    fn reconstructed(
        &mut self,
        class: Id,
        base: Option<Id>,
        state: Option<Id>,
    ) -> Result<Id, Problem> {
        if self.heap.ctx.mode == Mode::Strict {
            // The base's `__new__` and `__init__` run too: only `object`'s
            // (which run nothing) or a builtin container's are taken.
            let plain_base = base.is_some_and(|b| match self.heap.arena.get(b) {
                Value::Global(g) => match &**g {
                    Global::Foreign { module, name } => module == "builtins" && name == "object",
                    Global::Known(k) => matches!(
                        k.qualname().as_str(),
                        "builtins.dict" | "builtins.list" | "builtins.set" | "builtins.tuple"
                    ),
                },
                _ => false,
            });
            if !plain_base {
                return Err(unsupported(
                    "copyreg._reconstructor with a base other than object or a builtin container",
                ));
            }
        }
        self.object(class, Made::Reconstructor, state, None, base)
    }

    fn object(
        &mut self,
        class: Id,
        made: Made,
        args: Option<Id>,
        kwargs: Option<Id>,
        base: Option<Id>,
    ) -> Result<Id, Problem> {
        if self.heap.ctx.mode == Mode::Strict {
            // Only a class the caller trusts is ever rebuilt (by the caller):
            // not a computed callable, not a known data constructor, not a
            // copyreg helper called any other way than as a forwarder.
            let trusted = match self.heap.arena.get(class) {
                Value::Global(g) => match &**g {
                    Global::Foreign { module, name } => !super::Allowed::is_forwarder(module, name),
                    Global::Known(_) => false,
                },
                _ => false,
            };
            if !trusted {
                return Err(malformed(format!(
                    "an object made by {} in strict mode",
                    self.heap.arena.get(class).describe()
                )));
            }
        }
        if let Value::Global(g) = self.heap.arena.get(class) {
            if let Global::Foreign { module, name } = &**g {
                if crate::policy::is_inert_class(module, name) && made != Made::Reconstructor {
                    let kw_empty = kwargs.is_none_or(
                        |k| matches!(self.heap.arena.get(k), Value::Dict(d) if d.items.is_empty()),
                    );
                    if !kw_empty && module == "fractions" && name == "Fraction" {
                        return Err(unsupported("fractions.Fraction with keyword arguments"));
                    }
                    if let Some(a) = args {
                        self.check_inert_call(module, name, a)?;
                    }
                }
            }
        }
        self.push_value(Value::Object(Box::new(Object {
            class,
            made,
            args,
            kwargs,
            base,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        })))
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

/// joblib < 0.10's array placeholders: `Some(true)` for `ZNDArrayWrapper`.
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

fn old_wrapper(module: &str, name: &str) -> Option<bool> {
    match (module, name) {
        ("joblib.numpy_pickle" | "joblib.numpy_pickle_compat", "NDArrayWrapper") => Some(false),
        ("joblib.numpy_pickle" | "joblib.numpy_pickle_compat", "ZNDArrayWrapper") => Some(true),
        _ => None,
    }
}

/// An array's dtype and bytes in the machine's byte order, as joblib's
/// `_ensure_native_byte_order` leaves them: a big-endian scalar dtype is
/// swapped (complex numbers per part, as `ndarray.byteswap` does). A
/// structured dtype with big-endian fields is refused: joblib swaps it only
/// when every field is big-endian, a rule not worth a second reading here.
pub(crate) fn native_order(
    dtype: value::NpDtype,
    mut data: Vec<u8>,
) -> Result<(value::NpDtype, Vec<u8>), Problem> {
    if dtype.native_order() {
        return Ok((dtype, data));
    }
    match dtype {
        value::NpDtype::Scalar {
            kind,
            itemsize,
            unit,
            ..
        } => {
            let part = match kind {
                b'c' => itemsize / 2,
                b'U' => 4,
                _ => itemsize,
            } as usize;
            byteswap(&mut data, part);
            Ok((
                value::NpDtype::Scalar {
                    kind,
                    itemsize,
                    order: value::ByteOrder::Little,
                    unit,
                },
                data,
            ))
        }
        _ => Err(unsupported(
            "a joblib array of a structured dtype with big-endian fields",
        )),
    }
}

#[cfg(test)]
mod tests;
