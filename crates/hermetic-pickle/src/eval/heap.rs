//! What every call the evaluator makes works on: the value arena, the
//! budget and the evaluation's settings. The machine (stack, marks, memo)
//! sits above it; the call tables (`calls`, `numpy`, `torch`) see only this,
//! so they cannot reach into the stack.

use super::error::{malformed, unsupported, Budget, Problem};
use super::value::{Arena, Id, Known, Value};
use super::Mode;
use crate::Limits;
use std::collections::HashSet;

/// How Python 2 `str` opcodes (STRING, BINSTRING, SHORT_BINSTRING) decode:
/// the unpickler's `encoding=` (`pickle.load` defaults to ASCII, `torch.load`
/// to UTF-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Py2Str {
    Ascii,
    Utf8,
    Latin1,
    /// `encoding="bytes"`: each such str loads as `bytes`.
    Bytes,
}

impl Py2Str {
    /// The encodings `pickle.load(encoding=...)` takes that hermetic reads,
    /// by any of the names Python's codec registry knows them by.
    pub fn from_name(name: &str) -> Option<Py2Str> {
        let n = name.to_ascii_lowercase().replace(['-', ' '], "_");
        Some(match n.as_str() {
            "ascii" | "us_ascii" | "646" => Py2Str::Ascii,
            "utf_8" | "utf8" | "u8" | "utf" => Py2Str::Utf8,
            "latin1" | "latin_1" | "iso_8859_1" | "iso8859_1" | "8859" | "cp819" | "l1"
            | "latin" => Py2Str::Latin1,
            "bytes" => Py2Str::Bytes,
            _ => return None,
        })
    }
}

/// What a stream is evaluated with.
pub(crate) struct Ctx<'c> {
    pub mode: Mode,
    pub py2_str: Py2Str,
    pub limits: &'c Limits,
    /// Apply `torch.load`'s renames (`torch.tensor` -> `torch._tensor`, any
    /// `*Storage` name -> a storage type).
    pub torch_names: bool,
    /// Foreign globals the caller trusts in strict mode.
    pub allowed: &'c super::Allowed,
    /// The stream is a joblib dump (as the scanner recognises one): a
    /// `NumpyArrayWrapper`'s array bytes follow its BUILD.
    pub joblib: bool,
    /// Where joblib < 0.10 dumps keep their arrays, if the caller knows.
    pub companions: Option<&'c super::Companions>,
}

/// Resolves persistent ids (`BINPERSID`/`PERSID`) for the container.
pub(crate) trait Persist<'a> {
    fn load(&mut self, arena: &mut Arena<'a>, budget: &mut Budget, pid: Id) -> Result<Id, Problem>;
}

/// For streams with no persistent ids (plain pickles).
pub(crate) struct NoPersist;

impl<'a> Persist<'a> for NoPersist {
    fn load(&mut self, _: &mut Arena<'a>, _: &mut Budget, _: Id) -> Result<Id, Problem> {
        Err(unsupported(
            "a persistent id: this is not a torch checkpoint, and plain pickle.load refuses persistent ids too",
        ))
    }
}

pub(crate) struct Heap<'a, 'm> {
    pub arena: &'m mut Arena<'a>,
    pub budget: &'m mut Budget,
    pub ctx: &'m Ctx<'m>,
    /// numpy dtypes that are numpy's shared builtin descriptors
    /// (`numpy.dtype("f4", False, False)`): BUILD on one changes nothing.
    pub np_singletons: HashSet<Id>,
}

impl<'a> Heap<'a, '_> {
    pub(crate) fn push_value(&mut self, v: Value<'a>) -> Result<Id, Problem> {
        self.arena.push(v, self.budget).map_err(Problem::Limit)
    }
}

/// The arguments of a call, with its arity checked.
pub(crate) fn args(
    m: &Heap<'_, '_>,
    k: Known,
    args: Id,
    min: usize,
    max: usize,
) -> Result<Vec<Id>, Problem> {
    let a = m.arena.seq_of(args).unwrap_or(&[]).to_vec();
    if a.len() < min || a.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(malformed(format!(
            "{} takes {want} arguments, got {}",
            k.qualname(),
            a.len()
        )));
    }
    Ok(a)
}

/// A number as an `f64` (ints, bools and floats).
pub(crate) fn number(m: &Heap<'_, '_>, id: Id, what: &str) -> Result<f64, Problem> {
    match m.arena.get(id) {
        Value::Int(i) => Ok(*i as f64),
        Value::Bool(b) => Ok(*b as i64 as f64),
        Value::Float(f) => Ok(*f),
        other => Err(unsupported(format!("{what} of {}", other.describe()))),
    }
}

pub(crate) fn int_arg(m: &Heap<'_, '_>, id: Id, what: &str) -> Result<i64, Problem> {
    m.arena.int_of(id).ok_or_else(|| match m.arena.get(id) {
        Value::BigInt(_) => unsupported(format!("{what} is an int beyond 64 bits")),
        other => malformed(format!("{what} is {}, not an int", other.describe())),
    })
}

pub(crate) fn str_arg<'m>(m: &'m Heap<'_, '_>, id: Id, what: &str) -> Result<&'m str, Problem> {
    match m.arena.get(id) {
        Value::Str(s) => s
            .as_str()
            .ok_or_else(|| malformed(format!("{what} holds a lone surrogate"))),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .filter(|s| s.is_ascii())
            .ok_or_else(|| malformed(format!("{what} is bytes that are not ASCII"))),
        other => Err(malformed(format!(
            "{what} is {}, not a str",
            other.describe()
        ))),
    }
}

/// Whether a state value is "nothing to set" (None or an empty dict).
pub(crate) fn empty_state(m: &Heap<'_, '_>, state: Id) -> bool {
    match m.arena.get(state) {
        Value::None => true,
        Value::Dict(d) => d.items.is_empty(),
        Value::Tuple(t) => t.iter().all(|&s| empty_state(m, s)),
        _ => false,
    }
}

/// Checks that attribute state is a dict of plain str names, or a
/// `(dict, slots dict)` pair, as `_set_obj_state` and BUILD accept.
pub(crate) fn check_attr_state(m: &Heap<'_, '_>, state: Id) -> Result<(), Problem> {
    let dicts: Vec<Id> = match m.arena.get(state) {
        Value::None => return Ok(()),
        Value::Dict(_) => vec![state],
        Value::Tuple(t) if t.len() == 2 => t.clone(),
        other => {
            return Err(malformed(format!(
                "object state is {}, not a dict or a (dict, slots) pair",
                other.describe()
            )))
        }
    };
    for d in dicts {
        match m.arena.get(d) {
            Value::None => {}
            Value::Dict(dd) => {
                for &(k, _) in &dd.items {
                    let name = m.arena.str_of(k).ok_or_else(|| {
                        malformed("an attribute name in object state is not a str")
                    })?;
                    if name.starts_with("__") && name.ends_with("__") {
                        return Err(unsupported(format!(
                            "setting the dunder attribute {name:?} from object state"
                        )));
                    }
                }
            }
            other => {
                return Err(malformed(format!(
                    "object state holds {}, not a dict",
                    other.describe()
                )))
            }
        }
    }
    Ok(())
}

/// Fails as the unpickler does when a dict key or set item cannot be
/// hashed (`TypeError: unhashable type`), where Rust can be sure; a slice,
/// hashable from Python 3.12 only, is refused either way.
pub(crate) fn check_hashable(
    m: &Heap<'_, '_>,
    keys: impl IntoIterator<Item = Id>,
) -> Result<(), Problem> {
    for k in keys {
        match m.arena.unhashable(k) {
            Ok(None) => {}
            Ok(Some(t)) => {
                let what = "as a dict key or set item (the unpickler raises TypeError)";
                return Err(malformed(format!("unhashable type: '{t}' {what}")));
            }
            Err(t) => {
                return Err(unsupported(format!(
                    "a {t} as a dict key or set item (hashable from Python 3.12 only)"
                )))
            }
        }
    }
    Ok(())
}
