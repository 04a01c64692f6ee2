//! NumPy `.npy` arrays (and, through [`super::zip`], `.npz` archives).
//!
//! Layout: `\x93NUMPY`, a major and minor version byte, the header length
//! (u16 LE for 1.0, u32 LE for 2.0 and 3.0), then the header: a Python dict
//! literal (latin-1 for 1.0/2.0, UTF-8 for 3.0) with exactly the keys
//! `descr`, `fortran_order` and `shape`. When the dtype the `descr` describes
//! holds Python objects anywhere (a plain `'O'`, a structured field or a
//! sub-array), `np.load(allow_pickle=True)` runs `pickle.load` on the bytes
//! after the header, so they are scanned as a pickle stream.

use super::pyliteral::{literal_eval, PyValue};
use super::{le_u16, le_u32, ContainerError, Loc, Scanner};
use crate::codes::FindingCode;
use crate::policy::Verdict;
use crate::streams::looks_like_pickle;

/// The magic string every `.npy` file starts with.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// Whether an array's dtype holds Python objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectDtype {
    No,
    Yes,
    /// The descr could not be interpreted.
    Unknown,
}

impl ObjectDtype {
    fn or(self, other: ObjectDtype) -> ObjectDtype {
        match (self, other) {
            (ObjectDtype::Yes, _) | (_, ObjectDtype::Yes) => ObjectDtype::Yes,
            (ObjectDtype::Unknown, _) | (_, ObjectDtype::Unknown) => ObjectDtype::Unknown,
            _ => ObjectDtype::No,
        }
    }
}

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    pub major: u8,
    pub minor: u8,
    /// Offset of the array data (or the pickle stream for object arrays).
    pub data_offset: usize,
    pub object: ObjectDtype,
    /// Why numpy would reject the header, when it would.
    pub problem: Option<String>,
    /// The header dict as numpy's `_read_array_header` reads it (Python 2
    /// `L` suffixes dropped the way its `_filter_header` drops them); the
    /// evaluator takes the array's dtype, shape and order from here, so it
    /// and the scanner never read one header two ways.
    pub dict: Option<PyValue>,
}

/// Reads the header. An error means the header cannot even be located; a
/// header numpy would reject is returned with `problem` set.
pub fn parse_header(data: &[u8]) -> Result<NpyHeader, ContainerError> {
    if !data.starts_with(MAGIC) {
        return Err(ContainerError::BadSignature {
            what: "npy",
            offset: 0,
        });
    }
    let (Some(&major), Some(&minor)) = (data.get(6), data.get(7)) else {
        return Err(ContainerError::Truncated {
            what: "npy version",
            offset: 6,
            needed: 2u64.saturating_sub(data.len().saturating_sub(6) as u64),
        });
    };
    let (len, start, utf8) = match (major, minor) {
        (1, 0) => (le_u16(data, 8).map(usize::from), 10usize, false),
        (2, 0) | (3, 0) => (
            le_u32(data, 8).and_then(|n| usize::try_from(n).ok()),
            12,
            major == 3,
        ),
        _ => {
            return Err(ContainerError::Malformed {
                what: "npy",
                offset: 6,
                reason: format!("unsupported format version {major}.{minor}"),
            })
        }
    };
    let Some(len) = len else {
        return Err(ContainerError::Truncated {
            what: "npy header length",
            offset: 8,
            needed: (start as u64).saturating_sub(data.len() as u64),
        });
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= data.len())
        .ok_or_else(|| ContainerError::Truncated {
            what: "npy header",
            offset: start as u64,
            needed: (start as u64 + len as u64).saturating_sub(data.len() as u64),
        })?;
    let raw = &data[start..end];
    let mut header = NpyHeader {
        major,
        minor,
        data_offset: end,
        object: ObjectDtype::Unknown,
        problem: None,
        dict: None,
    };
    let text = if utf8 {
        match std::str::from_utf8(raw) {
            Ok(t) => t.to_string(),
            Err(_) => {
                header.problem = Some("the version 3.0 header is not UTF-8".into());
                return Ok(header);
            }
        }
    } else {
        raw.iter().map(|&b| b as char).collect()
    };
    let dict = match literal_eval(&text).or_else(|e| {
        // numpy drops Python 2 long suffixes from 1.0/2.0 headers and retries.
        if major <= 2 {
            literal_eval(&strip_long_suffixes(&text))
        } else {
            Err(e)
        }
    }) {
        Ok(v) => v,
        Err(e) => {
            header.problem = Some(format!("the header is not a Python literal: {e}"));
            return Ok(header);
        }
    };
    let PyValue::Dict(items) = &dict else {
        header.problem = Some("the header is not a dict".into());
        return Ok(header);
    };
    let mut keys: Vec<&str> = items
        .iter()
        .map(|(k, _)| match k {
            PyValue::Str(s) => s.as_str(),
            _ => "?",
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys != ["descr", "fortran_order", "shape"] {
        header.problem = Some(format!(
            "the header has the keys {keys:?}, not descr, fortran_order and shape"
        ));
    }
    match dict.get("shape") {
        Some(PyValue::Tuple(dims)) if dims.iter().all(PyValue::is_int) => {}
        _ if header.problem.is_some() => {}
        _ => header.problem = Some("shape is not a tuple of ints".into()),
    }
    if !matches!(dict.get("fortran_order"), Some(PyValue::Bool(_))) && header.problem.is_none() {
        header.problem = Some("fortran_order is not a bool".into());
    }
    header.object = match dict.get("descr") {
        Some(d) => descr_object(d, 0),
        None => ObjectDtype::Unknown,
    };
    if header.object == ObjectDtype::Unknown && header.problem.is_none() {
        header.problem = Some("the descr is not a dtype description hermetic understands".into());
    }
    header.dict = Some(dict);
    Ok(header)
}

/// Removes the `L` after integer digits, as numpy's `_filter_header` does.
fn strip_long_suffixes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let after_digit = i > 0 && chars[i - 1].is_ascii_digit();
        let word_end = chars.get(i + 1).is_none_or(|n| !n.is_alphanumeric());
        if c == 'L' && after_digit && word_end {
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether `numpy.lib.format.descr_to_dtype(descr)` gives a dtype with objects.
fn descr_object(descr: &PyValue, depth: usize) -> ObjectDtype {
    if depth > 32 {
        return ObjectDtype::Unknown;
    }
    match descr {
        PyValue::Str(s) => str_object(s),
        // (base descr, shape): a sub-array.
        PyValue::Tuple(items) => match items.first() {
            Some(base) => descr_object(base, depth + 1),
            None => ObjectDtype::Unknown,
        },
        PyValue::List(fields) => fields.iter().fold(ObjectDtype::No, |acc, field| {
            let part = match field {
                PyValue::Tuple(f) | PyValue::List(f) if f.len() == 2 || f.len() == 3 => {
                    descr_object(&f[1], depth + 1)
                }
                // A two- or three-character string is unpacked into (name, descr[, shape]).
                PyValue::Str(s) if matches!(s.chars().count(), 2 | 3) => {
                    str_object(&s.chars().nth(1).map(String::from).unwrap_or_default())
                }
                _ => ObjectDtype::Unknown,
            };
            acc.or(part)
        }),
        _ => ObjectDtype::Unknown,
    }
}

/// Whether `numpy.dtype(s).hasobject`, for a string descr: `Yes` when the
/// string names the object type (`O`, `|O`, `O8`, `object`, `'i4,O'`) or
/// numpy 2's variable-width string type (`T`, StringDType, which numpy
/// saves by pickling too); `No` only for the spellings of plain types
/// numpy writes and reads (`<f8`, `|b1`, `<U5`, `<M8[ns]`, `(2,)<i4`,
/// comma-separated lists of them, `float32` ...); anything else is
/// `Unknown`, never taken for a plain array.
fn str_object(s: &str) -> ObjectDtype {
    if s.contains('O') || s.contains('T') || s.to_ascii_lowercase().contains("object") {
        ObjectDtype::Yes
    } else if top_level_parts(s).iter().all(|p| is_plain_type(p)) {
        ObjectDtype::No
    } else {
        ObjectDtype::Unknown
    }
}

/// `'i4,(2,3)f8'` split at the commas outside parentheses.
fn top_level_parts(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// One plain dtype spelling: `[(shape)][byte order]code[size][[unit]]`, or
/// a sized alias such as `float64`.
fn is_plain_type(s: &str) -> bool {
    let s = s.trim();
    // An optional sub-array shape: `(2,)`, `(2, 3)`.
    let s = match s.strip_prefix('(') {
        Some(rest) => match rest.split_once(')') {
            Some((dims, tail))
                if dims.split(',').all(|d| {
                    d.trim().is_empty() || d.trim().bytes().all(|b| b.is_ascii_digit())
                }) =>
            {
                tail.trim_start()
            }
            _ => return false,
        },
        None => s,
    };
    const ALIASES: &[&str] = &[
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        "bytes",
        "str",
    ];
    if ALIASES.contains(&s) {
        return true;
    }
    let s = s.strip_prefix(['<', '>', '|', '=']).unwrap_or(s);
    let mut chars = s.chars();
    let Some(code) = chars.next() else {
        return false;
    };
    if !"?bBhHiIlLqQpPefdgFDGSUVamMcu".contains(code) {
        return false;
    }
    let rest = chars.as_str();
    let digits = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    match digits {
        "" => true,
        unit if matches!(code, 'M' | 'm') => unit
            .strip_prefix('[')
            .and_then(|u| u.strip_suffix(']'))
            .is_some_and(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric())),
        _ => false,
    }
}

/// Scans a `.npy` array: the pickle payload of object arrays; nothing for
/// plain arrays.
pub(crate) fn scan_npy(data: &[u8], loc: &Loc, sc: &mut Scanner<'_>) -> String {
    let header = match parse_header(data) {
        Ok(h) => h,
        Err(e) => {
            sc.finding(
                loc,
                Verdict::Suspicious,
                FindingCode::MalformedContainer,
                e.offset(),
                format!("npy header unreadable: {e}"),
            );
            return "npy".into();
        }
    };
    if let Some(problem) = &header.problem {
        sc.finding(
            loc,
            Verdict::Suspicious,
            FindingCode::MalformedContainer,
            8,
            format!("npy header numpy would reject or hermetic cannot interpret: {problem}"),
        );
    }
    let payload = header.data_offset;
    let scan = match header.object {
        ObjectDtype::Yes => true,
        ObjectDtype::No => false,
        ObjectDtype::Unknown => looks_like_pickle(&data[payload..]),
    };
    if scan {
        sc.single_stream(data, payload, loc, &loc.named("payload"));
    }
    "npy".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{scan_bytes, Limits, Policy};

    pub(crate) fn npy(descr: &str, payload: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2,), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut d = MAGIC.to_vec();
        d.extend_from_slice(&[1, 0]);
        d.extend_from_slice(&(header.len() as u16).to_le_bytes());
        d.extend_from_slice(header.as_bytes());
        d.extend_from_slice(payload);
        d
    }

    fn scan(d: &[u8]) -> crate::FileReport {
        scan_bytes(d, "t", &Policy::default(), &Limits::default())
    }

    const EVIL: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.";

    #[test]
    fn float_array_has_no_stream() {
        let r = scan(&npy("'<f8'", &[0; 16]));
        assert_eq!(r.format, "npy");
        assert!(r.streams.is_empty());
        assert_eq!(r.verdict, Verdict::Safe);
    }

    /// StringDType (`T`) arrays are saved by pickling, like object arrays;
    /// a spelling hermetic does not know is never taken for a plain array.
    #[test]
    fn string_dtype_and_unknown_spellings_are_not_plain() {
        for descr in ["'T'", "'<T'", "[('a', 'T')]", "'(2,)O'"] {
            let r = scan(&npy(descr, EVIL));
            assert_eq!(r.verdict, Verdict::Dangerous, "{descr}: {r:?}");
        }
        for descr in [
            "'<f8'",
            "'|b1'",
            "'<U5'",
            "'<M8[ns]'",
            "'(2,3)<i4'",
            "'i4,f8'",
            "'float32'",
        ] {
            let r = scan(&npy(descr, &[0; 16]));
            assert_eq!(r.verdict, Verdict::Safe, "{descr}: {r:?}");
        }
        let r = scan(&npy("'x9'", &[0; 16]));
        assert_ne!(r.verdict, Verdict::Safe, "{r:?}");
    }

    #[test]
    fn object_arrays_are_scanned() {
        for descr in [
            "'|O'",
            "[('x', '<f8'), ('y', '|O')]",
            "('|O', (2,))",
            "[('a', [('b', 'O')])]",
            "'i4,O'",
        ] {
            let d = npy(descr, EVIL);
            let r = scan(&d);
            assert_eq!(r.streams.len(), 1, "{descr}");
            assert_eq!(r.streams[0].name, "payload");
            assert_eq!(r.verdict, Verdict::Dangerous, "{descr}");
            let off = r.streams[0].offset as usize;
            assert_eq!(&d[off..off + 2], b"\x80\x02");
        }
    }

    #[test]
    fn structured_names_are_not_dtypes() {
        let r = scan(&npy("[('Occupancy', '<f8')]", &[0; 16]));
        assert!(r.streams.is_empty());
        assert_eq!(r.verdict, Verdict::Safe);
    }

    #[test]
    fn versions_2_and_3() {
        for major in [2u8, 3] {
            let header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n";
            let mut d = MAGIC.to_vec();
            d.extend_from_slice(&[major, 0]);
            d.extend_from_slice(&(header.len() as u32).to_le_bytes());
            d.extend_from_slice(header.as_bytes());
            d.extend_from_slice(EVIL);
            let r = scan(&d);
            assert_eq!(r.verdict, Verdict::Dangerous);
            assert_eq!(r.streams.len(), 1);
        }
    }

    #[test]
    fn malformed_headers_are_suspicious() {
        let r = scan(&npy("__import__('os')", &[0; 16]));
        assert!(r.findings.iter().any(
            |f| f.code == FindingCode::MalformedContainer && f.severity == Verdict::Suspicious
        ));
        assert!(r.streams.is_empty());
        // Unknown descr followed by a pickle: scanned conservatively.
        let r = scan(&npy("__import__('os')", EVIL));
        assert_eq!(r.verdict, Verdict::Dangerous);
        // Truncated header length.
        let r = scan(b"\x93NUMPY\x01\x00\xff\xff{");
        assert_eq!(r.format, "npy");
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == FindingCode::MalformedContainer));
        let r = scan(b"\x93NUMPY\x09\x00");
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == FindingCode::MalformedContainer));
    }

    #[test]
    fn python2_long_suffix() {
        let h = "{'descr': '|O', 'fortran_order': False, 'shape': (2L,), }";
        let mut d = MAGIC.to_vec();
        d.extend_from_slice(&[1, 0]);
        d.extend_from_slice(&(h.len() as u16).to_le_bytes());
        d.extend_from_slice(h.as_bytes());
        let p = parse_header(&d).unwrap();
        assert_eq!(p.problem, None);
        assert_eq!(p.object, ObjectDtype::Yes);
    }
}
