//! `numpy.dtype.__setstate__`: the pickled state tuple of every dtype
//! kind (scalar, datetime, record, sub-array) checked as numpy checks it.

use super::*;

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
pub(super) fn canonical_flags(d: &NpDtype) -> i64 {
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
pub(super) fn datetime_unit(m: &Heap<'_, '_>, md: Id) -> Result<(String, i64), Problem> {
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

pub(super) fn record(
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
