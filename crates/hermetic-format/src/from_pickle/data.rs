//! The entries' bytes of a converted plan, streamed to the writer from
//! the evaluated (usually mapped) input.

use super::*;

/// The bytes of a [`Converted`] plan's entries.
pub struct ConvertedData<'l, 'a> {
    pub(super) loaded: &'l Loaded<'a>,
    pub(super) origins: Vec<EntryOrigin>,
    pub(super) arrays: HashMap<u64, Cow<'l, [u8]>>,
    pub(super) bytes: Vec<&'l [u8]>,
}

impl EntrySource for ConvertedData<'_, '_> {
    fn write_entry(
        &mut self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> crate::Result<()> {
        let err = |detail: String| FormatError::Source {
            entry: index.to_string(),
            detail,
        };
        let whole = |key: u64| -> crate::Result<&[u8]> {
            if key & ARRAY_KEY != 0 {
                return Ok(self.arrays.get(&key).map(|c| &**c).unwrap_or(&[]));
            }
            let i = u32::try_from(key).map_err(|_| err("bad storage key".into()))?;
            if i as usize >= self.loaded.storages.len() {
                return Err(err("bad storage key".into()));
            }
            Ok(self.loaded.storage_bytes(i))
        };
        let copy;
        let data: &[u8] = match self.origins.get(index) {
            Some(EntryOrigin::Storage { lo, hi, .. }) if lo == hi => &[],
            Some(EntryOrigin::Storage { key, lo, hi }) => whole(*key)?
                .get(*lo as usize..*hi as usize)
                .ok_or_else(|| err(format!("bytes {lo}..{hi} lie outside the storage")))?,
            Some(EntryOrigin::Gather {
                key,
                lo,
                hi,
                itemsize,
                shape,
                strides,
                offset,
            }) => {
                let span = whole(*key)?
                    .get(*lo as usize..*hi as usize)
                    .ok_or_else(|| err(format!("bytes {lo}..{hi} lie outside the storage")))?;
                copy = crate::tree::gather(span, *itemsize, shape, strides, *offset)
                    .ok_or_else(|| err("the view reaches outside its bytes".into()))?;
                &copy
            }
            Some(EntryOrigin::Bytes { slot }) => self.bytes.get(*slot).copied().unwrap_or(&[]),
            None => return Err(err("no origin".into())),
        };
        // Cache-sized pieces, so a caller counting bytes sees large entries
        // move.
        for piece in data.chunks(8 << 20) {
            sink(piece).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }
}
