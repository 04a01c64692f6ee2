//! Tensor references and the byte geometry of their views.

use crate::dtype::Dtype;
use serde_json::Value;

/// What kind of object a tensor view comes back as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// `torch.Tensor`.
    Torch,
    /// `torch.nn.Parameter`.
    Parameter,
    /// `numpy.ndarray`.
    Numpy,
}

impl TensorKind {
    pub fn tag(&self) -> &'static str {
        match self {
            TensorKind::Torch => "$tensor",
            TensorKind::Parameter => "$parameter",
            TensorKind::Numpy => "$ndarray",
        }
    }
}

/// A view of (part of) one tensor entry's bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Strides in bytes; `None` means C-contiguous.
    pub strides: Option<Vec<i64>>,
    /// Byte offset of element 0 from the entry's first byte.
    pub offset: u64,
}

/// A tensor or array in the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub kind: TensorKind,
    /// The safetensors entry holding the bytes.
    pub entry: String,
    /// `None`: the short form, the whole entry with its own dtype and shape.
    pub view: Option<View>,
    /// `None`: the default (false for tensors, true for parameters).
    pub requires_grad: Option<bool>,
    /// The numpy dtype descriptor when `dtype` alone does not say it
    /// (big-endian, datetime, strings, records, long double).
    pub np_dtype: Option<Value>,
    /// The device the tensor was saved from (informational).
    pub device: Option<String>,
    /// Version 3: the entry whose storage this tensor views. `entry` then
    /// holds the tensor's own row-major bytes (what a plain safetensors
    /// reader sees), and `view` is relative to the first byte of `base`.
    pub base: Option<String>,
}

impl TensorRef {
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
            .unwrap_or(self.kind == TensorKind::Parameter)
    }
}

/// C-contiguous strides in bytes.
pub fn contiguous_strides(shape: &[u64], itemsize: u64) -> Option<Vec<i64>> {
    let mut out = vec![0i64; shape.len()];
    let mut acc: u64 = itemsize;
    for i in (0..shape.len()).rev() {
        out[i] = i64::try_from(acc).ok()?;
        acc = acc.checked_mul(shape[i].max(1))?;
    }
    Some(out)
}

/// The byte range `[lo, hi)` a view reaches relative to its offset origin,
/// or `None` on overflow. An empty view (a zero dimension) reaches nothing
/// and gives `Some(None)`.
pub fn view_extent(view: &View) -> Option<Option<(i128, i128)>> {
    let itemsize = i128::from(view.dtype.itemsize());
    if view.shape.contains(&0) {
        return Some(None);
    }
    let strides = match &view.strides {
        Some(s) => s.clone(),
        None => contiguous_strides(&view.shape, view.dtype.itemsize())?,
    };
    let mut lo = i128::from(view.offset);
    let mut hi = i128::from(view.offset) + itemsize;
    for (&n, &s) in view.shape.iter().zip(&strides) {
        let span = (i128::from(n) - 1).checked_mul(i128::from(s))?;
        if span < 0 {
            lo = lo.checked_add(span)?;
        } else {
            hi = hi.checked_add(span)?;
        }
    }
    Some(Some((lo, hi)))
}

/// True when `strides` (bytes) lay `shape` out row-major without gaps
/// (dimensions of size 1 may have any stride).
pub fn is_dense(shape: &[u64], strides: &[i64], itemsize: u64) -> bool {
    let mut acc = itemsize;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        if n != 1 && i64::try_from(acc).ok() != Some(s) {
            return false;
        }
        acc = match acc.checked_mul(n) {
            Some(a) => a,
            None => return false,
        };
    }
    true
}

/// The row-major bytes of a view of `bytes`: element 0 at byte `offset`,
/// byte `strides`. `None` when the view reaches outside `bytes` or overflows.
pub fn gather(
    bytes: &[u8],
    itemsize: u64,
    shape: &[u64],
    strides: &[i64],
    offset: i64,
) -> Option<Vec<u8>> {
    if shape.contains(&0) {
        return Some(Vec::new());
    }
    let mut lo = i128::from(offset);
    let mut hi = lo + i128::from(itemsize);
    for (&n, &s) in shape.iter().zip(strides) {
        let span = (i128::from(n) - 1).checked_mul(i128::from(s))?;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if lo < 0 || hi > bytes.len() as i128 {
        return None;
    }
    // Trailing dimensions laid out densely are copied as one run.
    let mut k = shape.len();
    let mut run = itemsize;
    while k > 0 && (shape[k - 1] == 1 || i64::try_from(run).ok() == Some(strides[k - 1])) {
        run = run.checked_mul(shape[k - 1])?;
        k -= 1;
    }
    let total = shape.iter().try_fold(itemsize, |a, &n| a.checked_mul(n))?;
    let mut out = Vec::with_capacity(usize::try_from(total).ok()?);
    let run = usize::try_from(run).ok()?;
    let mut index = vec![0u64; k];
    let mut pos = offset;
    loop {
        let p = usize::try_from(pos).ok()?;
        out.extend_from_slice(bytes.get(p..p + run)?);
        // The next index of the outer `k` dimensions, odometer style.
        let mut d = k;
        loop {
            if d == 0 {
                return Some(out);
            }
            d -= 1;
            index[d] += 1;
            pos += strides[d];
            if index[d] < shape[d] {
                break;
            }
            pos -= strides[d] * shape[d] as i64;
            index[d] = 0;
        }
    }
}
