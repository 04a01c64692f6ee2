//! Reading one entry's content (stored or deflated), bounded.

use super::super::{slice_at, ContainerError};
use super::*;
use std::borrow::Cow;
use std::io::Read;

/// An entry's content as read.
#[derive(Debug)]
pub struct EntryContent<'a> {
    pub data: Cow<'a, [u8]>,
    /// Inflating stopped at the bound.
    pub limit_hit: bool,
    /// The deflate stream is corrupt; `data` holds what came out before.
    pub error: Option<String>,
}

/// Reads an entry's content: borrowed when stored, inflated (to at most
/// `max` bytes) when deflated.
pub fn read_entry<'a>(
    data: &'a [u8],
    e: &ZipEntry,
    max: u64,
) -> Result<EntryContent<'a>, ContainerError> {
    let offset = e.data_offset.ok_or_else(|| ContainerError::Malformed {
        what: "zip entry",
        offset: e.local_offset,
        reason: "no readable local header".into(),
    })?;
    let raw = slice_at(data, offset, e.compressed_size).ok_or_else(|| {
        truncated(
            "zip entry data",
            offset,
            offset.saturating_add(e.compressed_size),
            data.len(),
        )
    })?;
    match e.method {
        METHOD_STORED => Ok(EntryContent {
            data: Cow::Borrowed(raw),
            limit_hit: false,
            error: None,
        }),
        METHOD_DEFLATE => {
            let mut out = Vec::new();
            let result = flate2::read::DeflateDecoder::new(raw)
                .take(max.saturating_add(1))
                .read_to_end(&mut out);
            let limit_hit = out.len() as u64 > max;
            if limit_hit {
                out.truncate(usize::try_from(max).unwrap_or(usize::MAX));
            }
            Ok(EntryContent {
                data: Cow::Owned(out),
                limit_hit,
                error: result.err().map(|e| e.to_string()),
            })
        }
        m => Err(ContainerError::Malformed {
            what: "zip entry",
            offset: e.local_offset,
            reason: format!("compression method {m} is not supported"),
        }),
    }
}

/// The first `n` bytes of an entry's content, without reading the rest.
pub fn peek_entry(data: &[u8], e: &ZipEntry, n: usize) -> Option<Vec<u8>> {
    let raw = slice_at(data, e.data_offset?, e.compressed_size)?;
    match e.method {
        METHOD_STORED => Some(raw[..raw.len().min(n)].to_vec()),
        METHOD_DEFLATE => {
            let mut out = Vec::new();
            let _ = flate2::read::DeflateDecoder::new(raw)
                .take(n as u64)
                .read_to_end(&mut out);
            Some(out)
        }
        _ => None,
    }
}
