//! Scalars as text: sizes, big integers, floats, qualified names and
//! numpy scalars, as `inspect` prints them.

use super::*;

/// A human size: `512 B`, `1.5 KiB`.
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

/// Decimal text of a little-endian two's complement integer.
pub(crate) fn big_decimal(bytes: &[u8]) -> String {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        let mut carry = 1u16;
        for b in mag.iter_mut() {
            let v = u16::from(!*b) + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    if mag.len() > 512 {
        return format!("<{}-byte integer>", mag.len());
    }
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut().rev() {
            let v = (rem << 8) | u32::from(*b);
            *b = (v / 10) as u8;
            rem = v % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

pub(crate) fn float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:?}")
    }
}

pub(super) fn qualname(l: &Loaded<'_>, id: Id) -> String {
    match l.arena.get(id) {
        Value::Global(g) => match &**g {
            Global::Known(k) => k.qualname(),
            Global::Foreign { module, name } => format!("{module}.{name}"),
        },
        Value::Object(o) => format!("{}(...)", qualname(l, o.class)),
        other => other.describe(),
    }
}

pub(super) fn short_str(s: &str) -> String {
    let short: String = s.chars().take(60).collect();
    if short.len() < s.len() {
        format!("{short:?}... ({} chars)", s.chars().count())
    } else {
        format!("{s:?}")
    }
}

/// A numpy scalar's value, for the common little-endian types.
pub(super) fn np_scalar_text(dtype: &NpDtype, data: &[u8]) -> String {
    let le = |n: usize| -> Option<[u8; 8]> {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(data.get(..n)?);
        Some(b)
    };
    let value = match dtype {
        NpDtype::Scalar {
            kind,
            itemsize,
            order,
            ..
        } if *order != eval::ByteOrder::Big => match (kind, itemsize) {
            (b'f', 8) => le(8).map(|b| float(f64::from_le_bytes(b))),
            (b'f', 4) => data
                .get(..4)
                .map(|b| float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))),
            (b'i', n @ (1 | 2 | 4 | 8)) => le(*n as usize).map(|b| {
                let shift = 64 - 8 * *n as u32;
                ((i64::from_le_bytes(b) << shift) >> shift).to_string()
            }),
            (b'u', n @ (1 | 2 | 4 | 8)) => {
                le(*n as usize).map(|b| u64::from_le_bytes(b).to_string())
            }
            (b'b', 1) => data
                .first()
                .map(|&b| if b != 0 { "True" } else { "False" }.to_string()),
            _ => None,
        },
        _ => None,
    };
    match value {
        Some(v) => format!("numpy {}({v})", dtype.descr()),
        None => format!("numpy scalar {}", dtype.descr()),
    }
}

/// One-line text for nodes that are not containers.
pub(super) fn scalar(l: &Loaded<'_>, id: Id) -> Option<String> {
    Some(match l.arena.get(id) {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => big_decimal(b),
        Value::Float(f) => float(*f),
        Value::Complex(re, im) => format!("complex({}, {})", float(*re), float(*im)),
        Value::Str(s) => short_str(&s.lossy()),
        Value::Bytes(b) => format!("bytes[{}]", b.len()),
        Value::ByteArray(b) => format!("bytearray[{}]", b.len()),
        Value::Slice(s) => format!(
            "slice({}, {}, {})",
            scalar(l, s[0]).unwrap_or_else(|| "...".into()),
            scalar(l, s[1]).unwrap_or_else(|| "...".into()),
            scalar(l, s[2]).unwrap_or_else(|| "...".into())
        ),
        Value::Range(r) => format!(
            "range({}, {}, {})",
            scalar(l, r[0]).unwrap_or_else(|| "...".into()),
            scalar(l, r[1]).unwrap_or_else(|| "...".into()),
            scalar(l, r[2]).unwrap_or_else(|| "...".into())
        ),
        Value::Global(_) => qualname(l, id),
        Value::TorchDtype(d) => format!("torch.{}", d.name()),
        Value::TorchSize(d) => format!("torch.Size({d:?})"),
        Value::TorchDevice(d) => format!("torch.device({d:?})"),
        Value::TorchEnum(n) => format!("torch.{n}"),
        Value::Storage(s) => format!(
            "storage {} ({}, {})",
            s.index,
            s.dtype.name(),
            human(s.nbytes)
        ),
        Value::Tensor(t) => {
            let kind = if t.parameter { "Parameter" } else { "tensor" };
            let mut s = format!(
                "{kind} {} {:?} {}",
                t.dtype.name(),
                t.shape,
                human(t.nbytes())
            );
            let contiguous = contiguous(&t.shape, &t.stride);
            if !contiguous {
                s.push_str(&format!(" stride {:?}", t.stride));
            }
            if t.offset != 0 {
                s.push_str(&format!(" offset {}", t.offset));
            }
            match &t.storage {
                Some(v) => s.push_str(&format!(" (storage {})", v.index)),
                None => s.push_str(" (meta, no data)"),
            }
            if t.requires_grad {
                s.push_str(" requires_grad");
            }
            s
        }
        Value::Array(a) if !matches!(a.data, ArrayData::Objects(_)) => {
            let bytes = eval::array_nbytes(&a.shape, a.dtype.itemsize()).unwrap_or(0);
            format!(
                "ndarray {} {:?} {}{}",
                a.dtype.descr(),
                a.shape,
                human(bytes),
                if a.fortran { " fortran" } else { "" }
            )
        }
        Value::NpDtype(d) => format!("numpy.dtype({:?})", d.descr()),
        Value::NpScalar(s) => np_scalar_text(&s.dtype, &s.data),
        _ => return None,
    })
}
