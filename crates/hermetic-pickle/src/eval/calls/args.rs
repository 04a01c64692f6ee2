//! Arguments of the byte, mapping and counter constructors, read as their
//! Python constructors read them.

use super::*;

pub(super) fn byte_list(m: &Heap<'_, '_>, items: &[Id]) -> Result<Vec<u8>, Problem> {
    items
        .iter()
        .map(|&i| {
            m.arena
                .int_of(i)
                .and_then(|v| u8::try_from(v).ok())
                .ok_or_else(|| {
                    malformed("bytes(...) of a list holding something other than 0..255")
                })
        })
        .collect()
}

/// `bytes(...)`/`bytearray(...)` arguments to the bytes they make.
pub(super) fn bytes_from<'a>(
    m: &mut Heap<'a, '_>,
    k: Known,
    a: &[Id],
) -> Result<Cow<'a, [u8]>, Problem> {
    Ok(match a {
        [] => Cow::Borrowed(&[][..]),
        [x] => match m.arena.get(*x) {
            Value::Bytes(b) | Value::ByteArray(b) => b.clone(),
            Value::List(v) | Value::Tuple(v) => {
                let v = v.clone();
                m.budget.charge_problem(v.len() as u64)?;
                Cow::Owned(byte_list(m, &v)?)
            }
            Value::Int(n) if *n >= 0 => {
                m.budget.charge_problem(*n as u64)?;
                Cow::Owned(vec![
                    0;
                    usize::try_from(*n)
                        .map_err(|_| malformed("size too large"))?
                ])
            }
            other => {
                return Err(unsupported(format!(
                    "{}({})",
                    k.qualname(),
                    other.describe()
                )))
            }
        },
        [s, enc] | [s, enc, _] => {
            if !matches!(m.arena.get(*enc), Value::Str(_)) {
                return Err(malformed(format!(
                    "{}'s encoding is {}, not a str",
                    k.qualname(),
                    m.arena.get(*enc).describe()
                )));
            }
            let enc = str_arg(m, *enc, "the encoding")?.to_string();
            let Value::Str(s) = m.arena.get(*s) else {
                return Err(malformed(format!(
                    "{} with an encoding needs a str",
                    k.qualname()
                )));
            };
            m.budget.charge_problem(4 * s.bytes.len() as u64)?;
            match encode(s, &enc)? {
                Value::Bytes(b) => Cow::Owned(b.into_owned()),
                // bytes(s, "rot13"): the codec returns a str, which bytes()
                // refuses ("encoder did not return a bytes object").
                _ => {
                    return Err(malformed(format!(
                        "{} with a str-to-str codec",
                        k.qualname()
                    )))
                }
            }
        }
        _ => {
            return Err(malformed(format!(
                "{} takes at most 3 arguments",
                k.qualname()
            )))
        }
    })
}

pub(super) fn mapping_from(m: &Heap<'_, '_>, k: Known, a: &[Id]) -> Result<Vec<(Id, Id)>, Problem> {
    match a {
        [] => Ok(Vec::new()),
        [x] => match m.arena.get(*x) {
            Value::Dict(d) => Ok(d.items.clone()),
            // An empty iterable of any kind gives an empty mapping.
            Value::Bytes(b) | Value::ByteArray(b) if b.is_empty() => Ok(Vec::new()),
            Value::Str(s) if s.bytes.is_empty() => Ok(Vec::new()),
            Value::Set(v) | Value::FrozenSet(v) if v.is_empty() => Ok(Vec::new()),
            Value::List(v) | Value::Tuple(v) => v
                .iter()
                .map(|&p| match m.arena.seq_of(p) {
                    Some([k, v]) => Ok((*k, *v)),
                    _ => Err(malformed(format!(
                        "{}(...) of a sequence whose items are not pairs",
                        k.qualname()
                    ))),
                })
                .collect(),
            other => Err(unsupported(format!(
                "{}({})",
                k.qualname(),
                other.describe()
            ))),
        },
        _ => Err(malformed(format!(
            "{} takes at most 1 argument",
            k.qualname()
        ))),
    }
}

/// `Counter(iterable)`: each distinct element with its count, in the order
/// of first appearance. Only elements whose equality is plain byte equality
/// here (str, bytes, ints and bools, where `True == 1`) are counted; a float
/// (`1.0 == 1`) or a container is refused.
pub(super) fn counted(m: &mut Heap<'_, '_>, x: Id) -> Result<Vec<(Id, Id)>, Problem> {
    let elements = items_of(m, x, "collections.Counter", true)?;
    let mut index: HashMap<(u8, Vec<u8>), usize> = HashMap::new();
    let mut out: Vec<(Id, i64)> = Vec::new();
    for e in elements {
        let key = match m.arena.get(e) {
            Value::Str(s) => (0, s.bytes.to_vec()),
            Value::Bytes(b) => (1, b.to_vec()),
            Value::Int(i) => (2, i.to_le_bytes().to_vec()),
            Value::Bool(b) => (2, i64::from(*b).to_le_bytes().to_vec()),
            Value::BigInt(b) => (3, b.to_vec()),
            other => {
                return Err(unsupported(format!(
                    "collections.Counter counting {}",
                    other.describe()
                )))
            }
        };
        m.budget.charge_problem(key.1.len() as u64 + 16)?;
        match index.get(&key) {
            Some(&i) => out[i].1 += 1,
            None => {
                index.insert(key, out.len());
                out.push((e, 1));
            }
        }
    }
    out.into_iter()
        .map(|(e, n)| Ok((e, m.push_value(Value::Int(n))?)))
        .collect()
}

/// The digits `int(text)` reads (base 10), with the sign: CPython strips
/// whitespace and takes one `_` between two digits. Text with any non-ASCII
/// character (Unicode digits and spaces count there) is not read here.
pub(super) fn int_text(text: &str) -> Result<String, Problem> {
    if !text.is_ascii() {
        return Err(unsupported("int() of a str with non-ASCII characters"));
    }
    let t = text.trim_matches(|c: char| matches!(c, '\t'..='\r' | ' '));
    let (sign, digits) = match t.as_bytes().first() {
        Some(b'-') => ("-", &t[1..]),
        Some(b'+') => ("", &t[1..]),
        _ => ("", t),
    };
    let b = digits.as_bytes();
    let ok = !b.is_empty()
        && b.iter().enumerate().all(|(i, &c)| {
            c.is_ascii_digit()
                || (c == b'_'
                    && i > 0
                    && b[i - 1].is_ascii_digit()
                    && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        });
    if !ok {
        return Err(malformed("int() of a str that is not a decimal integer"));
    }
    Ok(format!("{sign}{}", digits.replace('_', "")))
}
