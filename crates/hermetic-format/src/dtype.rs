//! Element types. A hermetic dtype code names how one element is laid out in
//! memory; the safetensors codes are a subset, and the others are stored as
//! `U8` entries with a trailing dimension of the element size.

use std::fmt;

/// An element type of a tensor or array view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    BF16,
    F32,
    F64,
    C64,
    F8E4M3,
    F8E4M3Fnuz,
    F8E5M2,
    F8E5M2Fnuz,
    /// complex128 (two F64).
    C128,
    /// complex32 (two F16), torch's `chalf`.
    C32,
    /// float8_e8m0fnu.
    F8E8M0,
    /// float4_e2m1fn_x2: two 4-bit floats packed in one byte.
    F4E2M1X2,
    /// torch's `bits1x8`, `bits2x4`, `bits4x2`, `bits8` and `bits16`.
    Bits1x8,
    Bits2x4,
    Bits4x2,
    Bits8,
    Bits16,
    /// An opaque element of this many bytes (numpy strings, structured
    /// records, long doubles); the numpy dtype comes from the view's `np_dtype`.
    Raw(u32),
}

/// The largest opaque element size a reader accepts.
pub const MAX_RAW_ITEMSIZE: u32 = 1 << 20;

const NAMED: &[(Dtype, &str)] = &[
    (Dtype::Bool, "BOOL"),
    (Dtype::U8, "U8"),
    (Dtype::I8, "I8"),
    (Dtype::U16, "U16"),
    (Dtype::I16, "I16"),
    (Dtype::U32, "U32"),
    (Dtype::I32, "I32"),
    (Dtype::U64, "U64"),
    (Dtype::I64, "I64"),
    (Dtype::F16, "F16"),
    (Dtype::BF16, "BF16"),
    (Dtype::F32, "F32"),
    (Dtype::F64, "F64"),
    (Dtype::C64, "C64"),
    (Dtype::F8E4M3, "F8_E4M3"),
    (Dtype::F8E4M3Fnuz, "F8_E4M3FNUZ"),
    (Dtype::F8E5M2, "F8_E5M2"),
    (Dtype::F8E5M2Fnuz, "F8_E5M2FNUZ"),
    (Dtype::C128, "C128"),
    (Dtype::C32, "C32"),
    (Dtype::F8E8M0, "F8_E8M0"),
    (Dtype::F4E2M1X2, "F4_E2M1_X2"),
    (Dtype::Bits1x8, "BITS1X8"),
    (Dtype::Bits2x4, "BITS2X4"),
    (Dtype::Bits4x2, "BITS4X2"),
    (Dtype::Bits8, "BITS8"),
    (Dtype::Bits16, "BITS16"),
];

/// The names a `$torch_dtype` node may hold (docs/SPEC.md, 6.2): the
/// canonical name of every torch dtype (`str(dtype)` without `torch.`), then
/// the aliases torch also defines. A closed table: a reader resolves a name
/// only through it, never by looking the name up in `torch`.
pub const TORCH_DTYPE_NAMES: &[&str] = &[
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex32",
    "complex64",
    "complex128",
    "bcomplex32",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    // Aliases (`torch.float is torch.float32`).
    "half",
    "float",
    "double",
    "chalf",
    "cfloat",
    "cdouble",
    "short",
    "int",
    "long",
];

/// The device types a `$torch_device` node may name (docs/SPEC.md, 6.2):
/// those torch's own device-string parser accepts, in its order.
pub const TORCH_DEVICE_TYPES: &[&str] = &[
    "cpu",
    "cuda",
    "ipu",
    "xpu",
    "mkldnn",
    "opengl",
    "opencl",
    "ideep",
    "hip",
    "ve",
    "fpga",
    "maia",
    "xla",
    "lazy",
    "vulkan",
    "mps",
    "meta",
    "hpu",
    "mtia",
    "privateuseone",
];

/// The dtype code of each native numpy scalar type the format stores as
/// itself, by numpy's kind letter and item size (`"f4"` is float32): the one
/// table, also what `hermetic.save` reads numpy arrays with.
pub const NUMPY_CODES: &[(&str, &str)] = &[
    ("b1", "BOOL"),
    ("u1", "U8"),
    ("i1", "I8"),
    ("u2", "U16"),
    ("i2", "I16"),
    ("u4", "U32"),
    ("i4", "I32"),
    ("u8", "U64"),
    ("i8", "I64"),
    ("f2", "F16"),
    ("f4", "F32"),
    ("f8", "F64"),
    ("c8", "C64"),
    ("c16", "C128"),
];

/// The dtype code of numpy's `kind` (its letter) at `itemsize` bytes, from
/// [`NUMPY_CODES`].
pub fn numpy_code(kind: u8, itemsize: u64) -> Option<&'static str> {
    let key = format!("{}{itemsize}", char::from(kind));
    NUMPY_CODES.iter().find(|(k, _)| *k == key).map(|(_, c)| *c)
}

/// Whether `name` is in [`TORCH_DTYPE_NAMES`].
pub fn is_torch_dtype_name(name: &str) -> bool {
    TORCH_DTYPE_NAMES.contains(&name)
}

/// Whether `text` is a device as `str(torch.device)` writes it: a type from
/// [`TORCH_DEVICE_TYPES`], optionally `:` and an index (decimal digits, no
/// sign, no leading zero, below 2^31).
pub fn is_torch_device(text: &str) -> bool {
    let (ty, index) = match text.split_once(':') {
        Some((t, i)) => (t, Some(i)),
        None => (text, None),
    };
    let index_ok = match index {
        None => true,
        Some(i) => {
            !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && (i == "0" || !i.starts_with('0'))
                && i.parse::<i32>().is_ok()
        }
    };
    index_ok && TORCH_DEVICE_TYPES.contains(&ty)
}

impl Dtype {
    /// Parses a code (`"F32"`, `"RAW12"`, ...). `None` for anything else.
    pub fn parse(code: &str) -> Option<Dtype> {
        if let Some(n) = code.strip_prefix("RAW") {
            // Digits only, no sign, no leading zero.
            if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u32 = n.parse().ok()?;
            return (n <= MAX_RAW_ITEMSIZE).then_some(Dtype::Raw(n));
        }
        NAMED.iter().find(|(_, c)| *c == code).map(|(d, _)| *d)
    }

    /// The code written to files.
    pub fn code(&self) -> String {
        match self {
            Dtype::Raw(n) => format!("RAW{n}"),
            d => NAMED
                .iter()
                .find(|(x, _)| x == d)
                .map(|(_, c)| (*c).to_string())
                .unwrap_or_default(),
        }
    }

    /// Bytes per element.
    pub fn itemsize(&self) -> u64 {
        match self {
            Dtype::Bool
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8E4M3
            | Dtype::F8E4M3Fnuz
            | Dtype::F8E5M2
            | Dtype::F8E5M2Fnuz
            | Dtype::F8E8M0
            | Dtype::F4E2M1X2
            | Dtype::Bits1x8
            | Dtype::Bits2x4
            | Dtype::Bits4x2
            | Dtype::Bits8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 | Dtype::Bits16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 | Dtype::C32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 | Dtype::C64 => 8,
            Dtype::C128 => 16,
            Dtype::Raw(n) => u64::from(*n),
        }
    }

    /// The alignment a zero-copy view of this dtype wants: the element size
    /// rounded down to a power of two, at most 16.
    pub fn alignment(&self) -> u64 {
        let n = self.itemsize().min(16);
        1 << (63 - n.leading_zeros())
    }

    /// The matching safetensors dtype, when every safetensors reader knows it
    /// (the 18 codes `safetensors.torch` maps). Others are stored as `U8`.
    pub fn safetensors(&self) -> Option<safetensors::Dtype> {
        use safetensors::Dtype as S;
        Some(match self {
            Dtype::Bool => S::BOOL,
            Dtype::U8 => S::U8,
            Dtype::I8 => S::I8,
            Dtype::U16 => S::U16,
            Dtype::I16 => S::I16,
            Dtype::U32 => S::U32,
            Dtype::I32 => S::I32,
            Dtype::U64 => S::U64,
            Dtype::I64 => S::I64,
            Dtype::F16 => S::F16,
            Dtype::BF16 => S::BF16,
            Dtype::F32 => S::F32,
            Dtype::F64 => S::F64,
            Dtype::C64 => S::C64,
            Dtype::F8E4M3 => S::F8_E4M3,
            Dtype::F8E4M3Fnuz => S::F8_E4M3FNUZ,
            Dtype::F8E5M2 => S::F8_E5M2,
            Dtype::F8E5M2Fnuz => S::F8_E5M2FNUZ,
            _ => return None,
        })
    }

    /// The hermetic dtype of a safetensors entry dtype, when it has whole-byte
    /// elements (F4 and F6 pack several elements per byte and have none).
    pub fn from_safetensors(d: safetensors::Dtype) -> Option<Dtype> {
        use safetensors::Dtype as S;
        Some(match d {
            S::BOOL => Dtype::Bool,
            S::U8 => Dtype::U8,
            S::I8 => Dtype::I8,
            S::U16 => Dtype::U16,
            S::I16 => Dtype::I16,
            S::U32 => Dtype::U32,
            S::I32 => Dtype::I32,
            S::U64 => Dtype::U64,
            S::I64 => Dtype::I64,
            S::F16 => Dtype::F16,
            S::BF16 => Dtype::BF16,
            S::F32 => Dtype::F32,
            S::F64 => Dtype::F64,
            S::C64 => Dtype::C64,
            S::F8_E4M3 => Dtype::F8E4M3,
            S::F8_E4M3FNUZ => Dtype::F8E4M3Fnuz,
            S::F8_E5M2 => Dtype::F8E5M2,
            S::F8_E5M2FNUZ => Dtype::F8E5M2Fnuz,
            S::F8_E8M0 => Dtype::F8E8M0,
            _ => return None,
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for (d, c) in NAMED {
            assert_eq!(Dtype::parse(c), Some(*d));
            assert_eq!(d.code(), *c);
        }
        assert_eq!(Dtype::parse("RAW12"), Some(Dtype::Raw(12)));
        for bad in [
            "RAW",
            "RAW0",
            "RAW012",
            "RAW-1",
            "RAW99999999999",
            "f32",
            "F32 ",
        ] {
            assert_eq!(Dtype::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn torch_names_are_a_closed_table() {
        for ok in ["float32", "bfloat16", "float", "long", "uint7"] {
            assert!(is_torch_dtype_name(ok), "{ok}");
        }
        for bad in [
            "",
            "_inductor",
            "_dynamo",
            "onnx",
            "nn",
            "dtype",
            "__class__",
            "float32.x",
            "Float32",
            "float32 ",
        ] {
            assert!(!is_torch_dtype_name(bad), "{bad}");
        }
        for ok in ["cpu", "cuda:0", "cuda:12", "meta", "privateuseone:1"] {
            assert!(is_torch_device(ok), "{ok}");
        }
        for bad in [
            "",
            "cuda:",
            "cuda:-1",
            "cuda:01",
            "cuda:99999999999",
            "npu:0",
            "CUDA",
            "cuda:0:1",
            "_inductor",
            "cpu ",
        ] {
            assert!(!is_torch_device(bad), "{bad}");
        }
    }

    #[test]
    fn alignment_is_a_power_of_two() {
        assert_eq!(Dtype::Raw(12).alignment(), 8);
        assert_eq!(Dtype::C128.alignment(), 16);
        assert_eq!(Dtype::Raw(40).alignment(), 16);
        assert_eq!(Dtype::BF16.alignment(), 2);
    }
}
