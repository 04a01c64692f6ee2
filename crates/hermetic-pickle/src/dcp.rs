//! Checkpoints written by `torch.distributed.checkpoint`'s default
//! `FileSystemWriter` (torch/distributed/checkpoint/filesystem.py): a folder
//! with `.metadata`, `pickle.dump` of a `Metadata`, and `__R_I.distcp` files,
//! each one writer's items back to back. Every item, tensor or not, is one
//! `torch.save` archive (`_write_item`: a tensor is `torch.save`d, a non-tensor
//! item is the bytes the planner made with `torch.save(obj)`), read back by
//! `FileSystemReader.read_data` from the `(relative_path, offset, length)` of
//! its `_StorageInfo` in `Metadata.storage_data`: `torch.load(weights_only=True)`
//! for tensors, the planner's `torch.load(weights_only=False)` for the rest.
//!
//! [`parse_metadata`] reads `.metadata` with the safe evaluator (which rebuilds
//! only [`crate::policy::DCP_METADATA_CLASSES`] and data); [`check_folder`]
//! judges a folder's files together: every byte range DCP's reader would
//! `torch.load` is scanned as that load reads it, and bytes no item accounts
//! for keep the folder from being `safe`.

use crate::codes::FindingCode;
use crate::eval::{self, Allowed, Flavor, Id, LoadOptions, Mode, TorchDtype, Value};
use crate::policy::{Policy, Verdict};
use crate::report::FileReport;
use crate::Limits;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod consolidate;
mod metadata;

pub use consolidate::consolidate;
pub use metadata::parse_metadata;

/// The metadata file's name (`_metadata_fn`).
pub const METADATA: &str = ".metadata";
/// The shard files' suffix (`DEFAULT_SUFFIX`).
pub const SUFFIX: &str = ".distcp";

const MD: &str = "torch.distributed.checkpoint.metadata";
const FS: &str = "torch.distributed.checkpoint.filesystem";

/// What `.metadata` says, in its order.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// `state_dict_metadata`: each flattened key and what it holds.
    pub items: Vec<(String, Item)>,
    /// `storage_data`: where each item (each tensor chunk) is stored.
    pub storage: Vec<StorageEntry>,
    /// `planner_data` of the default planner: each flattened key's path in
    /// the original state dict (`set_element`'s object path).
    pub paths: Vec<(String, Vec<PathKey>)>,
    pub version: Option<String>,
}

/// One `state_dict_metadata` value.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `TensorStorageMetadata`: the global tensor and its saved chunks.
    Tensor {
        dtype: TorchDtype,
        size: Vec<u64>,
        chunks: Vec<Chunk>,
    },
    /// `BytesStorageMetadata`: a `torch.save`d object.
    Bytes,
}

/// `ChunkStorageMetadata`: a box of the global tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
}

/// One `storage_data` entry: `MetadataIndex(fqn, offset)` -> `_StorageInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageEntry {
    pub fqn: String,
    /// The chunk's offsets, for tensors.
    pub chunk: Option<Vec<u64>>,
    pub file: String,
    pub offset: u64,
    pub length: u64,
    pub transforms: Vec<String>,
}

/// A step of a `planner_data` path: a dict key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathKey {
    Key(String),
    Index(u64),
}

impl Metadata {
    /// The storage entry of `fqn` at chunk `offsets` (`None` for bytes).
    pub fn entry(&self, fqn: &str, offsets: Option<&[u64]>) -> Option<&StorageEntry> {
        self.storage
            .iter()
            .rev()
            .find(|e| e.fqn == fqn && e.chunk.as_deref() == offsets)
    }
}

/// Whether a `relative_path` is a plain file name in the folder, as the
/// writer writes (`FileSystemReader` would follow `../` or an absolute path).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// The folders among `files` that hold a DCP checkpoint: `(index of
/// .metadata, indices of the files beside it)`.
pub fn folders(files: &[PathBuf]) -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if f.file_name().and_then(|n| n.to_str()) != Some(METADATA) {
            continue;
        }
        let dir = f.parent();
        let beside: Vec<usize> = files
            .iter()
            .enumerate()
            .filter(|(j, g)| *j != i && g.parent() == dir)
            .map(|(j, _)| j)
            .collect();
        let has_shard = beside
            .iter()
            .any(|&j| files[j].to_string_lossy().ends_with(SUFFIX));
        if has_shard {
            out.push((i, beside));
        }
    }
    out
}

/// The first line of an error, at most 300 characters.
fn shorten(e: &str) -> String {
    let line = e.lines().next().unwrap_or("");
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut f = crate::fsio::open_regular(path).map_err(|e| e.to_string())?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(|e| e.to_string())?;
    Ok(v)
}

/// Judges the DCP folder whose `.metadata` is `files[meta]` (its own scan in
/// `reports[meta]`), with the files beside it: formats become `dcp-metadata`
/// and `dcp-shard`, and findings are added where DCP's reader would read
/// what the scan of a file alone did not see as it reads it.
///
/// - every `storage_data` item is scanned as `torch.load` reads its byte
///   range (when the ranges are exactly the archives the file's own scan
///   found back to back, that scan already did; its streams are renamed
///   after their items);
/// - `dcp_layout` (dangerous): an item outside its file, overlapping
///   another, in a file that is not a plain name of the folder, or stored
///   through stream transforms (compression) hermetic does not read;
/// - `dcp_unaccounted` (suspicious): bytes of a `.distcp` file no item
///   covers, a `.distcp` file no item names, a file named but missing, or a
///   `.metadata` that is not DCP metadata hermetic can read (then nothing is
///   known about the shards).
pub fn check_folder(
    files: &[PathBuf],
    reports: &mut [FileReport],
    meta: usize,
    beside: &[usize],
    policy: &Policy,
    limits: &Limits,
) {
    reports[meta].format = "dcp-metadata".into();
    let shards: Vec<usize> = beside
        .iter()
        .copied()
        .filter(|&j| files[j].to_string_lossy().ends_with(SUFFIX))
        .collect();
    let md = read(&files[meta])
        .and_then(|d| parse_metadata(&d, &reports[meta].path))
        .map_err(|e| shorten(&e));
    let md = match md {
        Ok(m) => m,
        Err(e) => {
            for &j in &shards {
                reports[j].format = "dcp-shard".into();
                reports[j].add_finding(
                    Verdict::Suspicious,
                    FindingCode::DcpUnaccounted,
                    0,
                    format!("the folder's .metadata is not DCP metadata hermetic can read, so what torch.distributed.checkpoint reads from this file is unknown: {e}"),
                );
                reports[j].finish();
            }
            reports[meta].finish();
            return;
        }
    };
    let by_name: HashMap<String, usize> = beside
        .iter()
        .filter_map(|&j| Some((files[j].file_name()?.to_str()?.to_string(), j)))
        .collect();
    let mut per_file: HashMap<usize, Vec<&StorageEntry>> = HashMap::new();
    for e in &md.storage {
        if !is_plain_name(&e.file) || e.file == METADATA {
            reports[meta].add_finding(
                Verdict::Dangerous,
                FindingCode::DcpLayout,
                0,
                format!(
                    "storage_data reads {} from {:?}, not a plain file name in the folder: torch.distributed.checkpoint opens it wherever it leads",
                    e.fqn, e.file
                ),
            );
            continue;
        }
        match by_name.get(&e.file) {
            Some(&j) => per_file.entry(j).or_default().push(e),
            None => reports[meta].add_finding(
                Verdict::Suspicious,
                FindingCode::DcpUnaccounted,
                0,
                format!(
                    "storage_data reads {} from {:?}, which is not in the folder",
                    e.fqn, e.file
                ),
            ),
        }
    }
    for &j in &shards {
        if !per_file.contains_key(&j) {
            reports[j].add_finding(
                Verdict::Suspicious,
                FindingCode::DcpUnaccounted,
                0,
                "no storage_data item of the folder's .metadata is in this file",
            );
        }
    }
    for (&j, entries) in &mut per_file {
        check_file(&files[j], &mut reports[j], entries, policy, limits);
    }
    for &j in &shards {
        reports[j].format = "dcp-shard".into();
        reports[j].finish();
    }
    reports[meta].finish();
}

fn check_file(
    path: &Path,
    report: &mut FileReport,
    entries: &mut [&StorageEntry],
    policy: &Policy,
    limits: &Limits,
) {
    let data = match read(path) {
        Ok(d) => d,
        Err(e) => {
            report.add_finding(
                Verdict::Dangerous,
                FindingCode::DcpLayout,
                0,
                format!("cannot read: {e}"),
            );
            return;
        }
    };
    let len = data.len() as u64;
    entries.sort_by_key(|e| (e.offset, e.length));
    let mut ranges: Vec<(usize, usize, &StorageEntry)> = Vec::new();
    let mut covered = 0u64;
    for e in entries.iter() {
        let end = e.offset.checked_add(e.length).filter(|&x| x <= len);
        let Some(end) = end else {
            report.add_finding(
                Verdict::Dangerous,
                FindingCode::DcpLayout,
                e.offset,
                format!(
                    "{}: bytes {}+{} lie outside the file ({len} bytes)",
                    e.fqn, e.offset, e.length
                ),
            );
            continue;
        };
        if !e.transforms.is_empty() {
            report.add_finding(
                Verdict::Dangerous,
                FindingCode::DcpLayout,
                e.offset,
                format!(
                    "{}: stored through the stream transforms {:?}, which hermetic does not read (the pickle inside is not scanned)",
                    e.fqn, e.transforms
                ),
            );
        }
        if e.offset < covered {
            report.add_finding(
                Verdict::Dangerous,
                FindingCode::DcpLayout,
                e.offset,
                format!("{}: overlaps the item before it", e.fqn),
            );
        } else if e.offset > covered {
            report.add_finding(
                Verdict::Suspicious,
                FindingCode::DcpUnaccounted,
                covered,
                format!(
                    "bytes {covered}..{} belong to no storage_data item",
                    e.offset
                ),
            );
        }
        covered = covered.max(end);
        ranges.push((e.offset as usize, end as usize, e));
    }
    if covered < len && !ranges.is_empty() {
        report.add_finding(
            Verdict::Suspicious,
            FindingCode::DcpUnaccounted,
            covered,
            format!("bytes {covered}..{len} belong to no storage_data item"),
        );
    }
    // What the file's own scan read back to back.
    let parts = crate::containers::zip::concatenated_archives(
        &data,
        limits.max_archive_entries,
        limits.max_streams,
    )
    .unwrap_or_else(|| vec![(0, data.len())]);
    let same = parts.len() == ranges.len()
        && parts
            .iter()
            .zip(&ranges)
            .all(|(&(a, b), &(s, e, _))| a == s && b == e);
    if same {
        for s in &mut report.streams {
            let Some(&(start, _, e)) = ranges
                .iter()
                .rev()
                .find(|(s0, _, _)| *s0 as u64 <= s.offset)
            else {
                continue;
            };
            let rest = s
                .name
                .strip_prefix(&format!("@{start}:"))
                .unwrap_or(&s.name)
                .to_string();
            s.name = format!("{}@{start}:{rest}", e.fqn);
        }
        return;
    }
    // DCP reads other byte ranges than the file's own scan: scan each as the
    // load of that range reads it.
    for &(start, end, e) in &ranges {
        let r = crate::scan_bytes(&data[start..end], &e.fqn, policy, limits);
        let base = start as u64;
        for mut s in r.streams {
            s.name = format!("{}@{start}:{}", e.fqn, s.name);
            s.offset += base;
            for f in &mut s.findings {
                f.offset += base;
            }
            for g in &mut s.globals {
                g.offset += base;
            }
            report.streams.push(s);
        }
        for mut f in r.findings {
            f.offset += base;
            f.reason = format!("{} (item {}): {}", f.reason, e.fqn, "as DCP reads it");
            report.findings.push(f);
        }
        if let Some(err) = r.error {
            report.add_finding(
                Verdict::Dangerous,
                FindingCode::DcpLayout,
                base,
                format!("{}: {err}", e.fqn),
            );
        }
    }
}

#[cfg(test)]
mod tests;
