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

/// Reads `.metadata` (named `file` in messages) without running it.
pub fn parse_metadata(data: &[u8], file: &str) -> Result<Metadata, String> {
    let opts = LoadOptions {
        mode: Mode::Strict,
        flavor: Flavor::Any,
        policy: Policy::builtin(),
        limits: Limits::default(),
        allowed: Allowed::none(),
        encoding: None,
        companions: None,
    };
    let loaded = eval::load(data, file, &opts).map_err(|e| e.to_string())?;
    Reader {
        arena: &loaded.arena,
    }
    .metadata(loaded.root)
}

struct Reader<'r, 'a> {
    arena: &'r eval::Arena<'a>,
}

type Fields = Vec<(String, Id)>;

impl Reader<'_, '_> {
    fn get(&self, id: Id) -> &Value<'_> {
        self.arena.get(id)
    }

    /// An object of `module.name` made as the writer makes it: NEWOBJ with
    /// no arguments, nothing but one BUILD.
    fn object(&self, id: Id, module: &str, name: &str) -> Result<Option<Id>, String> {
        let Value::Object(o) = self.get(id) else {
            return Err(format!(
                "{} where a {name} belongs",
                self.get(id).describe()
            ));
        };
        let class_ok = matches!(self.get(o.class), Value::Global(g)
            if matches!(&**g, eval::Global::Foreign { module: m, name: n } if m == module && n == name));
        let no_args = o
            .args
            .is_none_or(|a| matches!(self.get(a), Value::Tuple(t) if t.is_empty()));
        if !class_ok
            || o.made != eval::Made::New
            || !no_args
            || o.kwargs.is_some()
            || !o.list_items.is_empty()
            || !o.dict_items.is_empty()
        {
            return Err(format!(
                "{} is not a {name} as FileSystemWriter pickles it",
                self.get(o.class).describe()
            ));
        }
        Ok(o.state)
    }

    /// The field dict of a dataclass object (the last value of a repeated key).
    fn fields(&self, id: Id, module: &str, name: &str) -> Result<Fields, String> {
        let Some(state) = self.object(id, module, name)? else {
            return Ok(Vec::new());
        };
        let Value::Dict(d) = self.get(state) else {
            return Err(format!("the state of a {name} is not a dict"));
        };
        let mut out: Fields = Vec::new();
        for &(k, v) in &d.items {
            let key = self
                .str(k)
                .map_err(|_| format!("a {name} field name is not a str"))?;
            match out.iter_mut().find(|(n, _)| n == key) {
                Some(slot) => slot.1 = v,
                None => out.push((key.to_string(), v)),
            }
        }
        Ok(out)
    }

    fn str(&self, id: Id) -> Result<&str, String> {
        match self.get(id) {
            Value::Str(s) => s
                .as_str()
                .ok_or_else(|| "a str that is not UTF-8".to_string()),
            v => Err(format!("{} where a str belongs", v.describe())),
        }
    }

    fn uint(&self, id: Id, what: &str) -> Result<u64, String> {
        match self.get(id) {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            v => Err(format!("{what} is {}, not a size", v.describe())),
        }
    }

    fn size(&self, id: Id, what: &str) -> Result<Vec<u64>, String> {
        match self.get(id) {
            Value::TorchSize(d) if d.iter().all(|&x| x >= 0) => {
                Ok(d.iter().map(|&x| x as u64).collect())
            }
            v => Err(format!("{what} is {}, not a torch.Size", v.describe())),
        }
    }

    fn field(fields: &Fields, name: &str) -> Option<Id> {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    fn known(fields: &Fields, class: &str, allowed: &[&str]) -> Result<(), String> {
        match fields.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("a {class} has a field {n:?} torch's has not")),
            None => Ok(()),
        }
    }

    fn metadata(&self, root: Id) -> Result<Metadata, String> {
        let f = self.fields(root, MD, "Metadata")?;
        Self::known(
            &f,
            "Metadata",
            &[
                "state_dict_metadata",
                "planner_data",
                "storage_data",
                "storage_meta",
                "version",
            ],
        )?;
        let sdm = Self::field(&f, "state_dict_metadata").ok_or("no state_dict_metadata")?;
        let Value::Dict(sdm) = self.get(sdm) else {
            return Err("state_dict_metadata is not a dict".into());
        };
        let mut items: Vec<(String, Item)> = Vec::new();
        for &(k, v) in &sdm.items {
            let fqn = self.str(k)?.to_string();
            let item = self.item(v).map_err(|e| format!("{fqn}: {e}"))?;
            match items.iter_mut().find(|(n, _)| *n == fqn) {
                Some(slot) => slot.1 = item,
                None => items.push((fqn, item)),
            }
        }
        let sd = Self::field(&f, "storage_data")
            .ok_or("no storage_data (not written by FileSystemWriter)")?;
        let Value::Dict(sd) = self.get(sd) else {
            return Err("storage_data is not a dict (not written by FileSystemWriter)".into());
        };
        let mut storage: Vec<StorageEntry> = Vec::new();
        for &(k, v) in &sd.items {
            let e = self.storage_entry(k, v)?;
            // A dict keyed by MetadataIndex: equal (fqn, offset) keys are one.
            match storage
                .iter_mut()
                .find(|s| s.fqn == e.fqn && s.chunk == e.chunk)
            {
                Some(slot) => *slot = e,
                None => storage.push(e),
            }
        }
        let mut paths = Vec::new();
        if let Some(pd) = Self::field(&f, "planner_data") {
            match self.get(pd) {
                Value::None => {}
                Value::Dict(d) => {
                    for &(k, v) in &d.items {
                        let fqn = self.str(k)?.to_string();
                        let path = self
                            .path(v)
                            .map_err(|e| format!("planner_data {fqn}: {e}"))?;
                        match paths.iter_mut().find(|(n, _): &&mut (String, _)| *n == fqn) {
                            Some(slot) => slot.1 = path,
                            None => paths.push((fqn, path)),
                        }
                    }
                }
                v => return Err(format!("planner_data is {}", v.describe())),
            }
        }
        let version = match Self::field(&f, "version").map(|v| self.get(v)) {
            None | Some(Value::None) => None,
            Some(Value::Str(s)) => Some(s.lossy().into_owned()),
            Some(v) => return Err(format!("version is {}", v.describe())),
        };
        if let Some(m) = Self::field(&f, "storage_meta") {
            if !matches!(self.get(m), Value::None) {
                let sm = self.fields(m, MD, "StorageMeta")?;
                Self::known(
                    &sm,
                    "StorageMeta",
                    &["checkpoint_id", "save_id", "load_id", "modules"],
                )?;
            }
        }
        Ok(Metadata {
            items,
            storage,
            paths,
            version,
        })
    }

    fn item(&self, id: Id) -> Result<Item, String> {
        if let Ok(f) = self.fields(id, MD, "BytesStorageMetadata") {
            Self::known(&f, "BytesStorageMetadata", &[])?;
            return Ok(Item::Bytes);
        }
        let f = self.fields(id, MD, "TensorStorageMetadata")?;
        Self::known(
            &f,
            "TensorStorageMetadata",
            &["properties", "size", "chunks"],
        )?;
        let props = Self::field(&f, "properties").ok_or("no properties")?;
        let state = self
            .object(props, MD, "TensorProperties")?
            .ok_or("TensorProperties without a state")?;
        // __getstate__: (dtype, layout, requires_grad, memory format
        // encoding, pin_memory[, strides]).
        let dtype = match self.get(state) {
            Value::Tuple(t) if t.len() == 5 || t.len() == 6 => match self.get(t[0]) {
                Value::TorchDtype(d) => *d,
                v => return Err(format!("the dtype is {}", v.describe())),
            },
            _ => return Err("the TensorProperties state is not a 5- or 6-tuple".into()),
        };
        let size = self.size(Self::field(&f, "size").ok_or("no size")?, "size")?;
        let chunks_id = Self::field(&f, "chunks").ok_or("no chunks")?;
        let Value::List(list) = self.get(chunks_id) else {
            return Err("chunks are not a list".into());
        };
        let mut chunks = Vec::new();
        for &c in list {
            let cf = self.fields(c, MD, "ChunkStorageMetadata")?;
            Self::known(&cf, "ChunkStorageMetadata", &["offsets", "sizes"])?;
            let offsets = self.size(
                Self::field(&cf, "offsets").ok_or("no offsets")?,
                "chunk offsets",
            )?;
            let sizes = self.size(Self::field(&cf, "sizes").ok_or("no sizes")?, "chunk sizes")?;
            let inside = offsets.len() == size.len()
                && sizes.len() == size.len()
                && offsets
                    .iter()
                    .zip(&sizes)
                    .zip(&size)
                    .all(|((&o, &s), &d)| o.checked_add(s).is_some_and(|e| e <= d));
            if !inside {
                return Err("a chunk lies outside the tensor".into());
            }
            chunks.push(Chunk { offsets, sizes });
        }
        Ok(Item::Tensor {
            dtype,
            size,
            chunks,
        })
    }

    fn storage_entry(&self, key: Id, value: Id) -> Result<StorageEntry, String> {
        let k = self.fields(key, MD, "MetadataIndex")?;
        Self::known(&k, "MetadataIndex", &["fqn", "offset", "index"])?;
        let fqn = self.str(Self::field(&k, "fqn").ok_or("a MetadataIndex without fqn")?)?;
        let chunk = match Self::field(&k, "offset").map(|o| (o, self.get(o))) {
            None | Some((_, Value::None)) => None,
            Some((o, _)) => Some(self.size(o, "an index offset")?),
        };
        let v = self.fields(value, FS, "_StorageInfo")?;
        Self::known(
            &v,
            "_StorageInfo",
            &["relative_path", "offset", "length", "transform_descriptors"],
        )?;
        let file = self.str(Self::field(&v, "relative_path").ok_or("no relative_path")?)?;
        let offset = self.uint(Self::field(&v, "offset").ok_or("no offset")?, "offset")?;
        let length = self.uint(Self::field(&v, "length").ok_or("no length")?, "length")?;
        let mut transforms = Vec::new();
        if let Some(t) = Self::field(&v, "transform_descriptors") {
            match self.get(t) {
                Value::None => {}
                Value::List(l) | Value::Tuple(l) => {
                    for &s in l {
                        transforms.push(self.str(s)?.to_string());
                    }
                }
                v => return Err(format!("transform_descriptors are {}", v.describe())),
            }
        }
        Ok(StorageEntry {
            fqn: fqn.to_string(),
            chunk,
            file: file.to_string(),
            offset,
            length,
            transforms,
        })
    }

    fn path(&self, id: Id) -> Result<Vec<PathKey>, String> {
        let (Value::Tuple(t) | Value::List(t)) = self.get(id) else {
            return Err(format!("{}, not a tuple", self.get(id).describe()));
        };
        t.iter()
            .map(|&p| match self.get(p) {
                Value::Str(s) => Ok(PathKey::Key(s.lossy().into_owned())),
                Value::Int(i) if *i >= 0 => Ok(PathKey::Index(*i as u64)),
                v => Err(format!("a path step is {}", v.describe())),
            })
            .collect()
    }
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

/// What a path of `planner_data` builds (`_traverse.set_element`).
enum Slot {
    Dict(Vec<(String, Slot)>),
    List(Vec<Option<Slot>>),
    Leaf(Id),
}

impl Slot {
    fn empty_for(key: &PathKey) -> Slot {
        match key {
            PathKey::Key(_) => Slot::Dict(Vec::new()),
            PathKey::Index(_) => Slot::List(Vec::new()),
        }
    }

    /// The child at `key`, made as `set_element` makes it.
    fn child(&mut self, key: &PathKey, next: &PathKey) -> Result<&mut Slot, String> {
        match (self, key) {
            (Slot::Dict(items), PathKey::Key(k)) => {
                let i = match items.iter().position(|(n, _)| n == k) {
                    Some(i) => i,
                    None => {
                        items.push((k.clone(), Slot::empty_for(next)));
                        items.len() - 1
                    }
                };
                Ok(&mut items[i].1)
            }
            (Slot::List(items), PathKey::Index(i)) => {
                let i = usize::try_from(*i).map_err(|_| "a huge list index")?;
                if i >= items.len() {
                    if i > 1 << 24 {
                        return Err("a list index above 2^24".into());
                    }
                    items.resize_with(i + 1, || None);
                }
                Ok(items[i].get_or_insert_with(|| Slot::empty_for(next)))
            }
            _ => Err("a planner_data path that mixes dict keys and list indices".into()),
        }
    }

    fn set(&mut self, key: &PathKey, value: Id) -> Result<(), String> {
        match (self, key) {
            (Slot::Dict(items), PathKey::Key(k)) => {
                match items.iter_mut().find(|(n, _)| n == k) {
                    Some(slot) => slot.1 = Slot::Leaf(value),
                    None => items.push((k.clone(), Slot::Leaf(value))),
                }
                Ok(())
            }
            (Slot::List(items), PathKey::Index(i)) => {
                let i = usize::try_from(*i).map_err(|_| "a huge list index")?;
                if i >= items.len() {
                    if i > 1 << 24 {
                        return Err("a list index above 2^24".into());
                    }
                    items.resize_with(i + 1, || None);
                }
                items[i] = Some(Slot::Leaf(value));
                Ok(())
            }
            _ => Err("a planner_data path that mixes dict keys and list indices".into()),
        }
    }

    fn build(
        self,
        arena: &mut eval::Arena<'static>,
        budget: &mut eval::Budget,
    ) -> Result<Id, String> {
        let v = match self {
            Slot::Leaf(id) => return Ok(id),
            Slot::Dict(items) => {
                let mut pairs = Vec::with_capacity(items.len());
                for (k, v) in items {
                    let key = arena.push(
                        Value::Str(eval::Str {
                            bytes: std::borrow::Cow::Owned(k.into_bytes()),
                            utf8: true,
                        }),
                        budget,
                    )?;
                    pairs.push((key, v.build(arena, budget)?));
                }
                Value::Dict(Box::new(eval::Dict {
                    kind: eval::DictKind::Dict,
                    items: pairs,
                    state: None,
                }))
            }
            Slot::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    out.push(match v {
                        Some(v) => v.build(arena, budget)?,
                        None => eval::NONE,
                    });
                }
                Value::List(out)
            }
        };
        arena.push(v, budget)
    }
}

/// A DCP checkpoint consolidated into one value tree, as
/// `torch.distributed.checkpoint.format_utils.dcp_to_torch_save` builds it
/// (`_EmptyStateDictLoadPlanner`: each tensor the size `state_dict_metadata`
/// gives, filled chunk by chunk; each key placed by its `planner_data` path;
/// non-tensor items as `torch.load` returns them), read without running
/// anything: every item is evaluated by the safe evaluator in strict mode.
/// The tensors are owned buffers (the whole checkpoint is in memory).
pub fn consolidate(dir: &Path) -> Result<eval::Loaded<'static>, String> {
    let name = dir.display().to_string();
    let md_path = dir.join(METADATA);
    let md = parse_metadata(&read(&md_path)?, &md_path.display().to_string())?;
    let limits = Limits::default();
    let mut budget = eval::Budget::new(limits.max_eval_memory);
    let mut arena = eval::Arena::new();
    let mut storages: Vec<eval::Storage> = Vec::new();
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let opts = LoadOptions {
        mode: Mode::Strict,
        flavor: Flavor::Torch,
        policy: Policy::builtin(),
        limits: limits.clone(),
        allowed: Allowed::none(),
        encoding: None,
        companions: None,
    };
    let mut root = Slot::Dict(Vec::new());
    for (fqn, item) in &md.items {
        let value = match item {
            Item::Tensor {
                dtype,
                size,
                chunks,
            } => {
                let itemsize = dtype.itemsize();
                let numel = size
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| format!("{fqn}: the size overflows"))?;
                let covered = chunks
                    .iter()
                    .try_fold(0u64, |a, c| {
                        c.sizes
                            .iter()
                            .try_fold(1u64, |p, &d| p.checked_mul(d))
                            .and_then(|n| a.checked_add(n))
                    })
                    .ok_or_else(|| format!("{fqn}: the chunks overflow"))?;
                if covered != numel {
                    return Err(format!(
                        "{fqn}: its chunks hold {covered} of its {numel} elements"
                    ));
                }
                let nbytes = numel
                    .checked_mul(itemsize)
                    .ok_or_else(|| format!("{fqn}: the size overflows"))?;
                budget.charge(nbytes).map_err(|e| format!("{fqn}: {e}"))?;
                let mut buf = vec![0u8; nbytes as usize];
                for c in chunks {
                    let e = md.entry(fqn, Some(&c.offsets)).ok_or_else(|| {
                        format!("{fqn}: no storage_data for the chunk at {:?}", c.offsets)
                    })?;
                    let data = item_bytes(dir, &mut files, e)?;
                    let loaded = eval::load(data, &format!("{fqn}@{}", e.offset), &opts)
                        .map_err(|e| e.to_string())?;
                    copy_chunk(&loaded, fqn, *dtype, size, c, &mut buf)?;
                }
                let stride = contiguous(size);
                let index = u32::try_from(storages.len()).map_err(|_| "too many tensors")?;
                storages.push(eval::Storage {
                    key: index.to_string(),
                    dtype: *dtype,
                    nbytes,
                    location: "cpu".into(),
                    data: eval::StorageData::Owned(buf),
                });
                arena.push(
                    Value::Tensor(Box::new(eval::Tensor {
                        storage: Some(eval::StorageView {
                            index,
                            dtype: *dtype,
                            byte_offset: 0,
                            nbytes,
                        }),
                        dtype: *dtype,
                        offset: 0,
                        shape: size.clone(),
                        stride,
                        requires_grad: false,
                        parameter: false,
                        metadata: None,
                        state: None,
                    })),
                    &mut budget,
                )?
            }
            Item::Bytes => {
                let e = md
                    .entry(fqn, None)
                    .ok_or_else(|| format!("{fqn}: no storage_data for it"))?;
                let data = item_bytes(dir, &mut files, e)?;
                let loaded = eval::load(data, &format!("{fqn}@{}", e.offset), &opts)
                    .map_err(|e| e.to_string())?;
                if !loaded.storages.is_empty() {
                    return Err(format!(
                        "{fqn}: a non-tensor item that holds tensors is not consolidated"
                    ));
                }
                budget
                    .charge(loaded.arena.len() as u64 * 64)
                    .map_err(|e| format!("{fqn}: {e}"))?;
                let root_id = loaded.root;
                let map = arena.absorb(loaded.arena);
                map(root_id)
            }
        };
        let path = md
            .paths
            .iter()
            .rev()
            .find(|(n, _)| n == fqn)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| vec![PathKey::Key(fqn.clone())]);
        let Some((last, steps)) = path.split_last() else {
            return Err(format!("{fqn}: an empty planner_data path"));
        };
        // set_element: the first step is a key of the (dict) root.
        let mut cur = &mut root;
        for (i, key) in steps.iter().enumerate() {
            let next = path.get(i + 1).unwrap_or(last);
            cur = cur.child(key, next).map_err(|e| format!("{fqn}: {e}"))?;
        }
        cur.set(last, value).map_err(|e| format!("{fqn}: {e}"))?;
    }
    let root = root.build(&mut arena, &mut budget)?;
    Ok(eval::Loaded {
        file: name.clone(),
        format: eval::Format::TorchZip,
        data: &[],
        arena,
        root,
        storages,
        big_endian: false,
        report: FileReport::new(name, "dcp"),
    })
}

fn contiguous(size: &[u64]) -> Vec<u64> {
    let mut stride = vec![1u64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1].max(1);
    }
    stride
}

/// The bytes of one item, as `FileSystemReader` slices them.
fn item_bytes<'f>(
    dir: &Path,
    files: &'f mut HashMap<String, Vec<u8>>,
    e: &StorageEntry,
) -> Result<&'f [u8], String> {
    if !is_plain_name(&e.file) || e.file == METADATA {
        return Err(format!(
            "{}: stored in {:?}, not a plain file name in the folder",
            e.fqn, e.file
        ));
    }
    if !e.transforms.is_empty() {
        return Err(format!(
            "{}: stored through the stream transforms {:?}, which hermetic does not read",
            e.fqn, e.transforms
        ));
    }
    if !files.contains_key(&e.file) {
        let data = read(&dir.join(&e.file)).map_err(|err| format!("{}: {err}", e.file))?;
        files.insert(e.file.clone(), data);
    }
    let data = &files[&e.file];
    let end = e
        .offset
        .checked_add(e.length)
        .filter(|&x| x <= data.len() as u64);
    match end {
        Some(end) => Ok(&data[e.offset as usize..end as usize]),
        None => Err(format!(
            "{}: bytes {}+{} lie outside {}",
            e.fqn, e.offset, e.length, e.file
        )),
    }
}

/// Copies the tensor an item holds into its box of the global tensor.
fn copy_chunk(
    loaded: &eval::Loaded<'_>,
    fqn: &str,
    dtype: TorchDtype,
    size: &[u64],
    c: &Chunk,
    out: &mut [u8],
) -> Result<(), String> {
    let Value::Tensor(t) = loaded.arena.get(loaded.root) else {
        return Err(format!(
            "{fqn}: the item holds {}, not a tensor",
            loaded.arena.get(loaded.root).describe()
        ));
    };
    if t.dtype != dtype || t.shape != c.sizes {
        return Err(format!(
            "{fqn}: the item holds a {} tensor of shape {:?}, the metadata says {} {:?}",
            t.dtype.name(),
            t.shape,
            dtype.name(),
            c.sizes
        ));
    }
    let Some(view) = t.storage else {
        return Err(format!("{fqn}: the item is a meta tensor"));
    };
    let bytes = loaded.storage_bytes(view.index);
    let bytes = &bytes[view.byte_offset as usize..(view.byte_offset + view.nbytes) as usize];
    let item = dtype.itemsize() as usize;
    let numel: u64 = c.sizes.iter().product();
    if numel == 0 {
        return Ok(());
    }
    let gstride = contiguous(size);
    let rank = c.sizes.len();
    let mut idx = vec![0u64; rank];
    // Innermost runs are copied whole when the source is contiguous there.
    let (run, inner) = match rank {
        0 => (1u64, false),
        _ => (c.sizes[rank - 1], t.stride[rank - 1] == 1),
    };
    let step = if inner { run } else { 1 };
    let mut done = 0u64;
    while done < numel {
        let src: u64 = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
        let dst: u64 = idx
            .iter()
            .zip(&c.offsets)
            .zip(&gstride)
            .map(|((i, o), s)| (i + o) * s)
            .sum();
        let n = step as usize * item;
        let (s0, d0) = (src as usize * item, dst as usize * item);
        let from = bytes
            .get(s0..s0 + n)
            .ok_or_else(|| format!("{fqn}: the tensor reads past its storage"))?;
        out[d0..d0 + n].copy_from_slice(from);
        done += step;
        // Advance the multi-index by `step` along the last axis.
        let mut k = rank;
        let mut carry = step;
        while k > 0 && carry > 0 {
            k -= 1;
            idx[k] += carry;
            carry = 0;
            if idx[k] >= c.sizes[k] && k > 0 {
                idx[k] = 0;
                carry = 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
