//! Tensors and numpy arrays: views of one storage entry, numpy dtypes
//! (byte order included) as the format records them.

use super::*;

impl<'l, 'a> Converter<'l, 'a> {
    pub(super) fn tensor(&mut self, id: Id) -> Res<NodeId> {
        let Value::Tensor(t) = self.l.arena.get(id) else {
            return self.fail("not a tensor");
        };
        let Some(view) = t.storage else {
            return self.fail("a meta tensor has no data to convert");
        };
        if t.metadata.is_some() {
            return self.fail("a lazily conjugated or negated tensor");
        }
        if t.state.is_some() {
            self.not_carried.push(format!(
                "the Python attributes of the tensor at {}",
                self.place()
            ));
        }
        let code = t.dtype.format_code();
        let Some(dtype) = Dtype::parse(code) else {
            return self.fail(format!(
                "torch dtype {} has no hermetic dtype",
                t.dtype.name()
            ));
        };
        let isz = t.dtype.itemsize();
        let strides: Option<Vec<i64>> = t
            .stride
            .iter()
            .map(|&s| s.checked_mul(isz).and_then(|b| i64::try_from(b).ok()))
            .collect();
        let pos = t
            .offset
            .checked_mul(isz)
            .and_then(|o| o.checked_add(view.byte_offset))
            .and_then(|o| i64::try_from(o).ok());
        let (Some(strides), Some(pos)) = (strides, pos) else {
            return self.fail("strides or offset overflow");
        };
        let storage = &self.l.storages[view.index as usize];
        let default_grad = t.parameter;
        let spec = ViewSpec {
            kind: if t.parameter {
                TensorKind::Parameter
            } else {
                TensorKind::Torch
            },
            dtype,
            shape: t.shape.clone(),
            strides,
            pos,
            requires_grad: (t.requires_grad != default_grad).then_some(t.requires_grad),
            np_dtype: None,
            device: (storage.location != "cpu").then(|| storage.location.clone()),
        };
        self.tensors += 1;
        let name = crate::path_name(&self.path);
        self.planner
            .add_view(name, u64::from(view.index), storage.nbytes, spec)
            .map_err(|e| format!("at {}: {e}", self.place()))
    }

    pub(super) fn array(&mut self, id: Id) -> Res<NodeId> {
        let Value::Array(arr) = self.l.arena.get(id) else {
            return self.fail("not an array");
        };
        let ArrayData::Bytes(data) = &arr.data else {
            return self.fail("an array without data");
        };
        let (dtype, np_dtype, swap) = match np_code(&arr.dtype) {
            Ok(x) => x,
            Err(e) => return self.fail(e),
        };
        let isz = arr.dtype.itemsize();
        let mut strides = vec![0i64; arr.shape.len()];
        let mut acc = isz;
        let dims: Vec<usize> = if arr.fortran {
            (0..arr.shape.len()).collect()
        } else {
            (0..arr.shape.len()).rev().collect()
        };
        for i in dims {
            strides[i] = i64::try_from(acc).map_err(|_| "array too large".to_string())?;
            acc = acc.saturating_mul(arr.shape[i].max(1));
        }
        let key = ARRAY_KEY | u64::from(id);
        let bytes: Cow<'l, [u8]> = match swap {
            Some(unit) => {
                let mut v = data.to_vec();
                byteswap(&mut v, unit as usize);
                Cow::Owned(v)
            }
            None => match data {
                Cow::Borrowed(b) => Cow::Borrowed(*b),
                Cow::Owned(v) => Cow::Owned(v.clone()),
            },
        };
        let len = bytes.len() as u64;
        self.arrays.insert(key, bytes);
        self.tensors += 1;
        let spec = ViewSpec {
            kind: TensorKind::Numpy,
            dtype,
            shape: arr.shape.clone(),
            strides,
            pos: 0,
            requires_grad: None,
            np_dtype,
            device: None,
        };
        let name = crate::path_name(&self.path);
        self.planner
            .add_view(name, key, len, spec)
            .map_err(|e| format!("at {}: {e}", self.place()))
    }
}

/// A numpy dtype for the format: (dtype code, np_dtype, byte-swap unit).
pub(super) fn np_code(
    d: &NpDtype,
) -> std::result::Result<(Dtype, Option<serde_json::Value>, Option<u64>), String> {
    if let NpDtype::Scalar {
        kind,
        itemsize,
        order,
        ..
    } = d
    {
        let big = *order == ByteOrder::Big;
        let code = match (kind, itemsize) {
            // Datetimes keep their unit in `np_dtype`; the bytes are int64.
            (b'M' | b'm', 8) => Some("I64"),
            _ => crate::dtype::numpy_code(*kind, *itemsize),
        };
        if let Some(code) = code {
            let dtype = Dtype::parse(code).ok_or("unknown dtype code")?;
            let np_dtype =
                (big || matches!(kind, b'M' | b'm')).then(|| serde_json::Value::String(d.descr()));
            let swap = if big { d.swap_unit() } else { None };
            return Ok((dtype, np_dtype, swap));
        }
    }
    let size = u32::try_from(d.itemsize()).map_err(|_| "numpy items too large".to_string())?;
    let dtype = Dtype::parse(&format!("RAW{size}")).ok_or("numpy items too large")?;
    Ok((dtype, Some(np_descr(d)?), None))
}

/// numpy's `dtype_to_descr` as JSON: a type string, or a list of fields
/// (with padding) for records.
pub(super) fn np_descr(d: &NpDtype) -> std::result::Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match d {
        NpDtype::Scalar { kind: b'O', .. } => return Err("a numpy object dtype".into()),
        NpDtype::Scalar { .. } => J::String(d.descr()),
        NpDtype::SubArray { .. } => return Err("a numpy sub-array dtype outside a record".into()),
        NpDtype::Record {
            fields, itemsize, ..
        } => {
            let mut sorted: Vec<_> = fields.iter().collect();
            sorted.sort_by_key(|f| f.offset);
            let mut out = Vec::new();
            let mut at = 0u64;
            let mut pad = 0;
            for f in sorted {
                if f.offset < at {
                    return Err("a numpy record with overlapping fields".into());
                }
                if f.offset > at {
                    out.push(J::Array(vec![
                        J::String(String::new()),
                        J::String(format!("|V{}", f.offset - at)),
                    ]));
                    pad += 1;
                }
                let name = match &f.title {
                    Some(t) => J::Array(vec![J::String(t.clone()), J::String(f.name.clone())]),
                    None => J::String(f.name.clone()),
                };
                let field = match &f.dtype {
                    NpDtype::SubArray { base, shape } => J::Array(vec![
                        name,
                        np_descr(base)?,
                        J::Array(shape.iter().map(|&s| J::from(s)).collect()),
                    ]),
                    other => J::Array(vec![name, np_descr(other)?]),
                };
                out.push(field);
                at = f.offset + f.dtype.itemsize();
            }
            if at < *itemsize {
                out.push(J::Array(vec![
                    J::String(String::new()),
                    J::String(format!("|V{}", itemsize - at)),
                ]));
            }
            let _ = pad;
            J::Array(out)
        }
    })
}
