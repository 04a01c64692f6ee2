//! Element types: numpy dtypes (scalars, records, sub-arrays), the array and
//! scalar payloads they describe, and torch's closed dtype table.

use super::Id;
use std::borrow::Cow;

/// Byte order of a numpy dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    Little,
    Big,
    /// `|`: single bytes, strings, records.
    NotApplicable,
}

impl ByteOrder {
    pub fn char(self) -> char {
        match self {
            ByteOrder::Little => '<',
            ByteOrder::Big => '>',
            ByteOrder::NotApplicable => '|',
        }
    }
}

/// One field of a structured numpy dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct NpField {
    pub name: String,
    pub dtype: NpDtype,
    pub offset: u64,
    pub title: Option<String>,
}

/// A numpy dtype, as much of it as data needs.
#[derive(Clone, Debug, PartialEq)]
pub enum NpDtype {
    /// A scalar type: kind is numpy's `dtype.kind` (`b i u f c S U V O M m`),
    /// `itemsize` in bytes; `unit` is the datetime unit and multiplier.
    Scalar {
        kind: u8,
        itemsize: u64,
        order: ByteOrder,
        unit: Option<(String, i64)>,
    },
    Record {
        fields: Vec<NpField>,
        itemsize: u64,
        aligned: bool,
    },
    SubArray {
        base: Box<NpDtype>,
        shape: Vec<u64>,
    },
}

/// How deep structured and sub-array dtypes may nest.
pub const MAX_DTYPE_DEPTH: usize = 32;

impl NpDtype {
    pub fn itemsize(&self) -> u64 {
        match self {
            NpDtype::Scalar { itemsize, .. } | NpDtype::Record { itemsize, .. } => *itemsize,
            NpDtype::SubArray { base, shape } => shape
                .iter()
                .fold(base.itemsize(), |a, &d| a.saturating_mul(d)),
        }
    }

    /// Whether any part of it holds Python objects.
    pub fn has_object(&self) -> bool {
        match self {
            NpDtype::Scalar { kind, .. } => *kind == b'O',
            NpDtype::Record { fields, .. } => fields.iter().any(|f| f.dtype.has_object()),
            NpDtype::SubArray { base, .. } => base.has_object(),
        }
    }

    /// Whether every part is little-endian or has no byte order (what
    /// `joblib.load` leaves as it is on the machines hermetic runs on).
    pub fn native_order(&self) -> bool {
        match self {
            NpDtype::Scalar { order, .. } => *order != ByteOrder::Big,
            NpDtype::Record { fields, .. } => fields.iter().all(|f| f.dtype.native_order()),
            NpDtype::SubArray { base, .. } => base.native_order(),
        }
    }

    /// The object dtype.
    pub fn object() -> NpDtype {
        NpDtype::Scalar {
            kind: b'O',
            itemsize: 8,
            order: ByteOrder::NotApplicable,
            unit: None,
        }
    }

    /// numpy's `dtype.str` for scalar types (`<f8`, `|b1`, `<M8[ns]`), or
    /// `dtype.descr`-style text for others.
    pub fn descr(&self) -> String {
        match self {
            NpDtype::Scalar {
                kind,
                itemsize,
                order,
                unit,
            } => {
                let size = if *kind == b'U' {
                    *itemsize / 4
                } else {
                    *itemsize
                };
                let mut s = format!("{}{}{}", order.char(), *kind as char, size);
                if let Some((u, n)) = unit {
                    if *n == 1 {
                        s.push_str(&format!("[{u}]"));
                    } else {
                        s.push_str(&format!("[{n}{u}]"));
                    }
                }
                s
            }
            NpDtype::Record { fields, .. } => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|f| format!("({:?}, {})", f.name, f.dtype.descr()))
                    .collect();
                format!("[{}]", parts.join(", "))
            }
            NpDtype::SubArray { base, shape } => format!("({}, {:?})", base.descr(), shape),
        }
    }

    /// The nesting depth.
    pub fn depth(&self) -> usize {
        match self {
            NpDtype::Scalar { .. } => 1,
            NpDtype::Record { fields, .. } => {
                1 + fields.iter().map(|f| f.dtype.depth()).max().unwrap_or(0)
            }
            NpDtype::SubArray { base, .. } => 1 + base.depth(),
        }
    }

    /// The element size a byte swap works on: the itemsize for integers and
    /// floats, half of it for complex numbers, none for everything else.
    pub fn swap_unit(&self) -> Option<u64> {
        match self {
            NpDtype::Scalar { kind, itemsize, .. } => match kind {
                b'i' | b'u' | b'f' | b'M' | b'm' if *itemsize > 1 => Some(*itemsize),
                b'c' => Some(*itemsize / 2),
                b'U' => Some(4),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The data of a numpy array.
#[derive(Clone, Debug, PartialEq)]
pub enum ArrayData<'a> {
    /// Made by `_reconstruct`, waiting for `__setstate__`.
    Pending,
    /// A joblib `NumpyArrayWrapper`: `None` until its BUILD, then whether a
    /// padding byte (joblib >= 1.2's alignment) precedes the inline bytes.
    Joblib(Option<bool>),
    /// Raw bytes in C order (or Fortran order when `fortran`).
    Bytes(Cow<'a, [u8]>),
    /// The items of an object array, in C order.
    Objects(Vec<Id>),
}

/// A numpy `ndarray`.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray<'a> {
    /// numpy's WRITEABLE flag cleared: `_frombuffer` of bytes (not a
    /// bytearray) gives a read-only array.
    pub readonly: bool,
    pub dtype: NpDtype,
    pub shape: Vec<u64>,
    pub fortran: bool,
    pub data: ArrayData<'a>,
}

impl NdArray<'_> {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A numpy scalar (`np.float64(2.5)`): its dtype and raw bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NpScalar<'a> {
    pub dtype: NpDtype,
    pub data: Cow<'a, [u8]>,
}

macro_rules! torch_dtypes {
    ($( $variant:ident = $name:literal, $size:literal, $code:literal, $swap:literal; )*) => {
        /// A torch element type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum TorchDtype { $($variant,)* }

        impl TorchDtype {
            /// Every dtype.
            pub const ALL: &'static [TorchDtype] = &[$(TorchDtype::$variant,)*];

            /// The canonical name in `torch` (`str(dtype)` without `torch.`).
            pub const fn name(self) -> &'static str {
                match self { $(TorchDtype::$variant => $name,)* }
            }

            /// Bytes per element.
            pub const fn itemsize(self) -> u64 {
                match self { $(TorchDtype::$variant => $size,)* }
            }

            /// The hermetic/safetensors dtype code (docs/SPEC.md); empty when
            /// the format has none.
            pub const fn format_code(self) -> &'static str {
                match self { $(TorchDtype::$variant => $code,)* }
            }

            /// Bytes a byte swap reverses at a time (complex numbers swap
            /// each half; single bytes never swap).
            pub const fn swap_unit(self) -> u64 {
                match self { $(TorchDtype::$variant => $swap,)* }
            }
        }
    };
}

torch_dtypes! {
    Float32 = "float32", 4, "F32", 4;
    Float64 = "float64", 8, "F64", 8;
    Float16 = "float16", 2, "F16", 2;
    BFloat16 = "bfloat16", 2, "BF16", 2;
    Complex32 = "complex32", 4, "C32", 2;
    Complex64 = "complex64", 8, "C64", 4;
    Complex128 = "complex128", 16, "C128", 8;
    BComplex32 = "bcomplex32", 4, "", 2;
    Bool = "bool", 1, "BOOL", 1;
    UInt8 = "uint8", 1, "U8", 1;
    Int8 = "int8", 1, "I8", 1;
    Int16 = "int16", 2, "I16", 2;
    Int32 = "int32", 4, "I32", 4;
    Int64 = "int64", 8, "I64", 8;
    UInt16 = "uint16", 2, "U16", 2;
    UInt32 = "uint32", 4, "U32", 4;
    UInt64 = "uint64", 8, "U64", 8;
    Float8E4M3Fn = "float8_e4m3fn", 1, "F8_E4M3", 1;
    Float8E5M2 = "float8_e5m2", 1, "F8_E5M2", 1;
    Float8E4M3Fnuz = "float8_e4m3fnuz", 1, "F8_E4M3FNUZ", 1;
    Float8E5M2Fnuz = "float8_e5m2fnuz", 1, "F8_E5M2FNUZ", 1;
    Float8E8M0Fnu = "float8_e8m0fnu", 1, "F8_E8M0", 1;
    Float4E2M1FnX2 = "float4_e2m1fn_x2", 1, "F4_E2M1_X2", 1;
    QInt8 = "qint8", 1, "", 1;
    QUInt8 = "quint8", 1, "", 1;
    QInt32 = "qint32", 4, "", 4;
    QUInt4x2 = "quint4x2", 1, "", 1;
    QUInt2x4 = "quint2x4", 1, "", 1;
    Bits1x8 = "bits1x8", 1, "BITS1X8", 1;
    Bits2x4 = "bits2x4", 1, "BITS2X4", 1;
    Bits4x2 = "bits4x2", 1, "BITS4X2", 1;
    Bits8 = "bits8", 1, "BITS8", 1;
    Bits16 = "bits16", 2, "BITS16", 2;
    Int1 = "int1", 1, "", 1;
    Int2 = "int2", 1, "", 1;
    Int3 = "int3", 1, "", 1;
    Int4 = "int4", 1, "", 1;
    Int5 = "int5", 1, "", 1;
    Int6 = "int6", 1, "", 1;
    Int7 = "int7", 1, "", 1;
    UInt1 = "uint1", 1, "", 1;
    UInt2 = "uint2", 1, "", 1;
    UInt3 = "uint3", 1, "", 1;
    UInt4 = "uint4", 1, "", 1;
    UInt5 = "uint5", 1, "", 1;
    UInt6 = "uint6", 1, "", 1;
    UInt7 = "uint7", 1, "", 1;
}

impl TorchDtype {
    /// The dtype an attribute of `torch` names, aliases included
    /// (`torch.float` is `float32`).
    pub fn from_attr(name: &str) -> Option<TorchDtype> {
        let canonical = match name {
            "float" => "float32",
            "double" => "float64",
            "half" => "float16",
            "cfloat" => "complex64",
            "cdouble" => "complex128",
            "chalf" => "complex32",
            "long" => "int64",
            "int" => "int32",
            "short" => "int16",
            other => other,
        };
        TorchDtype::ALL
            .iter()
            .copied()
            .find(|d| d.name() == canonical)
    }

    /// The dtype of a legacy storage class name (`FloatStorage`), as
    /// `torch.storage._get_dtype_from_pickle_storage_type` maps them.
    pub fn from_storage_class(name: &str) -> Option<TorchDtype> {
        Some(match name {
            "DoubleStorage" => TorchDtype::Float64,
            "FloatStorage" => TorchDtype::Float32,
            "HalfStorage" => TorchDtype::Float16,
            "LongStorage" => TorchDtype::Int64,
            "IntStorage" => TorchDtype::Int32,
            "ShortStorage" => TorchDtype::Int16,
            "CharStorage" => TorchDtype::Int8,
            "ByteStorage" => TorchDtype::UInt8,
            "BoolStorage" => TorchDtype::Bool,
            "BFloat16Storage" => TorchDtype::BFloat16,
            "ComplexDoubleStorage" => TorchDtype::Complex128,
            "ComplexFloatStorage" => TorchDtype::Complex64,
            "QInt8Storage" => TorchDtype::QInt8,
            "QInt32Storage" => TorchDtype::QInt32,
            "QUInt8Storage" => TorchDtype::QUInt8,
            "QUInt4x2Storage" => TorchDtype::QUInt4x2,
            "QUInt2x4Storage" => TorchDtype::QUInt2x4,
            _ => return None,
        })
    }

    /// The legacy storage class of this dtype, or `UntypedStorage`.
    pub fn storage_class(self) -> &'static str {
        match self {
            TorchDtype::Float64 => "DoubleStorage",
            TorchDtype::Float32 => "FloatStorage",
            TorchDtype::Float16 => "HalfStorage",
            TorchDtype::Int64 => "LongStorage",
            TorchDtype::Int32 => "IntStorage",
            TorchDtype::Int16 => "ShortStorage",
            TorchDtype::Int8 => "CharStorage",
            TorchDtype::UInt8 => "ByteStorage",
            TorchDtype::Bool => "BoolStorage",
            TorchDtype::BFloat16 => "BFloat16Storage",
            TorchDtype::Complex128 => "ComplexDoubleStorage",
            TorchDtype::Complex64 => "ComplexFloatStorage",
            TorchDtype::QInt8 => "QInt8Storage",
            TorchDtype::QInt32 => "QInt32Storage",
            TorchDtype::QUInt8 => "QUInt8Storage",
            TorchDtype::QUInt4x2 => "QUInt4x2Storage",
            TorchDtype::QUInt2x4 => "QUInt2x4Storage",
            _ => "UntypedStorage",
        }
    }
}
