//! Tensors and arrays: one entry per storage, views into it, and the
//! [`PySource`] that streams their bytes to the writer.

use super::*;

impl<'py> Encoder<'py> {
    pub(super) fn storage_key(&mut self, space: &str, ptr: u64, origin: Storage<'py>) -> u64 {
        if ptr == 0 {
            self.storages.push(origin);
            return (self.storages.len() - 1) as u64;
        }
        if let Some(&k) = self.storage_keys.get(&(space.to_string(), ptr)) {
            return k;
        }
        self.storages.push(origin);
        let k = (self.storages.len() - 1) as u64;
        self.storage_keys.insert((space.to_string(), ptr), k);
        k
    }

    pub(super) fn torch_tensor(
        &mut self,
        obj: &Bound<'py, PyAny>,
        kind: TensorKind,
    ) -> PyResult<NodeId> {
        let info = self
            .helpers
            .call_method1("_torch_info", (obj,))
            .map_err(|e| self.fail(e.value(self.py).to_string()))?;
        #[allow(clippy::type_complexity)]
        let (code, shape, strides, offset, itemsize, device, ptr, nbytes, grad, cpu): (
            String,
            Vec<u64>,
            Vec<i64>,
            i64,
            i64,
            String,
            u64,
            u64,
            bool,
            bool,
        ) = info.extract()?;
        let dtype = Dtype::parse(&code).ok_or_else(|| self.fail(format!("dtype {code}")))?;
        let strides = strides
            .iter()
            .map(|s| s.checked_mul(itemsize))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| self.fail("strides overflow"))?;
        let pos = offset
            .checked_mul(itemsize)
            .ok_or_else(|| self.fail("offset overflows"))?;
        let origin = if cpu {
            // CPU storage: the writer reads it in place, from its address.
            Storage::Cpu(obj.clone(), ptr as usize, nbytes as usize)
        } else {
            Storage::Helper(false, obj.clone())
        };
        let key = self.storage_key(&device, if nbytes == 0 { 0 } else { ptr }, origin);
        let requires_grad = match kind {
            TensorKind::Parameter => (!grad).then_some(false),
            _ => grad.then_some(true),
        };
        let spec = ViewSpec {
            kind,
            dtype,
            shape,
            strides,
            pos,
            requires_grad,
            np_dtype: None,
            device: (device != "cpu").then_some(device),
        };
        self.planner
            .add_view(path_name(&self.path), key, nbytes, spec)
            .map_err(|e| self.fail(e))
    }

    pub(super) fn ndarray(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<NodeId> {
        let info = self
            .helpers
            .call_method1("_np_info", (obj,))
            .map_err(|e| self.fail(e.value(self.py).to_string()))?;
        #[allow(clippy::type_complexity)]
        let (code, np_dtype, shape, strides, pos, root, region_len, region): (
            String,
            Option<String>,
            Vec<u64>,
            Vec<i64>,
            i64,
            u64,
            u64,
            Bound<'py, PyAny>,
        ) = info.extract()?;
        let dtype = Dtype::parse(&code).ok_or_else(|| self.fail(format!("dtype {code}")))?;
        let np_dtype = match np_dtype {
            Some(s) => Some(serde_json::from_str(&s).map_err(|e| self.fail(e))?),
            None => None,
        };
        let key = self.storage_key(
            "numpy",
            if region_len == 0 { 0 } else { root },
            Storage::Helper(true, region),
        );
        let spec = ViewSpec {
            kind: TensorKind::Numpy,
            dtype,
            shape,
            strides,
            pos,
            requires_grad: None,
            np_dtype,
            device: None,
        };
        self.planner
            .add_view(path_name(&self.path), key, region_len, spec)
            .map_err(|e| self.fail(e))
    }
}

/// Feeds entry bytes to the writer, one entry at a time, straight from the
/// tensors' memory (a device tensor is copied to the host just before).
pub(crate) struct PySource<'py> {
    pub(super) py: Python<'py>,
    pub(super) helpers: Bound<'py, PyAny>,
    pub(super) storages: Vec<Storage<'py>>,
    pub(super) bytes: Vec<Bound<'py, PyBytes>>,
    pub(super) origins: Vec<EntryOrigin>,
    pub(super) names: Vec<String>,
    pub(super) error: Option<PyErr>,
}

impl PySource<'_> {
    /// The Python exception behind a failed write, if there was one.
    pub(crate) fn take_error(&mut self) -> Option<PyErr> {
        self.error.take()
    }
}

/// The bytes at `ptr..ptr+len` owned by `_owner`: a C-contiguous uint8 numpy
/// array (its `__array_interface__` address and `nbytes`) or a CPU torch
/// tensor (its untyped storage's `data_ptr()` and `nbytes()`). The buffer
/// protocol is not part of the stable ABI this module targets before 3.11.
#[allow(unsafe_code)]
pub(super) fn array_bytes<'a>(_owner: &'a Bound<'_, PyAny>, ptr: usize, len: usize) -> &'a [u8] {
    if len == 0 || ptr == 0 {
        return &[];
    }
    // SAFETY: `ptr` and `len` describe memory `_owner` owns (see above) and
    // that stays allocated as long as `_owner` lives; the returned slice
    // borrows `_owner`, and the GIL is held while the slice is used, so no
    // Python code can free or resize that memory meanwhile.
    unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
}

impl EntrySource for PySource<'_> {
    fn write_entry(
        &mut self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> hermetic_format::Result<()> {
        let name = self.names[index].clone();
        let fail = |detail: String| hermetic_format::FormatError::Source {
            entry: name.clone(),
            detail,
        };
        match &self.origins[index] {
            EntryOrigin::Bytes { slot } => {
                sink(self.bytes[*slot].as_bytes()).map_err(|e| fail(e.to_string()))
            }
            EntryOrigin::Storage { lo, hi, .. } if lo == hi => Ok(()),
            EntryOrigin::Gather {
                key,
                lo,
                hi,
                itemsize,
                shape,
                strides,
                offset,
            } => {
                // A view that is not one run of its storage: its row-major copy.
                let (key, lo, hi) = (*key, *lo, *hi);
                let (itemsize, offset) = (*itemsize, *offset);
                let (shape, strides) = (shape.clone(), strides.clone());
                let mut copy = None;
                self.span(index, key, lo, hi, &mut |bytes| {
                    copy = gather(bytes, itemsize, &shape, &strides, offset);
                    Ok(())
                })?;
                let copy = copy.ok_or_else(|| fail("the view reaches outside its bytes".into()))?;
                sink(&copy).map_err(|e| fail(e.to_string()))
            }
            EntryOrigin::Storage { key, lo, hi } => {
                let (key, lo, hi) = (*key, *lo, *hi);
                self.span(index, key, lo, hi, sink)
            }
        }
    }
}

impl PySource<'_> {
    /// Calls `sink` with bytes `lo..hi` of storage `key`.
    pub(super) fn span(
        &mut self,
        index: usize,
        key: u64,
        lo: u64,
        hi: u64,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> hermetic_format::Result<()> {
        let name = self.names[index].clone();
        let fail = |detail: String| hermetic_format::FormatError::Source {
            entry: name.clone(),
            detail,
        };
        let (key, lo, hi) = (&key, &lo, &hi);
        let (numpy, obj) = match self.storages.get(*key as usize) {
            Some(Storage::Helper(numpy, obj)) => (numpy, obj),
            Some(Storage::Cpu(owner, ptr, len)) => {
                if *hi as usize > *len {
                    return Err(fail(format!("bytes {lo}..{hi} outside the storage")));
                }
                let all = array_bytes(owner, *ptr, *len);
                return sink(&all[*lo as usize..*hi as usize]).map_err(|e| fail(e.to_string()));
            }
            None => return Err(fail(format!("no storage numbered {key}"))),
        };
        let helper = if *numpy { "_np_span" } else { "_torch_span" };
        let got = self
            .helpers
            .call_method1(helper, (obj, *lo, *hi))
            .and_then(|r| r.extract::<(Bound<'_, PyAny>, usize, usize)>());
        let (arr, ptr, len) = match got {
            Ok(b) => b,
            Err(e) => {
                let msg = e.value(self.py).to_string();
                self.error = Some(e);
                return Err(fail(msg));
            }
        };
        if len as u64 != hi - lo {
            return Err(fail(format!("got {len} bytes, expected {}", hi - lo)));
        }
        sink(array_bytes(&arr, ptr, len)).map_err(|e| fail(e.to_string()))
    }
}
