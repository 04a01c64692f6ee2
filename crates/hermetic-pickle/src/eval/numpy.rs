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

mod dtype_state;
mod typestr;

pub(crate) use dtype_state::dtype_setstate;
pub use typestr::parse_typestr;
pub(crate) use typestr::{npy_header_in, NpyHeader};

/// The most dimensions an array may have (numpy's `NPY_MAXDIMS`).
pub const MAX_NDIM: usize = 64;
/// The largest element numpy dtypes here may have.
const MAX_ITEMSIZE: u64 = 1 << 31;

/// The datetime units numpy knows (`generic` for none).
const UNITS: &[&str] = &[
    "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as", "generic",
];

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

#[cfg(test)]
mod tests;
