//! A disassembler whose text is, byte for byte, what CPython 3.11's
//! `pickletools.dis(data)` prints with its default arguments
//! (`indentlevel=4`, `annotate=0`).
//!
//! It reads its arguments the way `pickletools` does (its `read_*`
//! functions), not the way the unpickler or [`crate::parser::Parser`] does:
//! the two disagree at the edges (for example `pickletools` accepts the
//! one-character `STRING` argument `'` and escape-decodes the `GLOBAL`
//! lines). It also replays the bookkeeping `pickletools.dis` does between
//! opcodes: the MARK stack behind the indentation and the `(MARK at N)`
//! notes, the memo behind `(as N)` and the memo checks, and the stack of
//! object kinds whose underflow or leftovers make `pickletools` raise.
//!
//! Offsets in the text are relative to `start`, so `disassemble(data, s)`
//! prints exactly what `pickletools.dis(data[s:])` prints. When
//! `pickletools` would raise, [`DisError`] carries what it printed before
//! raising and its exception's message.
//!
//! Nothing here panics on hostile input, and the text is bounded (see
//! [`DEFAULT_MAX_TEXT`]): `pickletools`' indentation makes its output
//! quadratic in the nesting of MARKs, and this is the one place the
//! disassembler knowingly stops where `pickletools` would go on.

mod decode;
mod reader;
mod repr;
#[cfg(test)]
mod tests;

use decode::*;
use reader::*;
use repr::*;

use crate::opcodes::{ArgKind, Opcode};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The most text [`disassemble`] produces before giving up with a
/// [`DisError`] whose `exception` is `"LimitExceeded"`.
pub const DEFAULT_MAX_TEXT: usize = 256 << 20;

/// CPython's default `sys.get_int_max_str_digits()`.
const MAX_STR_DIGITS: usize = 4300;

/// The disassembly of one pickle stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disassembly {
    /// Exactly what `pickletools.dis` prints, through the
    /// `highest protocol among opcodes = N` line.
    pub text: String,
    /// Offset in the input just past `STOP` (where a following stream starts).
    pub end: usize,
}

/// Where `pickletools.dis` would raise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{exception}: {message}")]
pub struct DisError {
    /// Offset in the input of the opcode being disassembled (the input's
    /// length when it ran out before `STOP`; `STOP`'s offset when the stack
    /// was not empty after it).
    pub offset: usize,
    /// The Python exception class `pickletools` raises: `ValueError`,
    /// `UnicodeDecodeError` (a `ValueError`), or `IndexError` (pickletools'
    /// own bug when a MARK was consumed as an ordinary stack item). The one
    /// hermetic-only value, `LimitExceeded`, means the text outgrew the limit.
    pub exception: &'static str,
    /// The exception's message (`str(exc)`), as CPython words it. Like
    /// CPython's, it can quote bytes of the input (an unparsable decimal, a
    /// badly quoted STRING); reports that must not echo payload bytes should
    /// use `exception` and `offset` instead.
    pub message: String,
    /// What `pickletools.dis` printed before raising. It can end in the
    /// `"%5d: "` position of the opcode at fault, without a newline, when
    /// the error came while formatting that opcode's line.
    pub partial_text: String,
}

/// Disassembles the pickle stream that starts at `start`, through its STOP.
pub fn disassemble(data: &[u8], start: usize) -> Result<Disassembly, DisError> {
    disassemble_with_limit(data, start, DEFAULT_MAX_TEXT)
}

/// [`disassemble`] with an explicit bound on the bytes of text produced.
pub fn disassemble_with_limit(
    data: &[u8],
    start: usize,
    max_text: usize,
) -> Result<Disassembly, DisError> {
    Machine::new(data, start, max_text).run()
}

/// The kinds of objects `pickletools` tracks on its stack (its
/// `StackObject`s); the names are what it prints for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Obj {
    IntOrBool,
    Int,
    BytesOrStr,
    Bytes,
    ByteArray,
    Buffer,
    PyNone,
    Bool,
    Str,
    Float,
    List,
    Any,
    Tuple,
    Dict,
    Set,
    FrozenSet,
    Mark,
    StackSlice,
}

impl Obj {
    fn name(self) -> &'static str {
        match self {
            Obj::IntOrBool => "int_or_bool",
            Obj::Int => "int",
            Obj::BytesOrStr => "bytes_or_str",
            Obj::Bytes => "bytes",
            Obj::ByteArray => "bytearray",
            Obj::Buffer => "buffer",
            Obj::PyNone => "None",
            Obj::Bool => "bool",
            Obj::Str => "str",
            Obj::Float => "float",
            Obj::List => "list",
            Obj::Any => "any",
            Obj::Tuple => "tuple",
            Obj::Dict => "dict",
            Obj::Set => "set",
            Obj::FrozenSet => "frozenset",
            Obj::Mark => "mark",
            Obj::StackSlice => "stackslice",
        }
    }
}

/// `stack_before` and `stack_after` of each opcode, as pickletools
/// documents them. The match is exhaustive, so a new opcode in the table
/// cannot be forgotten here.
fn stack_effect(op: Opcode) -> (&'static [Obj], &'static [Obj]) {
    use Obj::*;
    use Opcode as O;
    match op {
        O::INT => (&[], &[IntOrBool]),
        O::BININT | O::BININT1 | O::BININT2 | O::LONG | O::LONG1 | O::LONG4 => (&[], &[Int]),
        O::STRING | O::BINSTRING | O::SHORT_BINSTRING => (&[], &[BytesOrStr]),
        O::BINBYTES | O::SHORT_BINBYTES | O::BINBYTES8 => (&[], &[Bytes]),
        O::BYTEARRAY8 => (&[], &[ByteArray]),
        O::NEXT_BUFFER => (&[], &[Buffer]),
        O::READONLY_BUFFER => (&[Buffer], &[Buffer]),
        O::NONE => (&[], &[PyNone]),
        O::NEWTRUE | O::NEWFALSE => (&[], &[Bool]),
        O::UNICODE | O::SHORT_BINUNICODE | O::BINUNICODE | O::BINUNICODE8 => (&[], &[Str]),
        O::FLOAT | O::BINFLOAT => (&[], &[Float]),
        O::EMPTY_LIST => (&[], &[List]),
        O::APPEND => (&[List, Any], &[List]),
        O::APPENDS => (&[List, Mark, StackSlice], &[List]),
        O::LIST => (&[Mark, StackSlice], &[List]),
        O::EMPTY_TUPLE => (&[], &[Tuple]),
        O::TUPLE => (&[Mark, StackSlice], &[Tuple]),
        O::TUPLE1 => (&[Any], &[Tuple]),
        O::TUPLE2 => (&[Any, Any], &[Tuple]),
        O::TUPLE3 => (&[Any, Any, Any], &[Tuple]),
        O::EMPTY_DICT => (&[], &[Dict]),
        O::DICT => (&[Mark, StackSlice], &[Dict]),
        O::SETITEM => (&[Dict, Any, Any], &[Dict]),
        O::SETITEMS => (&[Dict, Mark, StackSlice], &[Dict]),
        O::EMPTY_SET => (&[], &[Set]),
        O::ADDITEMS => (&[Set, Mark, StackSlice], &[Set]),
        O::FROZENSET => (&[Mark, StackSlice], &[FrozenSet]),
        O::POP => (&[Any], &[]),
        O::DUP => (&[Any], &[Any, Any]),
        O::MARK => (&[], &[Mark]),
        O::POP_MARK => (&[Mark, StackSlice], &[]),
        O::GET | O::BINGET | O::LONG_BINGET => (&[], &[Any]),
        O::PUT | O::BINPUT | O::LONG_BINPUT => (&[], &[]),
        O::MEMOIZE => (&[Any], &[Any]),
        O::EXT1 | O::EXT2 | O::EXT4 => (&[], &[Any]),
        O::GLOBAL => (&[], &[Any]),
        O::STACK_GLOBAL => (&[Str, Str], &[Any]),
        O::REDUCE | O::BUILD | O::NEWOBJ => (&[Any, Any], &[Any]),
        O::INST => (&[Mark, StackSlice], &[Any]),
        O::OBJ => (&[Mark, Any, StackSlice], &[Any]),
        O::NEWOBJ_EX => (&[Any, Any, Any], &[Any]),
        O::PROTO | O::FRAME => (&[], &[]),
        O::STOP => (&[Any], &[]),
        O::PERSID => (&[], &[Any]),
        O::BINPERSID => (&[Any], &[Any]),
    }
}

/// The state `pickletools.dis` keeps between opcodes.
struct Machine<'a> {
    data: &'a [u8],
    /// Where the stream starts; printed positions are relative to it.
    base: usize,
    max_text: usize,
    out: String,
    stack: Vec<Obj>,
    /// Relative positions of the MARKs not yet closed.
    markstack: Vec<usize>,
    memo: HashMap<MemoKey, Obj>,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], start: usize, max_text: usize) -> Self {
        Machine {
            data,
            base: start.min(data.len()),
            max_text,
            out: String::new(),
            stack: Vec::new(),
            markstack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn fail(&mut self, offset: usize, (exception, message): Raise) -> DisError {
        DisError {
            offset,
            exception,
            message,
            partial_text: std::mem::take(&mut self.out),
        }
    }

    /// Room for `extra` more bytes of text, or the limit error.
    fn room(&mut self, offset: usize, extra: usize) -> Result<(), DisError> {
        if self.out.len().saturating_add(extra) > self.max_text {
            return Err(self.fail(offset, limit_error(self.max_text)));
        }
        Ok(())
    }

    fn run(mut self) -> Result<Disassembly, DisError> {
        let mut reader = Reader {
            data: self.data,
            pos: self.base,
            max_text: self.max_text,
        };
        let mut maxproto = 0u8;
        loop {
            let at = reader.pos;
            let rel = at - self.base;
            let Some(&code) = self.data.get(at) else {
                return Err(self.fail(at, value_error("pickle exhausted before seeing STOP")));
            };
            let Some(op) = Opcode::from_byte(code) else {
                let code = bytes_repr_full(&[code]);
                let message = format!("at position {rel}, opcode {code} unknown");
                return Err(self.fail(at, value_error(message)));
            };
            reader.pos += 1;
            let arg = match reader.arg(op) {
                Ok(arg) => arg,
                Err(raise) => return Err(self.fail(at, raise)),
            };
            self.step(at, rel, op, arg.as_ref())?;
            maxproto = maxproto.max(op.protocol());
            if op == Opcode::STOP {
                break;
            }
        }
        let last = format!("highest protocol among opcodes = {maxproto}\n");
        let stop_at = reader.pos - 1;
        self.room(stop_at, last.len())?;
        self.out.push_str(&last);
        if !self.stack.is_empty() {
            let names: Vec<&str> = self.stack.iter().map(|o| o.name()).collect();
            let message = format!("stack not empty after STOP: [{}]", names.join(", "));
            return Err(self.fail(stop_at, value_error(message)));
        }
        Ok(Disassembly {
            text: self.out,
            end: reader.pos,
        })
    }

    /// One iteration of the loop in `pickletools.dis`.
    fn step(
        &mut self,
        at: usize,
        rel: usize,
        op: Opcode,
        arg: Option<&Val<'_>>,
    ) -> Result<(), DisError> {
        let prefix = format!("{rel:5}: ");
        self.room(at, prefix.len())?;
        self.out.push_str(&prefix);

        let depth = self.markstack.len();
        let (before, after) = stack_effect(op);
        let mut after: Cow<'static, [Obj]> = Cow::Borrowed(after);
        let mut numtopop = before.len();
        let mut markmsg: Option<String> = None;
        let mut errormsg: Option<String> = None;

        let pops_mark = before.contains(&Obj::Mark)
            || (op == Opcode::POP && self.stack.last() == Some(&Obj::Mark));
        if pops_mark {
            if let Some(markpos) = self.markstack.pop() {
                markmsg = Some(format!("(MARK at {markpos})"));
                // `while stack[-1] is not markobject: stack.pop()`, which
                // raises IndexError when a MARK was already consumed as an
                // ordinary item.
                loop {
                    match self.stack.pop() {
                        Some(Obj::Mark) => break,
                        Some(_) => {}
                        None => {
                            return Err(
                                self.fail(at, ("IndexError", "list index out of range".into()))
                            )
                        }
                    }
                }
                numtopop = before.iter().position(|o| *o == Obj::Mark).unwrap_or(0);
            } else {
                let msg = "no MARK exists on stack".to_owned();
                markmsg = Some(msg.clone());
                errormsg = Some(msg);
            }
        }

        match op {
            Opcode::PUT | Opcode::BINPUT | Opcode::LONG_BINPUT | Opcode::MEMOIZE => {
                let key = if op == Opcode::MEMOIZE {
                    let idx = self.memo.len();
                    markmsg = Some(format!("(as {idx})"));
                    Some(MemoKey::Small(idx as i128))
                } else {
                    arg.and_then(Val::memo_key)
                };
                if let Some(key) = key {
                    if self.memo.contains_key(&key) {
                        let shown = match arg {
                            Some(v) => v.short_repr(),
                            None => "None".to_owned(),
                        };
                        errormsg = Some(format!("memo key {shown} already defined"));
                    } else {
                        match self.stack.last() {
                            None => {
                                errormsg = Some("stack is empty -- can't store into memo".into())
                            }
                            Some(Obj::Mark) => {
                                errormsg = Some("can't store markobject in the memo".into())
                            }
                            Some(&top) => {
                                self.memo.insert(key, top);
                            }
                        }
                    }
                }
            }
            Opcode::GET | Opcode::BINGET | Opcode::LONG_BINGET => {
                match arg.and_then(Val::memo_key).and_then(|k| self.memo.get(&k)) {
                    Some(&obj) => after = Cow::Owned(vec![obj]),
                    None => {
                        let shown = arg.map(Val::short_repr).unwrap_or_default();
                        errormsg = Some(format!("memo key {shown} has never been stored into"));
                    }
                }
            }
            _ => {}
        }

        // '%-4s %s%s' % (repr(opcode.code)[1:-1], indentchunk * len(markstack), opcode.name)
        let code = str_repr(&Text::Latin1(Cow::Borrowed(&[op.byte()])), usize::MAX);
        let code = code.unwrap_or_default();
        let code = code.get(1..code.len() - 1).unwrap_or_default();
        let indent = depth.saturating_mul(4);
        self.room(at, indent.saturating_add(32))?;
        let mut line = String::with_capacity(indent + 32);
        let _ = write!(line, "{code:<4} ");
        line.extend(std::iter::repeat_n(' ', indent));
        line.push_str(op.name());
        if arg.is_some() || markmsg.is_some() {
            let pad = 10usize.saturating_sub(op.name().len());
            line.extend(std::iter::repeat_n(' ', pad));
            if let Some(v) = arg {
                let cap = self.max_text.saturating_sub(self.out.len() + line.len());
                let shown = match v.repr(cap) {
                    Ok(Some(s)) => s,
                    Ok(None) => return Err(self.fail(at, limit_error(self.max_text))),
                    Err(message) => return Err(self.fail(at, value_error(message))),
                };
                line.push(' ');
                line.push_str(&shown);
            }
            if let Some(m) = &markmsg {
                line.push(' ');
                line.push_str(m);
            }
        }
        line.push('\n');
        self.room(at, line.len())?;
        self.out.push_str(&line);

        if let Some(msg) = errormsg {
            return Err(self.fail(at, value_error(msg)));
        }
        if self.stack.len() < numtopop {
            let message = format!(
                "tries to pop {numtopop} items from stack with only {} items",
                self.stack.len()
            );
            return Err(self.fail(at, value_error(message)));
        }
        self.stack.truncate(self.stack.len() - numtopop);
        if after.contains(&Obj::Mark) {
            self.markstack.push(rel);
        }
        self.stack.extend_from_slice(&after);
        Ok(())
    }
}
