//! The streaming writer. The `safetensors` crate serializes from a list of
//! in-memory views and orders entries by dtype; hermetic needs more than it
//! offers, so this part is hand-written: entries are pulled one at a time from
//! an [`EntrySource`] (a GPU tensor can be copied to the host just before it is
//! written), hashed while they stream, ordered by the alignment their views
//! need, and the data section starts on a 64-byte boundary. The header is
//! written first with placeholder digests of the same length and rewritten in
//! place at the end, so the payload is read exactly once.

use crate::digest::Hasher;
use crate::error::{FormatError, Result};
use crate::header::{build_header, doc_json_with, HERMETIC_KEY, LAYOUT_KEY};
use crate::tree::Tree;
use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// One entry to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEntry {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<u64>,
    pub nbytes: u64,
    /// The alignment (a power of two) its start needs in the data section.
    pub align: u64,
    /// Placed right after the entry before it in the plan (one storage's
    /// entries, which a reader views as one run of bytes).
    pub follows: bool,
}

/// Everything the writer needs except the bytes.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub entries: Vec<PlannedEntry>,
    /// `None` writes a shard: digests only.
    pub tree: Option<Tree>,
    /// `__metadata__` besides `format` and the hermetic key, in order.
    pub metadata: Vec<(String, String)>,
}

/// Supplies entry bytes to the writer.
pub trait EntrySource {
    /// Calls `sink` with the bytes of `plan.entries[index]`, in one or more
    /// pieces that add up to exactly its `nbytes`.
    fn write_entry(
        &mut self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<()>;
}

/// An [`EntrySource`] over byte slices already in memory.
pub struct SliceSource<'a>(pub Vec<&'a [u8]>);

impl EntrySource for SliceSource<'_> {
    fn write_entry(
        &mut self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        sink(self.0[index]).map_err(|e| FormatError::Source {
            entry: index.to_string(),
            detail: e.to_string(),
        })
    }
}

/// Options for [`write_file`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// fsync the file (and its folder after the rename) so a power loss
    /// cannot leave a torn file at the target path either. Off by default,
    /// like safetensors: the rename alone already guarantees that a crashed
    /// or killed process never leaves a partial file at the target.
    pub fsync: bool,
}

fn effective_align(e: &PlannedEntry) -> u64 {
    let mut a = e.align.clamp(1, 64).next_power_of_two();
    while a > 1 && e.nbytes % a != 0 {
        a /= 2;
    }
    a
}

impl Plan {
    /// Checks names, sizes and metadata keys.
    pub fn validate(&self) -> Result<()> {
        let mut names = HashSet::new();
        for e in &self.entries {
            if e.name == "__metadata__" {
                return Err(FormatError::unsupported(
                    format!("entry `{}`", e.name),
                    "`__metadata__` is reserved by safetensors",
                ));
            }
            if !names.insert(e.name.as_str()) {
                return Err(FormatError::unsupported(
                    format!("entry `{}`", e.name),
                    "two entries have this name",
                ));
            }
            let bits = e
                .shape
                .iter()
                .try_fold(e.dtype.bitsize() as u64, |acc, &d| acc.checked_mul(d));
            if bits != e.nbytes.checked_mul(8) {
                return Err(FormatError::unsupported(
                    format!("entry `{}`", e.name),
                    format!(
                        "{} bytes do not match shape {:?} of {}",
                        e.nbytes, e.shape, e.dtype
                    ),
                ));
            }
        }
        let mut keys = HashSet::new();
        for (k, v) in &self.metadata {
            if k == HERMETIC_KEY || k == LAYOUT_KEY || (k == "format" && v != "pt") {
                return Err(FormatError::unsupported(
                    format!("metadata[{k:?}]"),
                    "this key is reserved by hermetic",
                ));
            }
            if !keys.insert(k.as_str()) {
                return Err(FormatError::unsupported(
                    format!("metadata[{k:?}]"),
                    "duplicate metadata key",
                ));
            }
        }
        if let Some(tree) = &self.tree {
            let infos: Vec<crate::header::EntryInfo> = self
                .entries
                .iter()
                .map(|e| crate::header::EntryInfo {
                    name: e.name.clone(),
                    st_dtype: e.dtype,
                    shape: e.shape.clone(),
                    start: 0,
                    nbytes: e.nbytes,
                })
                .collect();
            let by: std::collections::HashMap<&str, &crate::header::EntryInfo> =
                infos.iter().map(|e| (e.name.as_str(), e)).collect();
            crate::header::check_tree(tree, "<plan>", &|n| by.get(n).copied())?;
        }
        Ok(())
    }

    /// Runs of entries that stay together: an entry and those that follow it.
    pub fn units(&self) -> Vec<std::ops::Range<usize>> {
        let mut out: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            match out.last_mut() {
                Some(r) if e.follows => r.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
        out
    }

    /// Entry indices in file order: runs (see [`Plan::units`]) by alignment,
    /// largest first, then plan order. A run's alignment is the largest that
    /// its entries' alignments, their offsets in the run and its length allow.
    pub fn file_order(&self) -> Vec<usize> {
        let mut units: Vec<(u64, std::ops::Range<usize>)> = self
            .units()
            .into_iter()
            .map(|r| {
                let mut a = 64u64;
                let mut off = 0u64;
                for e in &self.entries[r.clone()] {
                    a = a.min(effective_align(e));
                    while a > 1 && off % a != 0 {
                        a /= 2;
                    }
                    off += e.nbytes;
                }
                while a > 1 && off % a != 0 {
                    a /= 2;
                }
                (a, r)
            })
            .collect();
        units.sort_by_key(|u| std::cmp::Reverse(u.0));
        units.into_iter().flat_map(|u| u.1).collect()
    }

    fn header(
        &self,
        order: &[usize],
        digests: &[String],
        tree: Option<(&str, u64)>,
    ) -> Result<Vec<u8>> {
        let mut metadata = Vec::with_capacity(self.metadata.len() + 2);
        metadata.push(("format".to_string(), "pt".to_string()));
        let pairs: Vec<(&str, &str)> = order
            .iter()
            .map(|&i| (self.entries[i].name.as_str(), digests[i].as_str()))
            .collect();
        metadata.push((HERMETIC_KEY.to_string(), doc_json_with(tree, &pairs)?));
        metadata.extend(self.metadata.iter().filter(|(k, _)| k != "format").cloned());
        let mut offset = 0u64;
        let mut entries = Vec::with_capacity(order.len());
        for &i in order {
            let e = &self.entries[i];
            entries.push((
                e.name.as_str(),
                e.dtype,
                e.shape.as_slice(),
                offset,
                offset + e.nbytes,
            ));
            offset += e.nbytes;
        }
        build_header(&metadata, &entries)
    }

    /// Total bytes of the data section.
    pub fn data_size(&self) -> u64 {
        self.entries.iter().map(|e| e.nbytes).sum()
    }
}

/// Data is written in pieces that end on multiples of this many bytes of the
/// file (see `write_hashed`).
const WRITE_ALIGN: u64 = 4 << 20;

/// Pieces at least this big are hashed on another thread while written.
const PARALLEL_HASH_MIN: usize = 256 << 10;

/// Writes `bytes` at file position `*pos` and feeds them to `hasher`.
///
/// Every write but the last ends on a `WRITE_ALIGN` boundary of the file: the
/// page cache then holds the data in large folios, which a later map faults
/// in many pages at a time (unaligned 1 MiB writes left 4 KiB pages, and
/// touching a loaded model's every page took 7x longer).
///
/// A large piece is hashed by a pool task while this thread writes it. The
/// write stays on the calling thread, which is the critical path (the
/// kernel's copy into the page cache); the faster hash reads the piece just
/// ahead of the copy, so the copy finds it in cache, and the caller rarely
/// waits at the end of the scope. (A `rayon::join` per piece from outside the
/// pool slept the caller on a latch and woke two threads each time: saves
/// were bimodal, half of them 1.5-4x slower.)
fn write_hashed<W: Write>(
    w: &mut W,
    pos: &mut u64,
    hasher: &mut Hasher,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let to_boundary = WRITE_ALIGN - *pos % WRITE_ALIGN;
        let n = rest
            .len()
            .min(usize::try_from(to_boundary).unwrap_or(usize::MAX));
        let (piece, tail) = rest.split_at(n);
        if piece.len() >= PARALLEL_HASH_MIN {
            let hasher = &mut *hasher;
            rayon::in_place_scope(|s| {
                s.spawn(move |_| hasher.update(piece));
                w.write_all(piece)
            })?;
        } else {
            hasher.update(piece);
            w.write_all(piece)?;
        }
        *pos += n as u64;
        rest = tail;
    }
    Ok(())
}

/// Writes the header placeholder and every entry to `w`; returns the final
/// header, which the caller writes over the placeholder.
fn stream<W: Write>(
    w: &mut W,
    plan: &Plan,
    source: &mut dyn EntrySource,
    io_err: &dyn Fn(std::io::Error) -> FormatError,
) -> Result<Vec<u8>> {
    plan.validate()?;
    let order = plan.file_order();
    let zero = vec!["0".repeat(32); plan.entries.len()];
    // The tree is encoded once, for the placeholder and the final header.
    let tree = match &plan.tree {
        Some(t) => Some((t.to_json()?, t.required_version())),
        None => None,
    };
    let tree = tree.as_ref().map(|(j, v)| (j.as_str(), *v));
    let placeholder = plan.header(&order, &zero, tree)?;
    w.write_all(&placeholder).map_err(io_err)?;
    let mut pos = placeholder.len() as u64;
    let mut digests = zero;
    for &i in &order {
        let e = &plan.entries[i];
        let mut hasher = Hasher::new();
        let mut written = 0u64;
        let mut failed: Option<std::io::Error> = None;
        let mut sink = |bytes: &[u8]| -> std::io::Result<()> {
            written += bytes.len() as u64;
            if written > e.nbytes {
                return Err(std::io::Error::other("more bytes than the entry holds"));
            }
            let result = write_hashed(w, &mut pos, &mut hasher, bytes);
            if let Err(err) = result {
                let kind = err.kind();
                failed = Some(err);
                return Err(std::io::Error::new(kind, "write failed"));
            }
            Ok(())
        };
        let r = source.write_entry(i, &mut sink);
        if let Some(err) = failed {
            return Err(io_err(err));
        }
        r?;
        if written != e.nbytes {
            return Err(FormatError::Source {
                entry: e.name.clone(),
                detail: format!("got {written} bytes, expected {}", e.nbytes),
            });
        }
        digests[i] = hasher.finish();
    }
    let header = plan.header(&order, &digests, tree)?;
    if header.len() != placeholder.len() {
        return Err(FormatError::Source {
            entry: String::new(),
            detail: "header length changed between passes".into(),
        });
    }
    Ok(header)
}

/// Writes a complete file to memory.
pub fn write_to_vec(plan: &Plan, source: &mut dyn EntrySource) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let io_err = |e: std::io::Error| FormatError::Io {
        file: "<bytes>".into(),
        source: e,
    };
    let header = stream(&mut out, plan, source, &io_err)?;
    out[..header.len()].copy_from_slice(&header);
    Ok(out)
}

/// Writes `plan` to `path` through a temporary file in the same folder that
/// is renamed into place only once complete: an interrupted save never leaves
/// a partial file at `path`, and an existing file there stays intact (and
/// any map of it valid) until the rename.
pub fn write_file(
    path: &Path,
    plan: &Plan,
    source: &mut dyn EntrySource,
    opts: WriteOptions,
) -> Result<()> {
    let tmp = write_temp(path, plan, source, opts)?;
    persist(tmp, path, opts)
}

/// Writes a complete temporary file next to `path`, not yet renamed.
pub(crate) fn write_temp(
    path: &Path,
    plan: &Plan,
    source: &mut dyn EntrySource,
    opts: WriteOptions,
) -> Result<tempfile::NamedTempFile> {
    let io_err = |e: std::io::Error| FormatError::io(path, e);
    // Temporaries that earlier saves to this path left when they were
    // killed; a live writer's stay (see `temps`).
    crate::temps::remove_stale(path);
    let tmp = crate::temps::create(path).map_err(io_err)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    let header = stream(&mut w, plan, source, &io_err)?;
    w.flush().map_err(io_err)?;
    drop(w);
    let mut f = tmp.as_file();
    f.seek(SeekFrom::Start(0)).map_err(io_err)?;
    f.write_all(&header).map_err(io_err)?;
    if opts.fsync {
        f.sync_all().map_err(io_err)?;
    }
    Ok(tmp)
}

/// Renames a finished temporary file onto `path`.
pub(crate) fn persist(tmp: tempfile::NamedTempFile, path: &Path, opts: WriteOptions) -> Result<()> {
    tmp.persist(path)
        .map_err(|e| FormatError::io(path, e.error))?;
    if opts.fsync {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the rename itself durable; not every platform can open a
            // folder, so failure to open is not an error.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records where each write ends.
    #[derive(Default)]
    struct Ends {
        data: Vec<u8>,
        ends: Vec<u64>,
    }

    impl Write for Ends {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.data.extend_from_slice(buf);
            self.ends.push(self.data.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_end_on_boundaries_and_hash_everything() {
        let a = WRITE_ALIGN as usize;
        for (start, len) in [(0, 3 * a), (100, 3 * a), (100, a - 200), (a - 1, 2), (7, 0)] {
            let mut w = Ends {
                data: vec![0; start],
                ..Ends::default()
            };
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut pos = start as u64;
            let mut hasher = Hasher::new();
            write_hashed(&mut w, &mut pos, &mut hasher, &bytes).unwrap();
            assert_eq!(pos, (start + len) as u64);
            assert_eq!(&w.data[start..], &bytes[..]);
            assert_eq!(hasher.finish(), crate::digest::digest(&bytes));
            for end in &w.ends[..w.ends.len().saturating_sub(1)] {
                assert_eq!(end % WRITE_ALIGN, 0, "{start}+{len}: {:?}", w.ends);
            }
        }
    }
}
