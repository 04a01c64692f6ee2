//! joblib's arrays inside the stream: `NumpyArrayWrapper` data read
//! inline after BUILD, the companion files of joblib < 0.10, and arrays
//! brought to the machine's byte order as joblib leaves them.

use super::*;

impl<'a> Machine<'a, '_> {
    /// After BUILD on a joblib `NumpyArrayWrapper`: reads the array that
    /// follows in the file, as joblib's `read_array` does (for raw data a
    /// padding byte and that many bytes, then the C- or Fortran-order bytes;
    /// for object dtypes a nested pickle stream), and puts it in the wrapper's
    /// place. Returns where the opcodes go on.
    pub(super) fn joblib_inline(
        &mut self,
        data: &'a [u8],
        at: usize,
        base: u64,
        file: &str,
        persist: &mut dyn Persist<'a>,
    ) -> Result<Option<usize>, EvalError> {
        let Ok(top) = self.stack.top() else {
            return Ok(None);
        };
        let (padded, dtype, count, shape, fortran) = match self.heap.arena.get(top) {
            Value::Array(a) => match a.data {
                ArrayData::Joblib(Some(p)) => {
                    // numel() could wrap on a crafted shape: checked here.
                    let count = a.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
                    (p, a.dtype.clone(), count, a.shape.clone(), a.fortran)
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let err = |what: String, off: usize| EvalError::Malformed {
            file: file.to_string(),
            offset: base + off as u64,
            what,
        };
        let mut pos = at;
        // Object arrays are a nested pickle right away; only raw data is padded.
        if padded && !dtype.has_object() {
            let pad = *data.get(pos).ok_or_else(|| {
                err(
                    "the file ends before a joblib array's padding byte".into(),
                    pos,
                )
            })?;
            pos += 1 + usize::from(pad);
        }
        if dtype.has_object() {
            // joblib reads it with a plain Unpickler: no wrappers inside.
            let nested = Ctx {
                joblib: false,
                ..*self.heap.ctx
            };
            let (arr, end) = run_stream(
                data,
                pos,
                base,
                file,
                &nested,
                self.heap.arena,
                self.heap.budget,
                persist,
            )?;
            if !matches!(self.heap.arena.get(arr), Value::Array(a) if a.dtype.has_object()) {
                return Err(err(
                    "a joblib object array's nested pickle is not an object array".into(),
                    pos,
                ));
            }
            self.replace_top(arr);
            return Ok(Some(end));
        }
        let nbytes = count
            .and_then(|c| c.checked_mul(dtype.itemsize()))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| err("a joblib array larger than memory".into(), pos))?;
        let end = pos
            .checked_add(nbytes)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                err(
                    format!("the file ends inside a joblib array of {nbytes} bytes"),
                    pos,
                )
            })?;
        // A new node: the memo keeps the wrapper, as joblib's does (a later
        // memo get of it is the wrapper there, and refused here).
        let (dtype, bytes) = if dtype.native_order() {
            (dtype, Cow::Borrowed(&data[pos..end]))
        } else {
            // joblib.load's `_ensure_native_byte_order`: a swapped copy.
            self.heap
                .budget
                .charge_problem(nbytes as u64)
                .map_err(|p| p.at(file, base + pos as u64))?;
            let (d, b) = native_order(dtype, data[pos..end].to_vec())
                .map_err(|p| p.at(file, base + pos as u64))?;
            (d, Cow::Owned(b))
        };
        let arr = self
            .push_value(Value::Array(Box::new(value::NdArray {
                readonly: false,
                dtype,
                shape,
                fortran,
                data: ArrayData::Bytes(bytes),
            })))
            .map_err(|p| p.at(file, base + pos as u64))?;
        self.replace_top(arr);
        Ok(Some(end))
    }

    /// After BUILD on joblib < 0.10's `NDArrayWrapper` / `ZNDArrayWrapper`:
    /// the array `joblib.load` reads from the companion file the wrapper
    /// names, in the wrapper's place on the stack (the memo keeps the
    /// wrapper, as joblib's does). `NDArrayWrapper`: an `.npy` file, read as
    /// `np.load` reads it, numeric dtypes only. `ZNDArrayWrapper`: a z-file
    /// of the raw data, given to `_reconstruct(*init_args).__setstate__(state
    /// + (data,))`. Either comes back in the native byte order, as joblib's
    /// `_ensure_native_byte_order` makes it.
    pub(super) fn joblib_companion(&mut self, file: &str, at: u64) -> Result<(), EvalError> {
        let Ok(top) = self.stack.top() else {
            return Ok(());
        };
        let (zipped, state) = match self.heap.arena.get(top) {
            Value::Object(o) => match self.heap.arena.get(o.class) {
                Value::Global(g) => match &**g {
                    Global::Foreign { module, name } => match old_wrapper(module, name) {
                        Some(z) => (z, o.state),
                        None => return Ok(()),
                    },
                    Global::Known(_) => return Ok(()),
                },
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        let Some(companions) = self.heap.ctx.companions else {
            return Ok(());
        };
        let fail = |p: Problem| p.at(file, at);
        let attrs = self.wrapper_attrs(state).map_err(fail)?;
        let get = |k: &str| {
            attrs.get(k).copied().ok_or_else(|| {
                fail(malformed(format!(
                    "a joblib array placeholder without `{k}`"
                )))
            })
        };
        let name = match self.heap.arena.get(get("filename")?) {
            Value::Str(s) => s
                .as_str()
                .ok_or_else(|| fail(malformed("a companion file name that is not UTF-8")))?
                .to_string(),
            other => {
                return Err(fail(malformed(format!(
                    "a companion file name that is {}",
                    other.describe()
                ))))
            }
        };
        let bytes = companions
            .read(&name, self.heap.budget.left())
            .map_err(|e| fail(unsupported(format!("joblib's companion array: {e}"))))?;
        self.heap
            .budget
            .charge_problem(bytes.len() as u64)
            .map_err(fail)?;
        let arr = if zipped {
            self.companion_z(get("init_args")?, get("state")?, &bytes, &name)
        } else {
            self.companion_npy(get("subclass")?, bytes, &name)
        }
        .map_err(fail)?;
        self.replace_top(arr);
        Ok(())
    }

    pub(super) fn wrapper_attrs(&self, state: Option<Id>) -> Result<HashMap<String, Id>, Problem> {
        let Some(Value::Dict(d)) = state.map(|s| self.heap.arena.get(s)) else {
            return Err(malformed(
                "a joblib array placeholder whose state is not a dict",
            ));
        };
        let mut attrs = HashMap::new();
        for (k, v) in self.heap.arena.dict_items(&d.items) {
            let key = self.heap.arena.str_of(k).ok_or_else(|| {
                malformed("a joblib array placeholder attribute that is not a str")
            })?;
            attrs.insert(key.to_string(), v);
        }
        Ok(attrs)
    }

    pub(super) fn companion_npy(
        &mut self,
        subclass: Id,
        bytes: Vec<u8>,
        name: &str,
    ) -> Result<Id, Problem> {
        if !matches!(self.heap.arena.get(subclass), Value::Global(g) if matches!(**g, Global::Known(Known::NpNdarray)))
        {
            return Err(unsupported(format!(
                "a joblib companion array of the subclass {} (only numpy.ndarray is read)",
                self.heap.arena.get(subclass).describe()
            )));
        }
        let (dtype, shape, fortran, offset) = crate::eval::numpy::npy_header_in(&bytes, 0, name)
            .map_err(|e| unsupported(e.to_string()))?;
        if dtype.has_object() {
            return Err(unsupported(format!(
                "{name} is an object array: joblib.load unpickles it with np.load(allow_pickle=True)"
            )));
        }
        let n = crate::eval::numpy::array_nbytes(&shape, dtype.itemsize())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| malformed(format!("{name}: the array's size overflows")))?;
        let end = offset
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                malformed(format!(
                    "{name}: the array needs {n} bytes of data; the file ends first"
                ))
            })?;
        let mut data = bytes;
        data.truncate(end);
        data.drain(..offset);
        let (dtype, data) = native_order(dtype, data)?;
        self.push_value(Value::Array(Box::new(value::NdArray {
            readonly: false,
            dtype,
            shape,
            fortran,
            data: ArrayData::Bytes(Cow::Owned(data)),
        })))
    }

    pub(super) fn companion_z(
        &mut self,
        init_args: Id,
        state: Id,
        bytes: &[u8],
        name: &str,
    ) -> Result<Id, Problem> {
        let data = crate::containers::compress::read_zfile(bytes, self.heap.budget.left())
            .map_err(|e| malformed(format!("{name}: {e}")))?;
        let arr = crate::eval::numpy::call(&mut self.heap, Known::NpReconstruct, init_args)?;
        let mut items = self
            .heap
            .arena
            .seq_of(state)
            .filter(|_| matches!(self.heap.arena.get(state), Value::Tuple(_)))
            .ok_or_else(|| malformed("a ZNDArrayWrapper state that is not a tuple"))?
            .to_vec();
        let d = self.push_value(Value::Bytes(Cow::Owned(data)))?;
        items.push(d);
        let full = self.push_value(Value::Tuple(items))?;
        crate::eval::numpy::array_setstate(&mut self.heap, arr, full)?;
        let Value::Array(a) = self.heap.arena.get(arr) else {
            return Err(malformed("a ZNDArrayWrapper that made no array"));
        };
        if a.dtype.has_object() {
            return Err(unsupported(format!("{name}: an object array in a z-file")));
        }
        if !a.dtype.native_order() {
            let a = (**a).clone();
            let bytes = match a.data {
                ArrayData::Bytes(b) => b.into_owned(),
                _ => return Err(malformed("a ZNDArrayWrapper array without data")),
            };
            let (dtype, data) = native_order(a.dtype, bytes)?;
            return self.push_value(Value::Array(Box::new(value::NdArray {
                readonly: false,
                dtype,
                shape: a.shape,
                fortran: a.fortran,
                data: ArrayData::Bytes(Cow::Owned(data)),
            })));
        }
        Ok(arr)
    }
}

/// joblib < 0.10's array placeholders: `Some(true)` for `ZNDArrayWrapper`.
pub(super) fn old_wrapper(module: &str, name: &str) -> Option<bool> {
    match (module, name) {
        ("joblib.numpy_pickle" | "joblib.numpy_pickle_compat", "NDArrayWrapper") => Some(false),
        ("joblib.numpy_pickle" | "joblib.numpy_pickle_compat", "ZNDArrayWrapper") => Some(true),
        _ => None,
    }
}

/// An array's dtype and bytes in the machine's byte order, as joblib's
/// `_ensure_native_byte_order` leaves them: a big-endian scalar dtype is
/// swapped (complex numbers per part, as `ndarray.byteswap` does). A
/// structured dtype with big-endian fields is refused: joblib swaps it only
/// when every field is big-endian, a rule not worth a second reading here.
pub(crate) fn native_order(
    dtype: value::NpDtype,
    mut data: Vec<u8>,
) -> Result<(value::NpDtype, Vec<u8>), Problem> {
    if dtype.native_order() {
        return Ok((dtype, data));
    }
    match dtype {
        value::NpDtype::Scalar {
            kind,
            itemsize,
            unit,
            ..
        } => {
            let part = match kind {
                b'c' => itemsize / 2,
                b'U' => 4,
                _ => itemsize,
            } as usize;
            byteswap(&mut data, part);
            Ok((
                value::NpDtype::Scalar {
                    kind,
                    itemsize,
                    order: value::ByteOrder::Little,
                    unit,
                },
                data,
            ))
        }
        _ => Err(unsupported(
            "a joblib array of a structured dtype with big-endian fields",
        )),
    }
}
