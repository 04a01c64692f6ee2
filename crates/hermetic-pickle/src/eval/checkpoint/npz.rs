//! `.npy` arrays and `.npz` archives of them.

use super::*;

/// A `.npy` array (its pickle, for object arrays) at `start` in `data`.
pub(super) fn npy_value<'a>(
    data: &'a [u8],
    base: u64,
    r: &mut Reader<'_>,
    arena: &mut Arena<'a>,
) -> Result<Id, EvalError> {
    let (dtype, shape, fortran, offset) = npy_header(data, base, r)?;
    if dtype.has_object() {
        let ctx = r.ctx(false);
        let (v, _) = run_stream(
            data,
            offset,
            base,
            &r.file,
            &ctx,
            arena,
            &mut r.budget,
            &mut NoPersist,
        )?;
        return Ok(v);
    }
    let n = array_nbytes(&shape, dtype.itemsize())
        .ok_or_else(|| r.err(base, malformed("the array's size overflows")))?;
    let bytes = data
        .get(offset..)
        .and_then(|rest| rest.get(..usize::try_from(n).ok()?))
        .ok_or_else(|| {
            r.err(
                base + offset as u64,
                malformed(format!(
                    "the array needs {n} bytes of data; the file ends first"
                )),
            )
        })?;
    arena
        .push(
            Value::Array(Box::new(NdArray {
                readonly: false,
                dtype,
                shape,
                fortran,
                data: ArrayData::Bytes(Cow::Borrowed(bytes)),
            })),
            &mut r.budget,
        )
        .map_err(|e| r.err(base, Problem::Limit(e)))
}

fn npy_header(data: &[u8], base: u64, r: &Reader<'_>) -> Result<NpyHeader, EvalError> {
    npy_header_in(data, base, &r.file)
}

pub(super) fn npz<'a>(
    data: &'a [u8],
    archive: &ZipArchive,
    r: &mut Reader<'_>,
    out: &mut Loaded<'a>,
) -> Result<(), EvalError> {
    let mut items = Vec::new();
    for e in &archive.entries {
        let name = e.name_lossy();
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let base = e.data_offset.unwrap_or(e.local_offset);
        let content = entry_bytes(data, e, r)?;
        let value = if content.starts_with(npy::MAGIC) {
            match content {
                Cow::Borrowed(b) => npy_value(b, base, r, &mut out.arena)?,
                Cow::Owned(v) => {
                    let mut scratch = Arena::new();
                    let id = npy_value(&v, 0, r, &mut scratch)?;
                    let map = out.arena.absorb(scratch);
                    map(id)
                }
            }
        } else {
            out.arena
                .push(Value::Bytes(content), &mut r.budget)
                .map_err(|x| r.err(base, Problem::Limit(x)))?
        };
        let k = out
            .arena
            .push(
                Value::Str(crate::eval::value::Str {
                    bytes: Cow::Owned(key.into_bytes()),
                    utf8: true,
                }),
                &mut r.budget,
            )
            .map_err(|x| r.err(base, Problem::Limit(x)))?;
        items.push((k, value));
    }
    out.root = out
        .arena
        .push(
            crate::eval::calls::dict(crate::eval::value::DictKind::Dict, items),
            &mut r.budget,
        )
        .map_err(|x| r.err(0, Problem::Limit(x)))?;
    Ok(())
}
