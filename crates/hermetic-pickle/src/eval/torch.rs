//! torch's rebuild functions, `torch.device` and `nn.Parameter`: tensors are
//! views (dtype, offset, sizes, strides) of storages the container supplies
//! through persistent ids. Every view is checked to lie inside its storage.

use super::error::{malformed, unsupported, Problem};
use super::heap::{args, check_attr_state, empty_state, int_arg, str_arg, Heap};
use super::value::{Global, Id, Known, StorageView, Tensor, TorchDtype, Value};

/// The most dimensions a tensor may have here.
pub const MAX_NDIM: usize = 1024;

/// `torch.device(...)` arguments to `str(device)`.
pub(crate) fn device(m: &Heap<'_, '_>, a: &[Id]) -> Result<String, Problem> {
    let (text, index) = match a {
        [s] => (str_arg(m, *s, "the device")?.to_string(), None),
        [s, i] => (
            str_arg(m, *s, "the device type")?.to_string(),
            Some(int_arg(m, *i, "the device index")?),
        ),
        _ => return Err(malformed("torch.device takes 1 or 2 arguments")),
    };
    let (kind, inline_index) = match text.split_once(':') {
        Some((k, i)) => (
            k.to_string(),
            Some(
                i.parse::<i64>()
                    .map_err(|_| malformed(format!("bad device index in {text:?}")))?,
            ),
        ),
        None => (text.clone(), None),
    };
    let valid = !kind.is_empty()
        && kind.len() <= 32
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(malformed(format!("{text:?} is not a device type")));
    }
    let index = match (inline_index, index) {
        (Some(_), Some(_)) => {
            return Err(malformed("a device index given twice"));
        }
        (i, None) | (None, i) => i,
    };
    match index {
        None => Ok(kind),
        Some(i) if (0..=i64::from(i32::MAX)).contains(&i) => Ok(format!("{kind}:{i}")),
        Some(i) => Err(malformed(format!("device index {i} out of range"))),
    }
}

/// Sizes or strides: a tuple, list or torch.Size of non-negative ints.
fn dims(m: &mut Heap<'_, '_>, id: Id, what: &str) -> Result<Vec<u64>, Problem> {
    let raw: Vec<i64> = match m.arena.get(id) {
        Value::TorchSize(d) => d.clone(),
        Value::Tuple(v) | Value::List(v) => {
            let v = v.clone();
            v.iter()
                .map(|&i| int_arg(m, i, what))
                .collect::<Result<_, _>>()?
        }
        other => {
            return Err(malformed(format!(
                "{what} is {}, not a tuple of ints",
                other.describe()
            )))
        }
    };
    if raw.len() > MAX_NDIM {
        return Err(Problem::Limit(format!(
            "a tensor with more than {MAX_NDIM} dimensions"
        )));
    }
    m.budget.charge_problem(8 * raw.len() as u64)?;
    raw.into_iter()
        .map(|d| {
            u64::try_from(d).map_err(|_| malformed(format!("{what} holds a negative value {d}")))
        })
        .collect()
}

fn flag(m: &Heap<'_, '_>, id: Id, what: &str) -> Result<bool, Problem> {
    match m.arena.get(id) {
        // torch's setters take a bool only ("requires_grad must be a bool").
        Value::Bool(b) => Ok(*b),
        other => Err(malformed(format!(
            "{what} is {}, not a bool",
            other.describe()
        ))),
    }
}

fn hooks(m: &Heap<'_, '_>, id: Id) -> Result<(), Problem> {
    if empty_state(m, id) {
        Ok(())
    } else {
        Err(unsupported(
            "backward hooks in a checkpoint (hooks are functions, never data)",
        ))
    }
}

fn metadata(m: &Heap<'_, '_>, id: Id) -> Result<Option<Id>, Problem> {
    match m.arena.get(id) {
        Value::None => Ok(None),
        Value::Dict(d) => {
            for &(k, v) in &d.items {
                let key = m.arena.str_of(k).unwrap_or("");
                if !matches!(key, "conj" | "neg") || !matches!(m.arena.get(v), Value::Bool(_)) {
                    return Err(unsupported(format!(
                        "tensor metadata {key:?} (only the conj and neg flags)"
                    )));
                }
            }
            Ok((!d.items.is_empty()).then_some(id))
        }
        other => Err(malformed(format!(
            "tensor metadata is {}, not a dict",
            other.describe()
        ))),
    }
}

/// Checks that a view of `shape`/`stride` at `offset` elements of `dtype`
/// lies inside `nbytes` bytes.
pub fn check_extent(
    dtype: TorchDtype,
    offset: u64,
    shape: &[u64],
    stride: &[u64],
    nbytes: u64,
) -> Result<(), String> {
    if shape.len() != stride.len() {
        return Err(format!(
            "{} sizes but {} strides",
            shape.len(),
            stride.len()
        ));
    }
    if shape.contains(&0) {
        return Ok(());
    }
    let mut last: u128 = u128::from(offset);
    for (&n, &s) in shape.iter().zip(stride) {
        last = (u128::from(n) - 1)
            .checked_mul(u128::from(s))
            .and_then(|x| x.checked_add(last))
            .ok_or("the view's extent overflows")?;
    }
    let end = (last + 1)
        .checked_mul(u128::from(dtype.itemsize()))
        .ok_or("the view's extent overflows")?;
    if end > u128::from(nbytes) {
        return Err(format!(
            "a {} view of sizes {shape:?}, strides {stride:?} at offset {offset} needs {end} bytes; its storage has {nbytes}",
            dtype.name()
        ));
    }
    Ok(())
}

fn storage_arg(m: &Heap<'_, '_>, id: Id) -> Result<StorageView, Problem> {
    match m.arena.get(id) {
        Value::Storage(s) => Ok(*s),
        other => Err(malformed(format!(
            "a tensor's storage is {}, not a storage",
            other.describe()
        ))),
    }
}

fn tensor_arg(m: &Heap<'_, '_>, id: Id) -> Result<Tensor, Problem> {
    match m.arena.get(id) {
        Value::Tensor(t) => Ok((**t).clone()),
        other => Err(malformed(format!(
            "a parameter's data is {}, not a tensor",
            other.describe()
        ))),
    }
}

fn dtype_arg(m: &Heap<'_, '_>, id: Id) -> Result<TorchDtype, Problem> {
    match m.arena.get(id) {
        Value::TorchDtype(d) => Ok(*d),
        other => Err(malformed(format!(
            "{} is not a torch.dtype",
            other.describe()
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn strided(
    m: &mut Heap<'_, '_>,
    storage: Id,
    offset: Id,
    size: Id,
    stride: Id,
    dtype: Option<TorchDtype>,
) -> Result<Tensor, Problem> {
    let view = storage_arg(m, storage)?;
    let offset = u64::try_from(int_arg(m, offset, "the storage offset")?)
        .map_err(|_| malformed("a negative storage offset"))?;
    let shape = dims(m, size, "the size")?;
    let stride = dims(m, stride, "the stride")?;
    let dtype = dtype.unwrap_or(view.dtype);
    check_extent(dtype, offset, &shape, &stride, view.nbytes).map_err(malformed)?;
    Ok(Tensor {
        storage: Some(view),
        dtype,
        offset,
        shape,
        stride,
        requires_grad: false,
        parameter: false,
        metadata: None,
        state: None,
    })
}

/// `nn.Parameter(data, requires_grad=True)`.
pub(crate) fn parameter(m: &mut Heap<'_, '_>, a: &[Id]) -> Result<Id, Problem> {
    let (data, rg) = match a {
        [d] => (*d, true),
        [d, r] => (*d, flag(m, *r, "requires_grad")?),
        _ => return Err(malformed("Parameter takes 1 or 2 arguments")),
    };
    let mut t = tensor_arg(m, data)?;
    t.parameter = true;
    t.requires_grad = rg;
    m.push_value(Value::Tensor(Box::new(t)))
}

/// The `torch._utils._rebuild_*` functions and `_rebuild_from_type_v2`.
pub(crate) fn rebuild(m: &mut Heap<'_, '_>, k: Known, args_id: Id) -> Result<Id, Problem> {
    let t = match k {
        Known::RebuildTensor => {
            let a = args(m, k, args_id, 4, 4)?;
            strided(m, a[0], a[1], a[2], a[3], None)?
        }
        Known::RebuildTensorV2 => {
            let a = args(m, k, args_id, 6, 7)?;
            let mut t = strided(m, a[0], a[1], a[2], a[3], None)?;
            t.requires_grad = flag(m, a[4], "requires_grad")?;
            hooks(m, a[5])?;
            if let Some(&md) = a.get(6) {
                t.metadata = metadata(m, md)?;
            }
            t
        }
        Known::RebuildTensorV3 => {
            let a = args(m, k, args_id, 7, 8)?;
            let dtype = dtype_arg(m, a[6])?;
            let mut t = strided(m, a[0], a[1], a[2], a[3], Some(dtype))?;
            t.requires_grad = flag(m, a[4], "requires_grad")?;
            hooks(m, a[5])?;
            if let Some(&md) = a.get(7) {
                t.metadata = metadata(m, md)?;
            }
            t
        }
        Known::RebuildParameter | Known::RebuildParameterWithState => {
            let with_state = k == Known::RebuildParameterWithState;
            let n = if with_state { 4 } else { 3 };
            let a = args(m, k, args_id, n, n)?;
            let mut t = tensor_arg(m, a[0])?;
            t.parameter = true;
            t.requires_grad = flag(m, a[1], "requires_grad")?;
            hooks(m, a[2])?;
            if with_state {
                check_attr_state(m, a[3])?;
                if !empty_state(m, a[3]) {
                    t.state = Some(a[3]);
                }
            }
            t
        }
        Known::RebuildMetaNoStorage => {
            let a = args(m, k, args_id, 4, 4)?;
            let dtype = dtype_arg(m, a[0])?;
            let shape = dims(m, a[1], "the size")?;
            let stride = dims(m, a[2], "the stride")?;
            if shape.len() != stride.len() {
                return Err(malformed(
                    "a meta tensor's sizes and strides differ in length",
                ));
            }
            Tensor {
                storage: None,
                dtype,
                offset: 0,
                shape,
                stride,
                requires_grad: flag(m, a[3], "requires_grad")?,
                parameter: false,
                metadata: None,
                state: None,
            }
        }
        Known::RebuildFromTypeV2 => return from_type_v2(m, args_id),
        other => {
            return Err(unsupported(format!(
                "{} as a rebuild function",
                other.qualname()
            )))
        }
    };
    m.push_value(Value::Tensor(Box::new(t)))
}

/// `_rebuild_from_type_v2(func, new_type, args, state)`: `func(*args)`,
/// made an instance of `new_type` (Tensor or Parameter), then given `state`.
fn from_type_v2(m: &mut Heap<'_, '_>, args_id: Id) -> Result<Id, Problem> {
    let a = args(m, Known::RebuildFromTypeV2, args_id, 4, 4)?;
    let func = match m.arena.get(a[0]) {
        Value::Global(g) => match **g {
            Global::Known(
                k @ (Known::RebuildTensor
                | Known::RebuildTensorV2
                | Known::RebuildTensorV3
                | Known::RebuildParameter
                | Known::RebuildParameterWithState
                | Known::RebuildMetaNoStorage
                | Known::Parameter),
            ) => k,
            _ => {
                return Err(unsupported(
                    "_rebuild_from_type_v2 with a function other than torch's tensor rebuilds",
                ))
            }
        },
        other => {
            return Err(malformed(format!(
                "_rebuild_from_type_v2's function is {}",
                other.describe()
            )))
        }
    };
    let parameter = match m.arena.get(a[1]) {
        Value::Global(g) if **g == Global::Known(Known::TorchTensor) => false,
        Value::Global(g) if **g == Global::Known(Known::Parameter) => true,
        _ => {
            return Err(unsupported(
                "a tensor subclass other than torch.Tensor and nn.Parameter",
            ))
        }
    };
    if !matches!(m.arena.get(a[2]), Value::Tuple(_)) {
        return Err(malformed(
            "_rebuild_from_type_v2's arguments are not a tuple",
        ));
    }
    // What `call_known` does for these: they are all torch's own.
    let id = match func {
        Known::Parameter => {
            let inner = m.arena.seq_of(a[2]).unwrap_or(&[]).to_vec();
            self::parameter(m, &inner)?
        }
        _ => rebuild(m, func, a[2])?,
    };
    check_attr_state(m, a[3])?;
    let state = (!empty_state(m, a[3])).then_some(a[3]);
    match m.arena.get_mut(id) {
        Value::Tensor(t) => {
            t.parameter = parameter;
            if state.is_some() {
                t.state = state;
            }
            Ok(id)
        }
        _ => Err(malformed("_rebuild_from_type_v2's function made no tensor")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents() {
        let f = TorchDtype::Float32;
        assert!(check_extent(f, 0, &[2, 3], &[3, 1], 24).is_ok());
        assert!(check_extent(f, 1, &[2, 3], &[3, 1], 24).is_err());
        assert!(check_extent(f, 6, &[4, 3], &[0, 1], 36).is_ok());
        assert!(check_extent(f, 100, &[0, 3], &[3, 1], 0).is_ok());
        assert!(check_extent(f, 0, &[], &[], 4).is_ok());
        assert!(check_extent(f, 0, &[], &[], 3).is_err());
        assert!(check_extent(f, u64::MAX, &[u64::MAX], &[u64::MAX], 4).is_err());
    }
}
