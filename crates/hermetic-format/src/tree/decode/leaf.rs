//! The tagged nodes that hold no other node: numbers, bytes, references,
//! torch and numpy names, tensors, callables and the standard-library values.

use super::Decoder;
use crate::dtype::Dtype;
use crate::syntax::{is_date, is_datetime, is_decimal, is_import_name, is_timedelta, is_uuid};
use crate::tree::node::Node;
use crate::tree::tensor::{TensorKind, TensorRef, View};
use crate::tree::{B64, MAX_NDIM};
use base64::Engine as _;
use serde::de;
use serde_json::Value;

fn parse_float<E: de::Error>(dec: &mut Decoder<'_>, v: &Value) -> std::result::Result<f64, E> {
    match v {
        Value::Number(n) if n.is_f64() => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Value::Object(m) if m.len() == 1 => match m.get("$float") {
            Some(Value::String(h)) => float_bits(dec, h),
            _ => Err(dec.fail("expected a float")),
        },
        _ => Err(dec.fail("expected a float (a number with a fraction or exponent)")),
    }
}

fn float_bits<E: de::Error>(dec: &mut Decoder<'_>, h: &str) -> std::result::Result<f64, E> {
    let ok = h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let bits = if ok {
        u64::from_str_radix(h, 16).ok()
    } else {
        None
    };
    match bits {
        Some(b) if !f64::from_bits(b).is_finite() => Ok(f64::from_bits(b)),
        Some(_) => Err(dec.fail("$float bits must encode a NaN or an infinity")),
        None => Err(dec.fail("$float must be 16 lowercase hex digits")),
    }
}

fn as_str<'v, E: de::Error>(
    dec: &mut Decoder<'_>,
    v: &'v Value,
    what: &str,
) -> std::result::Result<&'v str, E> {
    v.as_str()
        .ok_or_else(|| dec.fail(format!("{what} must be a string")))
}

fn b64<E: de::Error>(dec: &mut Decoder<'_>, s: &str) -> std::result::Result<Vec<u8>, E> {
    B64.decode(s)
        .map_err(|e| dec.fail(format!("invalid base64: {e}")))
}

pub(super) fn leaf<E: de::Error>(
    dec: &mut Decoder<'_>,
    tag: &str,
    v: Value,
) -> std::result::Result<Node, E> {
    Ok(match tag {
        "$int" => {
            let s = as_str(dec, &v, "$int")?;
            let digits = s.strip_prefix('-').unwrap_or(s);
            let ok = !(digits.is_empty() || digits.len() > 1 && digits.starts_with('0'))
                && digits
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !ok {
                return Err(dec.fail("$int must be lowercase hex digits with an optional '-'"));
            }
            // Values that fit in an i64 must be written as plain integers.
            if let Ok(i) = i64::from_str_radix(s, 16) {
                let _ = i;
                return Err(dec.fail("$int holds a value that fits in an i64"));
            }
            Node::BigInt(s.to_string())
        }
        "$float" => {
            let s = as_str(dec, &v, "$float")?;
            Node::Float(float_bits(dec, s)?)
        }
        "$complex" => match v.as_array() {
            Some(a) if a.len() == 2 => {
                let re = parse_float(dec, &a[0])?;
                let im = parse_float(dec, &a[1])?;
                Node::Complex(re, im)
            }
            _ => return Err(dec.fail("$complex must be [real, imag]")),
        },
        "$bytes" => {
            let s = as_str(dec, &v, "$bytes")?;
            Node::Bytes(b64(dec, s)?)
        }
        "$bytes_entry" => Node::BytesEntry(as_str(dec, &v, "$bytes_entry")?.to_string()),
        "$ref" => {
            let n = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| dec.fail("$ref must be a non-negative integer"))?;
            if n >= dec.tree.memo.len() {
                return Err(dec.fail(format!(
                    "$ref {n} names no earlier object ({} so far)",
                    dec.tree.memo.len()
                )));
            }
            if dec.open_immutable[n] {
                return Err(dec.fail(format!(
                    "$ref {n} makes a cycle through a tuple, set or frozenset"
                )));
            }
            Node::Ref(n)
        }
        "$torch_dtype" => {
            let s = as_str(dec, &v, "$torch_dtype")?;
            // A closed table: the name is never looked up in `torch` itself
            // (an attribute lookup there imports lazy submodules).
            if !crate::dtype::is_torch_dtype_name(s) {
                return Err(dec.fail(format!(
                    "$torch_dtype {s:?} is not a torch dtype: expected one of {}",
                    crate::dtype::TORCH_DTYPE_NAMES.join(", ")
                )));
            }
            Node::TorchDtype(s.to_string())
        }
        "$torch_device" => {
            let s = as_str(dec, &v, "$torch_device")?;
            if !crate::dtype::is_torch_device(s) {
                return Err(dec.fail(format!(
                    "$torch_device {s:?} is not a torch device: expected a type ({}), \
                     optionally followed by `:` and an index",
                    crate::dtype::TORCH_DEVICE_TYPES.join(", ")
                )));
            }
            Node::TorchDevice(s.to_string())
        }
        "$torch_size" => {
            let dims: Option<Vec<i64>> = v
                .as_array()
                .map(|a| a.iter().map(Value::as_i64).collect())
                .unwrap_or(None);
            match dims {
                Some(d) if d.len() <= MAX_NDIM => Node::TorchSize(d),
                _ => return Err(dec.fail("$torch_size must be a list of at most 64 integers")),
            }
        }
        "$np_scalar" => {
            let Value::Object(m) = v else {
                return Err(dec.fail("$np_scalar must be {\"dtype\": ..., \"data\": base64}"));
            };
            if m.len() != 2 || !m.contains_key("dtype") {
                return Err(dec.fail("$np_scalar must have exactly the members dtype and data"));
            }
            let data = match m.get("data") {
                Some(Value::String(s)) => b64(dec, s)?,
                _ => return Err(dec.fail("$np_scalar data must be a base64 string")),
            };
            let dtype = m.get("dtype").cloned().unwrap_or(Value::Null);
            check_np_dtype(dec, &dtype)?;
            Node::NpScalar { dtype, data }
        }
        "$tensor" | "$parameter" | "$ndarray" => {
            let kind = match tag {
                "$tensor" => TensorKind::Torch,
                "$parameter" => TensorKind::Parameter,
                _ => TensorKind::Numpy,
            };
            Node::Tensor(tensor_ref(dec, kind, v)?)
        }
        "$callable" => {
            let name = as_str(dec, &v, "$callable")?;
            if !is_import_name(name) {
                return Err(dec.fail(format!(
                    "$callable names {name:?}, which is not a `module:qualname` of identifiers"
                )));
            }
            Node::Callable(name.to_string())
        }
        "$datetime" => {
            let t = as_str(dec, &v, "$datetime")?;
            if !is_datetime(t) {
                return Err(dec.fail(format!("$datetime {t:?} is not an ISO 8601 date and time")));
            }
            Node::Datetime(t.to_string())
        }
        "$date" => {
            let t = as_str(dec, &v, "$date")?;
            if !is_date(t) {
                return Err(dec.fail(format!("$date {t:?} is not YYYY-MM-DD")));
            }
            Node::Date(t.to_string())
        }
        "$timedelta" => {
            let parts: Option<Vec<i64>> = v
                .as_array()
                .map(|a| a.iter().map(Value::as_i64).collect())
                .unwrap_or(None);
            match parts.as_deref() {
                Some(&[days, seconds, microseconds])
                    if is_timedelta(days, seconds, microseconds) =>
                {
                    Node::Timedelta {
                        days,
                        seconds,
                        microseconds,
                    }
                }
                _ => {
                    return Err(dec.fail(
                        "$timedelta must be [days, seconds, microseconds] in timedelta's ranges",
                    ))
                }
            }
        }
        "$path" => Node::Path(as_str(dec, &v, "$path")?.to_string()),
        "$time" => {
            let t = as_str(dec, &v, "$time")?;
            if !crate::syntax::is_time(t) {
                return Err(dec.fail(format!(
                    "$time {t:?} is not HH:MM:SS[.ffffff] with an optional UTC offset"
                )));
            }
            Node::Time(t.to_string())
        }
        "$timezone" => match &v {
            Value::Array(a)
                if a.len() == 2
                    && a[0].as_str().is_some_and(crate::syntax::is_utc_offset)
                    && (a[1].is_null() || a[1].as_str().is_some_and(|n| n.len() <= 255)) =>
            {
                Node::Timezone {
                    offset: a[0].as_str().unwrap_or_default().to_string(),
                    name: a[1].as_str().map(str::to_string),
                }
            }
            _ => {
                return Err(dec.fail(
                    "$timezone must be [OFFSET, NAME]: a UTC offset `+HH:MM[:SS[.ffffff]]` under 24 hours and a name (at most 255 bytes) or null",
                ))
            }
        },
        "$pure_path" => match &v {
            Value::Array(a)
                if a.len() == 2
                    && matches!(a[0].as_str(), Some("posix" | "windows"))
                    && a[1].is_string() =>
            {
                Node::PurePath {
                    windows: a[0].as_str() == Some("windows"),
                    text: a[1].as_str().unwrap_or_default().to_string(),
                }
            }
            _ => return Err(dec.fail("$pure_path must be [\"posix\" or \"windows\", TEXT]")),
        },
        "$uuid" => {
            let t = as_str(dec, &v, "$uuid")?;
            if !is_uuid(t) {
                return Err(dec.fail(format!("$uuid {t:?} is not a lowercase 8-4-4-4-12 UUID")));
            }
            Node::Uuid(t.to_string())
        }
        "$decimal" => {
            let t = as_str(dec, &v, "$decimal")?;
            if !is_decimal(t) {
                return Err(dec.fail(format!("$decimal {t:?} is not a decimal number")));
            }
            Node::Decimal(t.to_string())
        }
        other => return Err(dec.fail(format!("unknown tag `{other}`"))),
    })
}

fn check_np_dtype<E: de::Error>(dec: &mut Decoder<'_>, v: &Value) -> std::result::Result<(), E> {
    // A numpy dtype descriptor: a string, or a list describing a record.
    // Its meaning is numpy's; readers check that it has no object fields
    // and that its item size matches before using it.
    match v {
        Value::String(_) | Value::Array(_) => Ok(()),
        _ => Err(dec.fail("np_dtype must be a string or a list")),
    }
}

fn tensor_ref<E: de::Error>(
    dec: &mut Decoder<'_>,
    kind: TensorKind,
    v: Value,
) -> std::result::Result<TensorRef, E> {
    let m = match v {
        Value::String(entry) => {
            return Ok(TensorRef {
                kind,
                entry,
                view: None,
                requires_grad: None,
                np_dtype: None,
                device: None,
                base: None,
            })
        }
        Value::Object(m) => m,
        _ => return Err(dec.fail("a tensor must be an entry name or an object")),
    };
    for k in m.keys() {
        if !matches!(
            k.as_str(),
            "entry"
                | "base"
                | "dtype"
                | "shape"
                | "strides"
                | "offset"
                | "requires_grad"
                | "np_dtype"
                | "device"
        ) {
            return Err(dec.fail(format!("unknown tensor member `{k}`")));
        }
    }
    let entry = match m.get("entry") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(dec.fail("tensor member `entry` must be a string")),
    };
    let base = match m.get("base") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(dec.fail("tensor member `base` must be a string")),
    };
    let view = match (m.get("dtype"), m.get("shape")) {
        (None, None) => {
            if m.contains_key("strides") || m.contains_key("offset") {
                return Err(dec.fail("strides and offset need dtype and shape"));
            }
            None
        }
        (Some(d), Some(s)) => {
            let code = as_str(dec, d, "dtype")?;
            let dtype =
                Dtype::parse(code).ok_or_else(|| dec.fail(format!("unknown dtype `{code}`")))?;
            let shape = u64_list(dec, s, "shape")?;
            let strides = match m.get("strides") {
                None => None,
                Some(Value::Array(a)) => {
                    let s: Option<Vec<i64>> = a.iter().map(Value::as_i64).collect();
                    match s {
                        Some(s) if s.len() == shape.len() => Some(s),
                        _ => {
                            return Err(
                                dec.fail("strides must be a list of integers, one per dimension")
                            )
                        }
                    }
                }
                Some(_) => return Err(dec.fail("strides must be a list")),
            };
            let offset = match m.get("offset") {
                None => 0,
                Some(o) => o
                    .as_u64()
                    .ok_or_else(|| dec.fail("offset must be a non-negative integer"))?,
            };
            Some(View {
                dtype,
                shape,
                strides,
                offset,
            })
        }
        _ => return Err(dec.fail("dtype and shape come together")),
    };
    if base.is_some() && view.is_none() {
        return Err(dec.fail("a tensor with `base` needs dtype and shape"));
    }
    let requires_grad = match m.get("requires_grad") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(dec.fail("requires_grad must be a boolean")),
    };
    if requires_grad.is_some() && kind == TensorKind::Numpy {
        return Err(dec.fail("requires_grad is for torch tensors"));
    }
    let np_dtype = m.get("np_dtype").cloned();
    if let Some(d) = &np_dtype {
        if kind != TensorKind::Numpy {
            return Err(dec.fail("np_dtype is for numpy arrays"));
        }
        if view.is_none() {
            return Err(dec.fail("np_dtype needs dtype and shape"));
        }
        check_np_dtype(dec, d)?;
    }
    if let Some(View {
        dtype: Dtype::Raw(_),
        ..
    }) = &view
    {
        if np_dtype.is_none() {
            return Err(dec.fail("a RAW dtype needs np_dtype"));
        }
    }
    let device = match m.get("device") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(dec.fail("device must be a string")),
    };
    Ok(TensorRef {
        kind,
        entry,
        view,
        requires_grad,
        np_dtype,
        device,
        base,
    })
}

fn u64_list<E: de::Error>(
    dec: &mut Decoder<'_>,
    v: &Value,
    what: &str,
) -> std::result::Result<Vec<u64>, E> {
    let list: Option<Vec<u64>> = v
        .as_array()
        .map(|a| a.iter().map(Value::as_u64).collect())
        .unwrap_or(None);
    match list {
        Some(l) if l.len() <= MAX_NDIM => Ok(l),
        Some(_) => Err(dec.limit("number of dimensions", MAX_NDIM as u64)),
        None => Err(dec.fail(format!("{what} must be a list of non-negative integers"))),
    }
}
