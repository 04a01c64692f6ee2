//! What each allowlisted global means: resolution of `(module, name)` to a
//! [`Known`], and the Rust meaning of calling it (REDUCE), creating it
//! (NEWOBJ) and handing it state (BUILD). Nothing else can be constructed.

use super::bytes::{decimal_to_twos, long_value};
use super::error::{malformed, unsupported, Problem};
use super::heap::{check_attr_state, check_hashable, empty_state, int_arg, number, str_arg, Heap};
use super::value::{Dict, DictKind, Global, Id, Known, Str, TorchDtype, Value, FALSE, NONE, TRUE};
use super::{numpy, torch, Mode};
use std::borrow::Cow;
use std::collections::HashMap;

mod args;
mod codecs;

use args::{bytes_from, counted, int_text, mapping_from};
use codecs::encode;

/// torch singletons that are data (`torch.<name>`): layouts, memory
/// formats and quantization schemes. Python's evaluator hands out these and
/// nothing else (`hermetic._hermetic.TORCH_ENUM_NAMES`).
pub const TORCH_ENUMS: &[&str] = &[
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
];

/// torch's layouts, which `torch.serialization._get_layout` names: the
/// first seven of [`TORCH_ENUMS`].
const TORCH_LAYOUTS: &[&str] = TORCH_ENUMS.split_at(7).0;

/// The meaning of a global, after Python 2 renames. `torch_names` applies
/// what `torch.load`'s unpickler adds: `torch.tensor` is read as
/// `torch._tensor`, and any name containing `Storage` that names a legacy
/// storage class is that storage type.
pub(crate) fn resolve(module: &str, name: &str, torch_names: bool) -> Option<Known> {
    let module = if torch_names && module == "torch.tensor" {
        "torch._tensor"
    } else {
        module
    };
    if torch_names && name.contains("Storage") {
        if let Some(d) = TorchDtype::from_storage_class(name) {
            return Some(Known::StorageType(d));
        }
    }
    Some(match (module, name) {
        ("builtins", "set") => Known::Set,
        ("builtins", "frozenset") => Known::FrozenSet,
        ("builtins", "complex") => Known::Complex,
        ("builtins", "slice") => Known::Slice,
        ("builtins", "range") => Known::Range,
        ("builtins", "bytearray") => Known::ByteArray,
        ("builtins", "bytes") => Known::Bytes,
        ("builtins", "int") => Known::Int,
        ("builtins", "float") => Known::Float,
        ("builtins", "bool") => Known::Bool,
        ("builtins", "str") => Known::Str,
        ("builtins", "list") => Known::List,
        ("builtins", "tuple") => Known::Tuple,
        ("builtins", "dict") => Known::Dict,
        ("collections", "OrderedDict") => Known::OrderedDict,
        ("collections", "Counter") => Known::Counter,
        ("_codecs", "encode") => Known::CodecsEncode,
        ("torch", "Size") => Known::TorchSize,
        ("torch", "device") => Known::TorchDevice,
        ("torch", "Tensor") => Known::TorchTensor,
        ("torch.nn.parameter", "Parameter") => Known::Parameter,
        ("torch._utils", "_rebuild_tensor") => Known::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Known::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => Known::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter") => Known::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Known::RebuildParameterWithState,
        ("torch._utils", "_rebuild_meta_tensor_no_storage") => Known::RebuildMetaNoStorage,
        ("torch._tensor", "_rebuild_from_type_v2") => Known::RebuildFromTypeV2,
        ("torch.serialization", "_get_layout") => Known::GetLayout,
        ("torch" | "torch.storage", "UntypedStorage") => Known::UntypedStorage,
        ("torch" | "torch.cuda", n) if TorchDtype::from_storage_class(n).is_some() => {
            Known::StorageType(TorchDtype::from_storage_class(n)?)
        }
        ("torch", n) if crate::policy::TORCH_DTYPES.contains(&n) => {
            Known::TorchDtype(TorchDtype::from_attr(n)?)
        }
        ("torch", n) if TORCH_ENUMS.contains(&n) => {
            Known::TorchEnum(TORCH_ENUMS.iter().copied().find(|e| *e == n)?)
        }
        // numpy.core._internal._reconstruct is what numpy before 1.0 pickled:
        // `ndarray.__new__(subtype, shape, dtype)`, the same as the C one.
        (
            "numpy.core.multiarray" | "numpy._core.multiarray" | "numpy.core._internal",
            "_reconstruct",
        ) => Known::NpReconstruct,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Known::NpScalar,
        ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Known::NpFromBuffer,
        ("numpy", "ndarray") => Known::NpNdarray,
        ("numpy", "dtype") => Known::NpDtype,
        _ => return None,
    })
}

/// The value a GLOBAL pushes for a known global: dtypes and torch
/// singletons are values; everything else is a callable reference.
pub(crate) fn known_value<'a>(k: Known) -> Value<'a> {
    match k {
        Known::TorchDtype(d) => Value::TorchDtype(d),
        Known::TorchEnum(n) => Value::TorchEnum(n),
        other => Value::Global(Box::new(Global::Known(other))),
    }
}

pub(crate) fn dict<'a>(kind: DictKind, items: Vec<(Id, Id)>) -> Value<'a> {
    Value::Dict(Box::new(Dict {
        kind,
        items,
        state: None,
    }))
}

/// Items of a list, tuple, set, frozenset or (the keys of) a dict.
/// What iterating `id` gives, as `tuple(x)` / `list(x)` / `set(x)` would.
/// A set's iteration order is its hash table's, not the order its items were
/// added in, so where the order is kept (`ordered`: a tuple, a list) a set
/// of more than one item is refused rather than guessed.
fn items_of(m: &mut Heap<'_, '_>, id: Id, what: &str, ordered: bool) -> Result<Vec<Id>, Problem> {
    match m.arena.get(id) {
        Value::List(v) | Value::Tuple(v) => Ok(v.clone()),
        Value::Set(v) | Value::FrozenSet(v) if !ordered || v.len() <= 1 => Ok(v.clone()),
        // Python merges keys by `==` and `hash`, which Rust can only follow
        // for keys it can compare exactly.
        Value::Dict(d) => m
            .arena
            .exact_keys(d.items.iter().map(|p| p.0))
            .map_err(|k| {
                unsupported(format!(
                    "{what} of a dict keyed by {}, which hermetic cannot compare as Python does",
                    m.arena.get(k).describe()
                ))
            }),
        Value::Bytes(b) | Value::ByteArray(b) => {
            let bytes = b.clone();
            m.budget.charge_problem(16 * bytes.len() as u64)?;
            bytes
                .iter()
                .map(|&x| m.push_value(Value::Int(i64::from(x))))
                .collect()
        }
        Value::Str(s) => {
            // One str per code point. The bytes are UTF-8 that may encode
            // lone surrogates (as the unpickler's surrogatepass keeps
            // them), so each code point's bytes follow from its lead byte.
            let bytes = s.bytes.to_vec();
            m.budget.charge_problem(16 * bytes.len() as u64)?;
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                let n = match bytes[i] {
                    0..=0x7f => 1,
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                let one = bytes
                    .get(i..i + n)
                    .ok_or_else(|| malformed(format!("{what} of a str that is not UTF-8")))?
                    .to_vec();
                i += n;
                let utf8 = std::str::from_utf8(&one).is_ok();
                out.push(m.push_value(Value::Str(Str {
                    bytes: Cow::Owned(one),
                    utf8,
                }))?);
            }
            Ok(out)
        }
        other => Err(unsupported(format!(
            "{what} of {} (only lists, tuples, dicts, bytes, str and sets of one item)",
            other.describe()
        ))),
    }
}

/// `k(*args)`.
pub(crate) fn call_known<'a>(m: &mut Heap<'a, '_>, k: Known, args_id: Id) -> Result<Id, Problem> {
    let a = m.arena.seq_of(args_id).unwrap_or(&[]).to_vec();
    let v: Value<'a> = match k {
        Known::Set | Known::FrozenSet | Known::List | Known::Tuple => {
            let items = match a.as_slice() {
                [] => Vec::new(),
                [x] => items_of(
                    m,
                    *x,
                    &k.qualname(),
                    matches!(k, Known::List | Known::Tuple),
                )?,
                _ => {
                    return Err(malformed(format!(
                        "{} takes at most 1 argument",
                        k.qualname()
                    )))
                }
            };
            m.budget.charge_problem(4 * items.len() as u64)?;
            if matches!(k, Known::Set | Known::FrozenSet) {
                check_hashable(m, items.iter().copied())?;
            }
            match k {
                Known::Set => Value::Set(items),
                Known::FrozenSet => Value::FrozenSet(items),
                Known::List => Value::List(items),
                _ => Value::Tuple(items),
            }
        }
        Known::Dict | Known::OrderedDict | Known::Counter => {
            if k == Known::Counter && a.len() == 1 && !matches!(m.arena.get(a[0]), Value::Dict(_)) {
                let items = counted(m, a[0])?;
                m.budget.charge_problem(8 * items.len() as u64)?;
                check_hashable(m, items.iter().map(|p| p.0))?;
                return m.push_value(dict(DictKind::Counter, items));
            }
            let items = mapping_from(m, k, &a)?;
            m.budget.charge_problem(8 * items.len() as u64)?;
            check_hashable(m, items.iter().map(|p| p.0))?;
            let kind = match k {
                Known::Dict => DictKind::Dict,
                Known::OrderedDict => DictKind::OrderedDict,
                _ => DictKind::Counter,
            };
            dict(kind, items)
        }
        Known::Complex => {
            let (re, im) = match a.as_slice() {
                [] => (0.0, 0.0),
                [r] => match m.arena.get(*r) {
                    Value::Complex(re, im) => (*re, *im),
                    _ => (number(m, *r, "complex")?, 0.0),
                },
                [r, i] => (number(m, *r, "complex")?, number(m, *i, "complex")?),
                _ => return Err(malformed("complex takes at most 2 arguments")),
            };
            Value::Complex(re, im)
        }
        Known::Slice => match a.as_slice() {
            [stop] => Value::Slice([NONE, *stop, NONE]),
            [start, stop] => Value::Slice([*start, *stop, NONE]),
            [start, stop, step] => Value::Slice([*start, *stop, *step]),
            _ => return Err(malformed("slice takes 1 to 3 arguments")),
        },
        Known::Range => {
            // range takes any int (bools too), however large.
            for &i in &a {
                if !matches!(
                    m.arena.get(i),
                    Value::Int(_) | Value::BigInt(_) | Value::Bool(_)
                ) {
                    return Err(malformed(format!(
                        "a range bound is {}, not an int",
                        m.arena.get(i).describe()
                    )));
                }
            }
            let r = match a.as_slice() {
                [stop] => [
                    m.push_value(Value::Int(0))?,
                    *stop,
                    m.push_value(Value::Int(1))?,
                ],
                [start, stop] => [*start, *stop, m.push_value(Value::Int(1))?],
                [start, stop, step] => [*start, *stop, *step],
                _ => return Err(malformed("range takes 1 to 3 arguments")),
            };
            if m.arena.int_of(r[2]) == Some(0) {
                return Err(malformed("range() arg 3 must not be zero"));
            }
            Value::Range(r)
        }
        Known::ByteArray => Value::ByteArray(bytes_from(m, k, &a)?),
        Known::Bytes => Value::Bytes(bytes_from(m, k, &a)?),
        Known::CodecsEncode => {
            let (s, enc) = match a.as_slice() {
                [s] => (*s, "utf-8".to_string()),
                [s, e] | [s, e, _] => match m.arena.get(*e) {
                    // encode() takes the codec name as a str only, and
                    // refuses one with a NUL ("embedded null character").
                    Value::Str(n) if n.bytes.contains(&0) => {
                        return Err(malformed("_codecs.encode's codec name holds a NUL"))
                    }
                    Value::Str(_) => (*s, str_arg(m, *e, "the codec")?.to_string()),
                    other => {
                        return Err(malformed(format!(
                            "_codecs.encode's codec is {}, not a str",
                            other.describe()
                        )))
                    }
                },
                _ => return Err(malformed("_codecs.encode takes 1 to 3 arguments")),
            };
            // `errors` must be a str (TypeError otherwise); any handler name
            // reads the same until a character does not encode, and then
            // the strict reading below refuses.
            if let Some(&e) = a.get(2) {
                if !matches!(m.arena.get(e), Value::Str(_)) {
                    return Err(malformed(format!(
                        "_codecs.encode's errors is {}, not a str",
                        m.arena.get(e).describe()
                    )));
                }
            }
            let Value::Str(text) = m.arena.get(s) else {
                return Err(unsupported(format!(
                    "_codecs.encode of {}",
                    m.arena.get(s).describe()
                )));
            };
            m.budget.charge_problem(4 * text.bytes.len() as u64)?;
            encode(text, &enc)?
        }
        Known::Int => match a.as_slice() {
            [] => Value::Int(0),
            [x] => match m.arena.get(*x).clone() {
                Value::Int(i) => Value::Int(i),
                Value::Bool(b) => Value::Int(b as i64),
                Value::BigInt(b) => Value::BigInt(b),
                Value::Float(f) if f.is_finite() && f.trunc().abs() < 9.2e18 => {
                    Value::Int(f.trunc() as i64)
                }
                Value::Str(s) => {
                    let text = int_text(s.as_str().unwrap_or("\u{0}"))?;
                    let bytes = decimal_to_twos(text.as_bytes())
                        .filter(|_| text.len() <= 4300)
                        .ok_or_else(|| malformed("int() of a str that is not a decimal integer"))?;
                    long_value(&bytes)
                }
                other => return Err(unsupported(format!("int({})", other.describe()))),
            },
            _ => return Err(unsupported("int(x, base)")),
        },
        Known::Float => match a.as_slice() {
            [] => Value::Float(0.0),
            [x] => match m.arena.get(*x) {
                Value::Str(s) => Value::Float(
                    s.as_str()
                        .and_then(|t| crate::parser::parse_py_float(t.trim()))
                        .ok_or_else(|| malformed("float() of a str that is not a number"))?,
                ),
                _ => Value::Float(number(m, *x, "float")?),
            },
            _ => return Err(malformed("float takes at most 1 argument")),
        },
        Known::Bool => match a.as_slice() {
            [] => return Ok(FALSE),
            [x] => {
                let truth = match m.arena.get(*x) {
                    Value::None => false,
                    Value::Bool(b) => *b,
                    Value::Int(i) => *i != 0,
                    Value::BigInt(_) => true,
                    Value::Float(f) => *f != 0.0,
                    Value::Str(s) => !s.bytes.is_empty(),
                    Value::Bytes(b) | Value::ByteArray(b) => !b.is_empty(),
                    Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                        !v.is_empty()
                    }
                    Value::Dict(d) => !d.items.is_empty(),
                    other => return Err(unsupported(format!("bool({})", other.describe()))),
                };
                return Ok(if truth { TRUE } else { FALSE });
            }
            _ => return Err(malformed("bool takes at most 1 argument")),
        },
        Known::Str => match a.as_slice() {
            [] => Value::Str(Str {
                bytes: Cow::Borrowed(&[][..]),
                utf8: true,
            }),
            [x] if matches!(m.arena.get(*x), Value::Str(_)) => return Ok(*x),
            _ => return Err(unsupported("str() of anything but a str")),
        },
        Known::TorchSize => {
            let dims = match a.as_slice() {
                [] => Vec::new(),
                [x] => {
                    let items = match m.arena.get(*x) {
                        Value::TorchSize(d) => d.clone(),
                        _ => items_of(m, *x, "torch.Size", true)?
                            .iter()
                            .map(|&i| int_arg(m, i, "a torch.Size dimension"))
                            .collect::<Result<_, _>>()?,
                    };
                    m.budget.charge_problem(8 * items.len() as u64)?;
                    items
                }
                _ => return Err(malformed("torch.Size takes at most 1 argument")),
            };
            Value::TorchSize(dims)
        }
        Known::TorchDevice => Value::TorchDevice(torch::device(m, &a)?.into_boxed_str()),
        Known::GetLayout => {
            let [name] = a.as_slice() else {
                return Err(malformed("_get_layout takes 1 argument"));
            };
            let name = str_arg(m, *name, "a layout name")?;
            let layout = name
                .strip_prefix("torch.")
                .and_then(|n| TORCH_LAYOUTS.iter().copied().find(|e| *e == n))
                .ok_or_else(|| malformed(format!("{name:?} is not a torch layout")))?;
            Value::TorchEnum(layout)
        }
        Known::Parameter => return torch::parameter(m, &a),
        Known::RebuildTensor
        | Known::RebuildTensorV2
        | Known::RebuildTensorV3
        | Known::RebuildParameter
        | Known::RebuildParameterWithState
        | Known::RebuildFromTypeV2
        | Known::RebuildMetaNoStorage => return torch::rebuild(m, k, args_id),
        Known::NpReconstruct | Known::NpDtype | Known::NpScalar | Known::NpFromBuffer => {
            return numpy::call(m, k, args_id)
        }
        Known::TorchTensor
        | Known::StorageType(_)
        | Known::UntypedStorage
        | Known::TorchDtype(_)
        | Known::TorchEnum(_)
        | Known::JoblibWrapper
        | Known::NpNdarray => {
            return Err(unsupported(format!(
                "calling {} (only its use as an argument is data)",
                k.qualname()
            )))
        }
    };
    m.push_value(v)
}

/// `cls.__new__(cls, *args)` for a known class.
pub(crate) fn new_known(m: &mut Heap<'_, '_>, k: Known, args: Id) -> Result<Id, Problem> {
    match k {
        // Mutable builtins: __new__ makes an empty object; items come later.
        Known::Set => m.push_value(Value::Set(Vec::new())),
        Known::List => m.push_value(Value::List(Vec::new())),
        Known::Dict => m.push_value(dict(DictKind::Dict, Vec::new())),
        Known::OrderedDict => m.push_value(dict(DictKind::OrderedDict, Vec::new())),
        Known::Counter => m.push_value(dict(DictKind::Counter, Vec::new())),
        Known::ByteArray => m.push_value(Value::ByteArray(Cow::Borrowed(&[][..]))),
        // Immutable ones are made by __new__ from the arguments.
        Known::JoblibWrapper => {
            if !m.arena.seq_of(args).is_some_and(|a| a.is_empty()) {
                return Err(malformed("NumpyArrayWrapper created with arguments"));
            }
            m.push_value(Value::Array(Box::new(super::value::NdArray {
                readonly: false,
                dtype: super::value::NpDtype::Scalar {
                    kind: b'u',
                    itemsize: 1,
                    order: super::value::ByteOrder::NotApplicable,
                    unit: None,
                },
                shape: Vec::new(),
                fortran: false,
                data: super::value::ArrayData::Joblib(None),
            })))
        }
        Known::FrozenSet
        | Known::Tuple
        | Known::Complex
        | Known::Int
        | Known::Float
        | Known::Bool
        | Known::Str
        | Known::Bytes
        | Known::Slice
        | Known::Range
        | Known::TorchSize
        | Known::TorchDevice
        | Known::Parameter => call_known(m, k, args),
        other => Err(unsupported(format!(
            "creating {} with NEWOBJ",
            other.qualname()
        ))),
    }
}

/// BUILD: hand `state` to the object on top of the stack.
pub(crate) fn build(m: &mut Heap<'_, '_>, obj: Id, state: Id) -> Result<(), Problem> {
    match m.arena.get(obj) {
        Value::Object(o) => {
            if o.state.is_some() && m.ctx.mode == Mode::Strict {
                // Each BUILD is a `__setstate__` call of its own; one record
                // keeps only the last, so a rebuilt object would differ.
                return Err(unsupported("a second BUILD on one object"));
            }
            if let Value::Object(o) = m.arena.get_mut(obj) {
                o.state = Some(state);
            }
            Ok(())
        }
        Value::Array(a) if matches!(a.data, super::value::ArrayData::Joblib(None)) => {
            numpy::joblib_setstate(m, obj, state)
        }
        Value::Array(_) => numpy::array_setstate(m, obj, state),
        Value::NpDtype(_) => numpy::dtype_setstate(m, obj, state),
        Value::Dict(d) if d.kind != DictKind::Dict => {
            check_attr_state(m, state)?;
            if !empty_state(m, state) {
                if let Value::Dict(d) = m.arena.get_mut(obj) {
                    d.state = Some(state);
                }
            }
            Ok(())
        }
        _ if empty_state(m, state) => Ok(()),
        Value::Tensor(_) => Err(unsupported(
            "BUILD on a tensor (legacy `Tensor.set_` state)",
        )),
        other => Err(malformed(format!(
            "BUILD on {}, which takes no state",
            other.describe()
        ))),
    }
}
