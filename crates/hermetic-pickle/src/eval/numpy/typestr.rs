//! numpy dtypes from text: type strings as `numpy.dtype(str)` reads them,
//! `.npy` header descrs, and the header itself.

use super::*;

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

/// `2s` -> ("s", 2).
pub(super) fn parse_unit(u: &str) -> Option<(String, i64)> {
    let split = u.find(|c: char| !c.is_ascii_digit()).unwrap_or(u.len());
    let (num, name) = u.split_at(split);
    let num = if num.is_empty() { 1 } else { num.parse().ok()? };
    if !UNITS.contains(&name) || num < 1 {
        return None;
    }
    Some((name.to_string(), num))
}

/// A `.npy` header `descr` (what `numpy.lib.format.descr_to_dtype` reads).
pub(super) fn descr_to_dtype(d: &PyValue, depth: usize) -> Result<NpDtype, String> {
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

pub(super) fn literal_shape(v: &PyValue) -> Result<Vec<u64>, String> {
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

pub(crate) type NpyHeader = (NpDtype, Vec<u64>, bool, usize);

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
