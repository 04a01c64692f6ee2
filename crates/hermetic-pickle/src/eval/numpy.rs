//! numpy: `dtype` and its `__setstate__`, `_reconstruct` and ndarray
//! `__setstate__`, `_frombuffer`, `scalar`, and `.npy` header dtypes.

use super::error::{malformed, unsupported, EvalError, Problem};
use super::heap::{args, int_arg, str_arg, Heap};
use super::value::{
    ArrayData, ByteOrder, Global, Id, Known, NdArray, NpDtype, NpField, NpScalar, Value,
    MAX_DTYPE_DEPTH, NONE,
};
use crate::containers::npy::{self, ObjectDtype};
use crate::containers::pyliteral::PyValue;
use std::borrow::Cow;
use std::collections::HashMap;

/// The most dimensions an array may have (numpy's `NPY_MAXDIMS`).
pub const MAX_NDIM: usize = 64;
/// The largest element numpy dtypes here may have.
const MAX_ITEMSIZE: u64 = 1 << 31;

/// Parses a numpy type string as `numpy.dtype(str)` reads it (numpy 2 on a
/// little-endian 64-bit machine): an optional byte order, then either a
/// one-letter type code (`f`, `d`, `?`, `b`, `S`, ...) or a kind with a size
/// (`<f8`, `|b1`, `S5`, `<U3`, `<M8[ns]`, `O8`). `U` sizes count characters.
/// `S`, `U` and `V` without a size are the size-0 flexible types a state's
/// element size resizes. Spellings numpy refuses (`f12`, `c24`, `b2`, `i0`)
/// are refused; a few it takes (type names such as `float32`, `T`) are not
/// read here and so are refused too.
pub fn parse_typestr(s: &str) -> Option<NpDtype> {
    if !s.is_ascii() || s.len() > 64 {
        return None;
    }
    let (order, rest) = match s.as_bytes().first()? {
        b'<' | b'=' | b'|' => (ByteOrder::Little, &s[1..]),
        b'>' => (ByteOrder::Big, &s[1..]),
        _ => (ByteOrder::Little, s),
    };
    let code = *rest.as_bytes().first()?;
    let body = &rest[1..];
    let (size_text, unit) = match body.find('[') {
        Some(i) if body.ends_with(']') => (&body[..i], Some(&body[i + 1..body.len() - 1])),
        Some(_) => return None,
        None => (body, None),
    };
    let (kind, itemsize) = if size_text.is_empty() {
        // A one-letter type code (numpy's char codes).
        match code {
            b'?' => (b'b', 1),
            b'b' => (b'i', 1),
            b'B' => (b'u', 1),
            b'h' => (b'i', 2),
            b'H' => (b'u', 2),
            b'i' => (b'i', 4),
            b'I' => (b'u', 4),
            // 'q' and 'Q' are numpy's longlong types, distinct scalar types
            // of the same size as int64/uint64: not built here.
            b'l' | b'p' | b'n' => (b'i', 8),
            b'L' | b'P' | b'N' => (b'u', 8),
            b'e' => (b'f', 2),
            b'f' => (b'f', 4),
            b'd' => (b'f', 8),
            b'g' => (b'f', 16),
            b'F' => (b'c', 8),
            b'D' => (b'c', 16),
            b'G' => (b'c', 32),
            b'S' | b'a' => (b'S', 0),
            b'c' => (b'S', 1),
            b'U' => (b'U', 0),
            b'V' => (b'V', 0),
            b'O' => (b'O', 8),
            b'M' | b'm' => (code, 8),
            _ => return None,
        }
    } else {
        if !size_text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = size_text.parse().ok()?;
        let kind = if code == b'a' { b'S' } else { code };
        let itemsize = match (kind, n) {
            (b'b', 1) => 1,
            (b'i' | b'u', 1 | 2 | 4 | 8) => n,
            (b'f', 2 | 4 | 8 | 16) => n,
            (b'c', 8 | 16 | 32) => n,
            (b'S' | b'V', 0..=MAX_ITEMSIZE) => n,
            (b'U', _) if n <= MAX_ITEMSIZE / 4 => 4 * n,
            (b'O', 4 | 8) => 8,
            (b'M' | b'm', 8) => 8,
            _ => return None,
        };
        (kind, itemsize)
    };
    if unit.is_some() && !matches!(kind, b'M' | b'm') {
        return None;
    }
    let unit = match unit {
        None if matches!(kind, b'M' | b'm') => Some(("generic".to_string(), 1)),
        None => None,
        Some(u) => Some(parse_unit(u)?),
    };
    let order = if (itemsize <= 1 && kind != b'U') || matches!(kind, b'S' | b'V' | b'O' | b'b') {
        ByteOrder::NotApplicable
    } else {
        order
    };
    Some(NpDtype::Scalar {
        kind,
        itemsize,
        order,
        unit,
    })
}

const UNITS: &[&str] = &[
    "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as", "generic",
];

/// `2s` -> ("s", 2).
fn parse_unit(u: &str) -> Option<(String, i64)> {
    let split = u.find(|c: char| !c.is_ascii_digit()).unwrap_or(u.len());
    let (num, name) = u.split_at(split);
    let num = if num.is_empty() { 1 } else { num.parse().ok()? };
    if !UNITS.contains(&name) || num < 1 {
        return None;
    }
    Some((name.to_string(), num))
}

/// A `.npy` header `descr` (what `numpy.lib.format.descr_to_dtype` reads).
pub fn descr_to_dtype(d: &PyValue, depth: usize) -> Result<NpDtype, String> {
    if depth > MAX_DTYPE_DEPTH {
        return Err("the dtype nests too deeply".into());
    }
    match d {
        PyValue::Str(s) => {
            parse_typestr(s).ok_or_else(|| format!("{s:?} is not a numpy type string"))
        }
        PyValue::Tuple(t) if t.len() == 2 => {
            let base = descr_to_dtype(&t[0], depth + 1)?;
            let shape = literal_shape(&t[1])?;
            Ok(NpDtype::SubArray {
                base: Box::new(base),
                shape,
            })
        }
        PyValue::List(fields) => {
            let mut out = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut offset: u64 = 0;
            for f in fields {
                let (PyValue::Tuple(parts) | PyValue::List(parts)) = f else {
                    return Err("a record field is not a tuple".into());
                };
                if parts.len() != 2 && parts.len() != 3 {
                    return Err("a record field is not (name, dtype[, shape])".into());
                }
                let (name, title) = match &parts[0] {
                    PyValue::Str(n) => (n.clone(), None),
                    PyValue::Tuple(nt) if nt.len() == 2 => match (&nt[0], &nt[1]) {
                        (PyValue::Str(t), PyValue::Str(n)) => (n.clone(), Some(t.clone())),
                        _ => return Err("a record field's (title, name) is not two str".into()),
                    },
                    _ => return Err("a record field's name is not a str".into()),
                };
                let mut dt = descr_to_dtype(&parts[1], depth + 1)?;
                if let Some(shape) = parts.get(2) {
                    dt = NpDtype::SubArray {
                        base: Box::new(dt),
                        shape: literal_shape(shape)?,
                    };
                }
                let size = dt.itemsize();
                let padding = name.is_empty() && matches!(dt, NpDtype::Scalar { kind: b'V', .. });
                if !padding {
                    // A set, not a scan of `out`: a header of 40,000 fields
                    // took seconds with one.
                    if !seen.insert(name.clone()) {
                        return Err(format!("the record field {name:?} appears twice"));
                    }
                    out.push(NpField {
                        name,
                        dtype: dt,
                        offset,
                        title,
                    });
                }
                offset = offset
                    .checked_add(size)
                    .filter(|&o| o <= MAX_ITEMSIZE)
                    .ok_or("the record is too large")?;
            }
            Ok(NpDtype::Record {
                fields: out,
                itemsize: offset,
                aligned: false,
            })
        }
        _ => Err("the descr is not a numpy dtype description".into()),
    }
}

fn literal_shape(v: &PyValue) -> Result<Vec<u64>, String> {
    let items: Vec<&PyValue> = match v {
        PyValue::Tuple(t) => t.iter().collect(),
        PyValue::Int(_) => vec![v],
        _ => return Err("a shape is not a tuple of ints".into()),
    };
    if items.len() > MAX_NDIM {
        return Err("a shape has too many dimensions".into());
    }
    items
        .into_iter()
        .map(|d| match d {
            PyValue::Int(Some(n)) if *n >= 0 => Ok(*n as u64),
            _ => Err("a shape holds something other than a non-negative int".to_string()),
        })
        .collect()
}

/// Bytes `shape` elements of `itemsize` take, checked.
pub fn array_nbytes(shape: &[u64], itemsize: u64) -> Option<u64> {
    shape.iter().try_fold(itemsize, |a, &d| a.checked_mul(d))
}

/// The dimension nodes of a shape argument (a tuple, a list or one int),
/// at most [`MAX_NDIM`] of them.
fn shape_items(m: &Heap<'_, '_>, id: Id) -> Result<Vec<Id>, Problem> {
    let items: Vec<Id> = match m.arena.get(id) {
        Value::Tuple(v) | Value::List(v) => v.clone(),
        Value::Int(_) => vec![id],
        other => {
            return Err(malformed(format!(
                "an array shape is {}, not a tuple",
                other.describe()
            )))
        }
    };
    if items.len() > MAX_NDIM {
        return Err(Problem::Limit(format!(
            "an array with more than {MAX_NDIM} dimensions"
        )));
    }
    Ok(items)
}

fn shape_arg(m: &mut Heap<'_, '_>, id: Id) -> Result<Vec<u64>, Problem> {
    let items = shape_items(m, id)?;
    m.budget.charge_problem(8 * items.len() as u64)?;
    items
        .iter()
        .map(|&i| {
            // PyArray_IntpConverter refuses bools ("an integer is required").
            if matches!(m.arena.get(i), Value::Bool(_)) {
                return Err(malformed("an array dimension is a bool, not an int"));
            }
            let d = int_arg(m, i, "an array dimension")?;
            u64::try_from(d).map_err(|_| malformed(format!("a negative array dimension {d}")))
        })
        .collect()
}

fn dtype_of(m: &Heap<'_, '_>, id: Id) -> Result<NpDtype, Problem> {
    match m.arena.get(id) {
        Value::NpDtype(d) => Ok((**d).clone()),
        other => Err(malformed(format!(
            "{} where a numpy dtype belongs",
            other.describe()
        ))),
    }
}

/// Raw bytes from bytes, a bytearray, or a str numpy encodes as latin-1.
fn raw_bytes<'a>(m: &mut Heap<'a, '_>, id: Id, what: &str) -> Result<Cow<'a, [u8]>, Problem> {
    match m.arena.get(id) {
        Value::Bytes(b) | Value::ByteArray(b) => Ok(b.clone()),
        Value::Str(s) => {
            let text = s
                .as_str()
                .ok_or_else(|| malformed(format!("{what} is a str with a lone surrogate")))?;
            let out: Vec<u8> = text
                .chars()
                .map(|c| u8::try_from(u32::from(c)))
                .collect::<Result<_, _>>()
                .map_err(|_| malformed(format!("{what} is a str that is not latin-1")))?;
            m.budget.charge_problem(out.len() as u64)?;
            Ok(Cow::Owned(out))
        }
        other => Err(malformed(format!(
            "{what} is {}, not bytes",
            other.describe()
        ))),
    }
}

/// `numpy.dtype`, `_reconstruct`, `scalar`, `_frombuffer`.
pub(crate) fn call<'a>(m: &mut Heap<'a, '_>, k: Known, args_id: Id) -> Result<Id, Problem> {
    match k {
        Known::NpDtype => {
            let a = args(m, k, args_id, 1, 3)?;
            // numpy.dtype(a_dtype, ...) is a copy of it.
            if let Value::NpDtype(d) = m.arena.get(a[0]) {
                let d = d.clone();
                return m.push_value(Value::NpDtype(d));
            }
            let text = str_arg(m, a[0], "numpy.dtype's type")?;
            let dt = parse_typestr(text)
                .ok_or_else(|| unsupported(format!("the numpy type {text:?}")))?;
            // numpy.dtype(t, align, copy) without a copy of a builtin type in
            // native order is numpy's shared descriptor, whose __setstate__
            // returns at once: a BUILD on it changes nothing.
            let copy = match a.get(2).map(|&c| m.arena.get(c)) {
                None | Some(Value::None) => false,
                Some(Value::Bool(b)) => *b,
                Some(Value::Int(i)) => *i != 0,
                Some(Value::BigInt(_)) => true,
                Some(Value::Float(f)) => *f != 0.0,
                Some(Value::Str(s)) => !s.bytes.is_empty(),
                Some(Value::Bytes(b)) => !b.is_empty(),
                Some(other) => {
                    return Err(unsupported(format!(
                        "numpy.dtype's copy flag given as {}",
                        other.describe()
                    )))
                }
            };
            let shared = !copy
                && matches!(&dt, NpDtype::Scalar { kind, order, .. }
                    if !matches!(kind, b'S' | b'U' | b'V' | b'M' | b'm') && *order != ByteOrder::Big);
            let id = m.push_value(Value::NpDtype(Box::new(dt)))?;
            if shared {
                m.np_singletons.insert(id);
            }
            Ok(id)
        }
        Known::NpReconstruct => {
            let a = args(m, k, args_id, 3, 3)?;
            match m.arena.get(a[0]) {
                Value::Global(g) if **g == Global::Known(Known::NpNdarray) => {}
                _ => {
                    return Err(unsupported(
                        "_reconstruct of a class other than numpy.ndarray",
                    ))
                }
            }
            let shape = shape_arg(m, a[1])?;
            // _reconstruct converts its third argument with numpy.dtype()
            // first (its value is then replaced by the state's), so one
            // numpy cannot read fails the load.
            match m.arena.get(a[2]) {
                Value::None | Value::NpDtype(_) => {}
                Value::Str(_) | Value::Bytes(_) => {
                    let text = str_arg(m, a[2], "_reconstruct's dtype")?;
                    if parse_typestr(text).is_none() {
                        return Err(unsupported(format!("_reconstruct's dtype {text:?}")));
                    }
                }
                other => {
                    return Err(unsupported(format!(
                        "_reconstruct's dtype given as {}",
                        other.describe()
                    )))
                }
            }
            m.push_value(Value::Array(Box::new(NdArray {
                readonly: false,
                dtype: NpDtype::Scalar {
                    kind: b'i',
                    itemsize: 1,
                    order: ByteOrder::NotApplicable,
                    unit: None,
                },
                shape,
                fortran: false,
                data: ArrayData::Pending,
            })))
        }
        Known::NpScalar => {
            let a = args(m, k, args_id, 1, 2)?;
            let dtype = dtype_of(m, a[0])?;
            if dtype.has_object() {
                return match a.get(1) {
                    Some(&obj) if matches!(dtype, NpDtype::Scalar { .. }) => Ok(obj),
                    _ => Err(unsupported("a numpy object scalar of a structured dtype")),
                };
            }
            let data = match a.get(1) {
                // numpy.core.multiarray.scalar takes bytes or a latin-1 str
                // (a bytearray is refused).
                Some(&d) if matches!(m.arena.get(d), Value::ByteArray(_)) => {
                    return Err(malformed("a numpy scalar's data is a bytearray, not bytes"))
                }
                Some(&d) => raw_bytes(m, d, "a numpy scalar's data")?,
                None => {
                    let n =
                        usize::try_from(dtype.itemsize()).map_err(|_| malformed("too large"))?;
                    m.budget.charge_problem(n as u64)?;
                    Cow::Owned(vec![0; n])
                }
            };
            // numpy needs at least the dtype's size and ignores the rest.
            let size = dtype.itemsize();
            if (data.len() as u64) < size {
                return Err(malformed(format!(
                    "a numpy scalar of {} holds {} bytes, fewer than {size}",
                    dtype.descr(),
                    data.len(),
                )));
            }
            let data = match data {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..size as usize]),
                Cow::Owned(mut v) => {
                    v.truncate(size as usize);
                    Cow::Owned(v)
                }
            };
            m.push_value(Value::NpScalar(Box::new(NpScalar { dtype, data })))
        }
        Known::NpFromBuffer => {
            let a = args(m, k, args_id, 4, 4)?;
            // np.frombuffer takes an object with a buffer: bytes give a
            // read-only array, a bytearray a writeable one, a str fails.
            let readonly = match m.arena.get(a[0]) {
                Value::Bytes(_) => true,
                Value::ByteArray(_) => false,
                other => {
                    return Err(malformed(format!(
                        "_frombuffer's buffer is {}, not bytes or a bytearray",
                        other.describe()
                    )))
                }
            };
            let data = raw_bytes(m, a[0], "_frombuffer's buffer")?;
            let dtype = dtype_of(m, a[1])?;
            if dtype.has_object() {
                return Err(malformed("_frombuffer with an object dtype"));
            }
            let shape = reshape_dims(m, a[2], &dtype, data.len() as u64)?;
            // `frombuffer(buf, dtype).reshape(shape, order=order)`: reshape
            // takes C, F and A in either case ('A' is C for a 1-d array),
            // not 'K'.
            let fortran = match str_arg(m, a[3], "_frombuffer's order")? {
                "C" | "c" | "A" | "a" => false,
                "F" | "f" => true,
                o => return Err(malformed(format!("_frombuffer's order {o:?}"))),
            };
            check_len(&shape, &dtype, data.len() as u64)?;
            if matches!(data, Cow::Owned(_)) {
                m.budget.charge_problem(data.len() as u64)?;
            }
            m.push_value(Value::Array(Box::new(NdArray {
                readonly,
                dtype,
                shape,
                fortran,
                data: ArrayData::Bytes(data),
            })))
        }
        other => Err(unsupported(format!("calling {}", other.qualname()))),
    }
}

/// The shape `ndarray.reshape` makes of `len` bytes of `dtype`: as
/// `shape_arg`, but one negative dimension (any negative value) is inferred
/// from the rest, as numpy infers it.
fn reshape_dims(
    m: &mut Heap<'_, '_>,
    id: Id,
    dtype: &NpDtype,
    len: u64,
) -> Result<Vec<u64>, Problem> {
    let items = shape_items(m, id)?;
    m.budget.charge_problem(8 * items.len() as u64)?;
    let mut dims = Vec::with_capacity(items.len());
    let mut unknown = None;
    for (i, &d) in items.iter().enumerate() {
        if matches!(m.arena.get(d), Value::Bool(_)) {
            return Err(malformed("an array dimension is a bool, not an int"));
        }
        let v = int_arg(m, d, "an array dimension")?;
        if v < 0 {
            if unknown.replace(i).is_some() {
                return Err(malformed("a reshape with more than one unknown dimension"));
            }
            dims.push(1);
        } else {
            dims.push(v as u64);
        }
    }
    if let Some(i) = unknown {
        let itemsize = dtype.itemsize();
        let known = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        match (known, itemsize) {
            (Some(k), s) if s > 0 && k > 0 && len % (s * k) == 0 => dims[i] = len / (s * k),
            _ => {
                return Err(malformed(
                    "a reshape whose unknown dimension does not divide the buffer",
                ))
            }
        }
    }
    Ok(dims)
}

fn check_len(shape: &[u64], dtype: &NpDtype, len: u64) -> Result<(), Problem> {
    let need = array_nbytes(shape, dtype.itemsize())
        .ok_or_else(|| malformed("the array's size overflows"))?;
    if need != len {
        return Err(malformed(format!(
            "an array of shape {shape:?} and dtype {} needs {need} bytes; its data has {len}",
            dtype.descr()
        )));
    }
    Ok(())
}

/// `ndarray.__setstate__((version, shape, dtype, is_fortran, data))`.
pub(crate) fn array_setstate(m: &mut Heap<'_, '_>, obj: Id, state: Id) -> Result<(), Problem> {
    let parts = m
        .arena
        .seq_of(state)
        .filter(|_| matches!(m.arena.get(state), Value::Tuple(_)))
        .ok_or_else(|| malformed("an ndarray's state is not a tuple"))?
        .to_vec();
    // array_setstate parses `(iO!O!iO)`, else `(O!O!iO)`: the version
    // and the fortran flag are C ints (bools count), the shape a tuple.
    let c_int = |m: &Heap<'_, '_>, id: Id| m.arena.int_of(id).filter(|v| i32::try_from(*v).is_ok());
    let (shape, dtype, fortran, data) = match parts.as_slice() {
        [v, s, d, f, x] => {
            match c_int(m, *v) {
                Some(0 | 1) => {}
                Some(v) => return Err(malformed(format!("version {v} of an ndarray state"))),
                None => return Err(malformed("an ndarray state's version is not a C int")),
            }
            (*s, *d, *f, *x)
        }
        [s, d, f, x] => (*s, *d, *f, *x),
        _ => {
            return Err(malformed(
                "an ndarray's state is not (version, shape, dtype, fortran, data)",
            ))
        }
    };
    // The shape's items go through PyArray_IntpConverter, which refuses
    // bools ("an integer is required").
    match m.arena.get(shape) {
        Value::Tuple(items)
            if items
                .iter()
                .all(|&i| !matches!(m.arena.get(i), Value::Bool(_))) => {}
        other => {
            return Err(malformed(format!(
                "an ndarray state's shape is {}, not a tuple of ints",
                other.describe()
            )))
        }
    }
    let shape = shape_arg(m, shape)?;
    let mut dtype = dtype_of(m, dtype)?;
    let fortran = c_int(m, fortran).map(|f| f != 0).ok_or_else(|| {
        malformed(format!(
            "an ndarray's fortran flag is {}, not a C int",
            m.arena.get(fortran).describe()
        ))
    })?;
    if matches!(m.arena.get(data), Value::ByteArray(_)) && !dtype.has_object() {
        return Err(malformed(
            "an ndarray's data is a bytearray (numpy takes bytes or a str)",
        ));
    }
    let data = if dtype.has_object() {
        if !matches!(dtype, NpDtype::Scalar { .. }) {
            return Err(unsupported("arrays of structured dtypes that hold objects"));
        }
        let items = match m.arena.get(data) {
            Value::List(v) => v.clone(),
            other => {
                return Err(malformed(format!(
                    "an object array's data is {}, not a list",
                    other.describe()
                )))
            }
        };
        let numel: u64 = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| malformed("the array's size overflows"))?;
        // numpy copies the first numel items and ignores any after them.
        if (items.len() as u64) < numel {
            return Err(malformed(format!(
                "an object array of shape {shape:?} has only {} items",
                items.len()
            )));
        }
        let mut items = items;
        items.truncate(numel as usize);
        m.budget.charge_problem(4 * items.len() as u64)?;
        ArrayData::Objects(items)
    } else {
        let bytes = raw_bytes(m, data, "an ndarray's data")?;
        check_len(&shape, &dtype, bytes.len() as u64)?;
        // numpy's __setstate__ converts byte-swapped data to native order
        // (and the dtype with it).
        let unit = dtype.swap_unit();
        match (&mut dtype, unit) {
            (NpDtype::Scalar { order, .. }, Some(unit)) if *order == ByteOrder::Big => {
                m.budget.charge_problem(bytes.len() as u64)?;
                let mut owned = bytes.into_owned();
                super::bytes::byteswap(&mut owned, unit as usize);
                *order = ByteOrder::Little;
                ArrayData::Bytes(Cow::Owned(owned))
            }
            _ => ArrayData::Bytes(bytes),
        }
    };
    if let Value::Array(a) = m.arena.get_mut(obj) {
        a.shape = shape;
        a.dtype = dtype;
        a.fortran = fortran;
        a.data = data;
    }
    Ok(())
}

/// `dtype.__setstate__((version, byteorder, subarray, names, fields,
/// elsize, alignment, flags[, metadata]))`.
pub(crate) fn dtype_setstate(m: &mut Heap<'_, '_>, obj: Id, state: Id) -> Result<(), Problem> {
    if m.np_singletons.contains(&obj) {
        return Ok(());
    }
    let parts = match m.arena.get(state) {
        Value::Tuple(t) if (5..=9).contains(&t.len()) => t.clone(),
        _ => {
            return Err(unsupported(
                "a numpy dtype state other than versions 0 to 4 (5 to 9 items)",
            ))
        }
    };
    // arraydescr_setstate refuses a version outside 0 to 4 ("can't handle
    // version N of numpy.dtype pickle"), whatever the tuple's length.
    if parts.len() >= 6 {
        let version = int_arg(m, parts[0], "the dtype state version")?;
        if !(0..=4).contains(&version) {
            return Err(malformed(format!(
                "version {version} of a numpy dtype state (numpy reads versions 0 to 4)"
            )));
        }
        // The version changes how numpy reads the other items (versions 0
        // and 1 keep a record's names in its fields dict); numpy writes each
        // version with its own length, and only those pairs are read here.
        let written = parts.len() as i64 - 5;
        if version != written {
            return Err(unsupported(format!(
                "a dtype state of version {version} in a tuple of {} items (numpy writes \
                 version {written} with that many)",
                parts.len()
            )));
        }
    }
    // numpy's arraydescr_setstate, by the state's length: version 0 (5
    // items) has no version field, 1 (6) no names, 2 (7) no flags; 3 (8) and
    // 4 (9, with metadata) have everything. Versions 0 and 1 kept a record's
    // field order only in its fields dict; those are not read here.
    let had_flags = parts.len() >= 8;
    let parts = match parts.len() {
        5 | 6 => {
            let p = if parts.len() == 5 {
                &parts[..]
            } else {
                &parts[1..]
            };
            if !matches!(m.arena.get(p[2]), Value::None) {
                return Err(unsupported(
                    "a record dtype pickled by numpy before 1.0 (state version 0 or 1)",
                ));
            }
            let zero = m.push_value(Value::Int(0))?;
            vec![NONE, p[0], p[1], NONE, NONE, p[3], p[4], zero]
        }
        7 => {
            let zero = m.push_value(Value::Int(0))?;
            let mut v = parts;
            v.push(zero);
            v
        }
        _ => parts,
    };
    let current = dtype_of(m, obj)?;
    // arraydescr_setstate takes the byte order as a str (encoded as ASCII)
    // or bytes (a Python 2 pickle read with encoding="bytes"), of length 1.
    let endian = match m.arena.get(parts[1]) {
        Value::Str(s) => s
            .as_str()
            .and_then(|t| t.chars().next().filter(|c| c.is_ascii() && t.len() == 1)),
        Value::Bytes(b) if b.len() == 1 => Some(char::from(b[0])),
        _ => None,
    }
    .ok_or_else(|| {
        malformed(format!(
            "the dtype byte order is {}, not one ASCII character",
            m.arena.get(parts[1]).describe()
        ))
    })?;
    let elsize = int_arg(m, parts[5], "the dtype element size")?;
    // numpy reads the alignment as a C ssize_t.
    int_arg(m, parts[6], "the dtype alignment")?;
    // numpy takes any int as the flags and keeps them: they decide how
    // arrays and scalars of the dtype are unpickled (a list of objects or
    // bytes, for one), so they are checked against what numpy writes below.
    if !matches!(
        m.arena.get(parts[7]),
        Value::Int(_) | Value::BigInt(_) | Value::Bool(_)
    ) {
        return Err(malformed(format!(
            "the dtype flags are {}, not an int",
            m.arena.get(parts[7]).describe()
        )));
    }
    // numpy refuses names without fields and fields without names.
    let (has_names, has_fields) = (
        !matches!(m.arena.get(parts[3]), Value::None),
        !matches!(m.arena.get(parts[4]), Value::None),
    );
    if has_names != has_fields {
        return Err(malformed(
            "a dtype state with names but no fields, or fields but no names",
        ));
    }
    // numpy stores the byte order character as given. Only a multi-byte
    // scalar type has one a dtype can be rebuilt with; on any other (a
    // record, a sub-array, bool, 1-byte ints, S, V, O) numpy writes '|', and
    // another (numpy keeps '<u1' or '>O') is refused.
    let multi_byte = matches!(current, NpDtype::Scalar { order, .. } if order != ByteOrder::NotApplicable)
        && !has_names
        && matches!(m.arena.get(parts[2]), Value::None);
    if endian != '|' && !multi_byte {
        return Err(unsupported(format!(
            "the byte order {endian:?} on a numpy dtype that has none (numpy keeps it as \
             given, a dtype no numpy writes)"
        )));
    }
    if has_names && !matches!(current, NpDtype::Scalar { kind: b'V', .. }) {
        return Err(unsupported(format!(
            "a record dtype state on the numpy type {} (numpy writes records as void types)",
            current.descr()
        )));
    }
    let new = if !matches!(m.arena.get(parts[2]), Value::None) {
        let sub = m
            .arena
            .seq_of(parts[2])
            .filter(|s| s.len() == 2)
            .ok_or_else(|| malformed("a dtype's sub-array is not (dtype, shape)"))?
            .to_vec();
        let base = dtype_of(m, sub[0])?;
        let shape = shape_arg(m, sub[1])?;
        let dt = NpDtype::SubArray {
            base: Box::new(base),
            shape,
        };
        if elsize >= 0 && dt.itemsize() != elsize as u64 {
            return Err(malformed(
                "a sub-array dtype's size disagrees with its element size",
            ));
        }
        dt
    } else if !matches!(m.arena.get(parts[3]), Value::None) {
        let flags = m
            .arena
            .int_of(parts[7])
            .filter(|&f| f >= 0)
            .ok_or_else(|| {
                unsupported("a record dtype state whose flags are negative or beyond 64 bits")
            })?;
        record(m, parts[3], parts[4], elsize, flags)?
    } else {
        match current {
            NpDtype::Scalar {
                kind,
                mut itemsize,
                order,
                mut unit,
            } => {
                // numpy stores the character as given; any but '>' and '|'
                // reads as native order ('!' and 'x' included).
                let order =
                    match (endian, order) {
                        (_, ByteOrder::NotApplicable) => ByteOrder::NotApplicable,
                        ('>', _) => ByteOrder::Big,
                        // numpy keeps a '|' it is given, even on a multi-byte type
                        // (a dtype that is neither order, which no numpy writes):
                        // not built here, a documented refusal.
                        ('|', _) => return Err(unsupported(
                            "the byte order '|' on a multi-byte numpy dtype (numpy keeps it as \
                             given, a dtype no numpy writes)",
                        )),
                        _ => ByteOrder::Little,
                    };
                if matches!(kind, b'S' | b'U' | b'V') {
                    // numpy takes the state's element size for a flexible
                    // type as it is (a negative one makes a broken dtype).
                    itemsize = u64::try_from(elsize)
                        .ok()
                        .filter(|&n| n <= MAX_ITEMSIZE && (kind != b'U' || n % 4 == 0))
                        .ok_or_else(|| malformed(format!("a dtype element size of {elsize}")))?;
                }
                if matches!(kind, b'M' | b'm') {
                    if let Some(&md) = parts.get(8) {
                        unit = Some(datetime_unit(m, md)?);
                    }
                }
                NpDtype::Scalar {
                    kind,
                    itemsize,
                    order,
                    unit,
                }
            }
            other => other,
        }
    };
    if new.depth() > MAX_DTYPE_DEPTH {
        return Err(Problem::Limit("a numpy dtype nested too deeply".into()));
    }
    if had_flags {
        let canon = canonical_flags(&new);
        let aligned = matches!(new, NpDtype::Record { aligned: true, .. });
        let want = if aligned { canon | 0x80 } else { canon };
        match m.arena.int_of(parts[7]) {
            Some(f) if f == want => {}
            f => {
                return Err(unsupported(format!(
                    "a dtype state with the flags {}; numpy writes {want} for {}",
                    f.map_or_else(|| "beyond 64 bits".to_string(), |f| f.to_string()),
                    new.descr()
                )))
            }
        }
    }
    *m.arena.get_mut(obj) = Value::NpDtype(Box::new(new));
    Ok(())
}

/// The flags numpy gives a dtype (and writes in its state, without the
/// 0x80 of an aligned record): NPY_LIST_PICKLE and the refcount bits for
/// objects (63), NPY_NEEDS_INIT for `U` (8), NPY_NEEDS_PYAPI for records (16)
/// with their fields' NPY_FROM_FIELDS bits (27), a sub-array's base's.
fn canonical_flags(d: &NpDtype) -> i64 {
    match d {
        NpDtype::Scalar { kind: b'O', .. } => 63,
        NpDtype::Scalar { kind: b'U', .. } => 8,
        NpDtype::Scalar { .. } => 0,
        NpDtype::SubArray { base, .. } => canonical_flags(base),
        NpDtype::Record { fields, .. } => fields
            .iter()
            .fold(16, |f, x| f | (canonical_flags(&x.dtype) & 27)),
    }
}

/// The datetime unit from a version 4 dtype state's metadata:
/// `(metadata, (unit, num, den, events))`.
fn datetime_unit(m: &Heap<'_, '_>, md: Id) -> Result<(String, i64), Problem> {
    let inner = m
        .arena
        .seq_of(md)
        .and_then(|t| t.get(1).copied())
        .and_then(|i| m.arena.seq_of(i))
        .filter(|t| t.len() == 4)
        .ok_or_else(|| {
            malformed("a datetime dtype's metadata is not (md, (unit, num, den, events))")
        })?;
    let unit = str_arg(m, inner[0], "the datetime unit")?.to_string();
    let num = int_arg(m, inner[1], "the datetime multiplier")?;
    if !UNITS.contains(&unit.as_str()) || num < 1 {
        return Err(malformed(format!("the datetime unit {num}{unit}")));
    }
    // numpy's own dtype strings take a 32-bit multiplier; a state may store
    // more, which no numpy writes and `numpy.dtype("M8[...]")` cannot spell.
    if num > i64::from(i32::MAX) {
        return Err(unsupported(format!(
            "a datetime dtype state whose multiplier {num} is beyond 32 bits"
        )));
    }
    // numpy writes (unit, num, 1, 1) and validates the last two.
    for (&i, what) in inner[2..].iter().zip(["denominator", "events"]) {
        if m.arena.get(i) != &Value::Int(1) {
            return Err(unsupported(format!(
                "a datetime dtype state whose {what} is not 1"
            )));
        }
    }
    Ok((unit, num))
}

fn record(
    m: &mut Heap<'_, '_>,
    names: Id,
    fields: Id,
    elsize: i64,
    flags: i64,
) -> Result<NpDtype, Problem> {
    let names: Vec<String> = m
        .arena
        .seq_of(names)
        .ok_or_else(|| malformed("a record dtype's names are not a tuple"))?
        .to_vec()
        .iter()
        .map(|&n| str_arg(m, n, "a record field name").map(str::to_string))
        .collect::<Result<_, _>>()?;
    let items = match m.arena.get(fields) {
        Value::Dict(d) => m.arena.dict_items(&d.items),
        _ => return Err(malformed("a record dtype's fields are not a dict")),
    };
    let itemsize = u64::try_from(elsize)
        .ok()
        .filter(|&s| s <= MAX_ITEMSIZE)
        .ok_or_else(|| malformed(format!("a record dtype's size {elsize}")))?;
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        let (_, spec) = items
            .iter()
            .find(|(k, _)| m.arena.str_of(*k) == Some(name.as_str()))
            .ok_or_else(|| {
                malformed(format!("the record field {name:?} has no entry in fields"))
            })?;
        let spec = m
            .arena
            .seq_of(*spec)
            .filter(|s| s.len() == 2 || s.len() == 3)
            .ok_or_else(|| malformed("a record field is not (dtype, offset[, title])"))?
            .to_vec();
        let dtype = dtype_of(m, spec[0])?;
        let offset = u64::try_from(int_arg(m, spec[1], "a field offset")?)
            .map_err(|_| malformed("a negative field offset"))?;
        let title = match spec.get(2) {
            Some(&t) if !matches!(m.arena.get(t), Value::None) => {
                Some(str_arg(m, t, "a field title")?.to_string())
            }
            _ => None,
        };
        if offset
            .checked_add(dtype.itemsize())
            .is_none_or(|e| e > itemsize)
        {
            return Err(malformed(format!(
                "the record field {name:?} lies outside the record's {itemsize} bytes"
            )));
        }
        out.push(NpField {
            name: name.clone(),
            dtype,
            offset,
            title,
        });
    }
    Ok(NpDtype::Record {
        fields: out,
        itemsize,
        aligned: flags & 0x80 != 0,
    })
}

/// BUILD on a joblib `NumpyArrayWrapper`: its attributes say what array the
/// bytes after this opcode hold (joblib's `NumpyArrayWrapper.read`).
pub(crate) fn joblib_setstate(m: &mut Heap<'_, '_>, obj: Id, state: Id) -> Result<(), Problem> {
    let Value::Dict(d) = m.arena.get(state) else {
        return Err(malformed("a NumpyArrayWrapper's state is not a dict"));
    };
    let mut attrs: HashMap<String, Id> = HashMap::new();
    for &(k, v) in &d.items.clone() {
        let key = str_arg(m, k, "a NumpyArrayWrapper attribute name")?.to_string();
        attrs.insert(key, v);
    }
    let get = |k: &str| {
        attrs
            .get(k)
            .copied()
            .ok_or_else(|| malformed(format!("a NumpyArrayWrapper without `{k}`")))
    };
    match m.arena.get(get("subclass")?) {
        Value::Global(g) if matches!(**g, Global::Known(Known::NpNdarray)) => {}
        other => {
            return Err(unsupported(format!(
                "a joblib array of the subclass {} (only numpy.ndarray is read)",
                other.describe()
            )))
        }
    }
    let shape = shape_arg(m, get("shape")?)?;
    let fortran = match str_arg(m, get("order")?, "a NumpyArrayWrapper order")? {
        "C" => false,
        "F" => true,
        o => return Err(malformed(format!("a NumpyArrayWrapper order {o:?}"))),
    };
    let dtype = dtype_of(m, get("dtype")?)?;
    if dtype.depth() > MAX_DTYPE_DEPTH {
        return Err(Problem::Limit("a numpy dtype nested too deeply".into()));
    }
    // joblib.load makes arrays native-endian (ensure_native_byte_order):
    // the bytes are swapped when they are read (`joblib_inline`); dtypes
    // that rule does not cover are refused here, before any bytes.
    if !dtype.has_object()
        && !dtype.native_order()
        && !matches!(dtype, super::value::NpDtype::Scalar { .. })
    {
        return Err(unsupported(
            "a joblib array of a structured dtype with big-endian fields",
        ));
    }
    // joblib >= 1.2 writes numpy_array_alignment_bytes and a padding byte;
    // older dumps have neither (an attribute of None counts as absent too).
    let padded = attrs
        .get("numpy_array_alignment_bytes")
        .is_some_and(|&v| !matches!(m.arena.get(v), Value::None));
    if let Value::Array(a) = m.arena.get_mut(obj) {
        a.dtype = dtype;
        a.shape = shape;
        a.fortran = fortran;
        a.data = ArrayData::Joblib(Some(padded));
    }
    Ok(())
}

pub(crate) type NpyHeader = (super::value::NpDtype, Vec<u64>, bool, usize);

/// The dtype, shape, order and data offset of an `.npy` held in `data`
/// (errors name `file` and offsets from `base`).
pub(crate) fn npy_header_in(data: &[u8], base: u64, file: &str) -> Result<NpyHeader, EvalError> {
    let err = |o: u64, p: Problem| p.at(file, o);
    let h = npy::parse_header(data)
        .map_err(|e| err(base + e.offset(), malformed(format!("npy header: {e}"))))?;
    if let Some(p) = &h.problem {
        return Err(err(base + 8, malformed(format!("npy header: {p}"))));
    }
    let start = if h.major == 1 { 10 } else { 12 };
    let dict = h
        .dict
        .as_ref()
        .ok_or_else(|| err(base + start as u64, malformed("npy header is not a dict")))?;
    let descr = dict
        .get("descr")
        .ok_or_else(|| err(base + start as u64, malformed("npy header without descr")))?;
    let dtype = descr_to_dtype(descr, 0)
        .map_err(|e| err(base + start as u64, unsupported(format!("npy dtype: {e}"))))?;
    let fortran = matches!(dict.get("fortran_order"), Some(PyValue::Bool(true)));
    let shape = match dict.get("shape") {
        // numpy's read_array unpickles an object array whole and never
        // looks at the header's shape beyond its being a tuple of ints
        // (containers::npy checks that): any ints stand, and none is kept.
        Some(PyValue::Tuple(_)) if dtype.has_object() => Vec::new(),
        Some(PyValue::Tuple(dims)) => dims
            .iter()
            .map(|d| match d {
                PyValue::Int(Some(n)) if *n >= 0 => Ok(*n as u64),
                PyValue::Bool(b) => Ok(*b as u64),
                _ => Err(err(
                    base + start as u64,
                    malformed("npy shape holds a bad dimension"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(err(
                base + start as u64,
                malformed("npy shape is not a tuple"),
            ))
        }
    };
    if shape.len() > MAX_NDIM {
        return Err(err(
            base,
            Problem::Limit("an array with more than 64 dimensions".into()),
        ));
    }
    if h.object == ObjectDtype::Yes && !dtype.has_object() {
        return Err(err(
            base + start as u64,
            malformed("npy descr disagrees about objects"),
        ));
    }
    Ok((dtype, shape, fortran, h.data_offset))
}

#[cfg(test)]
mod tests;
