//! Readers: PyTorch zip and legacy checkpoints (storages through persistent
//! ids), `.npy`/`.npz`, and raw pickles, each evaluated into one arena.

use super::bytes::byteswap;
use super::error::{malformed, unsupported, Budget, EvalError, Problem};
use super::heap::{Ctx, NoPersist, Persist, Py2Str};
use super::machine::run_stream;
use super::numpy::{array_nbytes, npy_header_in, NpyHeader};
use super::value::{Arena, ArrayData, Global, Id, Known, NdArray, StorageView, TorchDtype, Value};
use super::{Flavor, LoadOptions};
use crate::containers::compress::Compression;
use crate::containers::npy;
use crate::containers::torch_legacy::{magic_stream_end, pickled_int, PickledInt};
use crate::containers::zip::{read_entry, ZipArchive, ZipEntry};
use crate::containers::{sniff, Kind};
use std::borrow::Cow;
use std::collections::HashMap;

/// What kind of file was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    TorchZip,
    TorchLegacy,
    Npy,
    Npz,
    Pickle,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::TorchZip => "torch-zip",
            Format::TorchLegacy => "torch-legacy",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Pickle => "pickle",
        }
    }
}

/// Where a storage's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageData {
    /// In the file at this offset, exactly as the storage holds them: a
    /// loader can map them without copying.
    File { offset: u64 },
    /// Made while loading: inflated, or byte-swapped from big-endian.
    Owned(Vec<u8>),
}

/// One storage of a torch checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    /// Its key in the checkpoint (`data/<key>` in a zip).
    pub key: String,
    /// The element type it was saved with.
    pub dtype: TorchDtype,
    pub nbytes: u64,
    /// The device it was saved from (`cpu`, `cuda:0`).
    pub location: String,
    pub data: StorageData,
}

/// Everything one load produced.
#[derive(Debug)]
pub struct Loaded<'a> {
    pub file: String,
    pub format: Format,
    /// The file's bytes, which [`StorageData::File`] offsets index.
    pub data: &'a [u8],
    pub arena: Arena<'a>,
    pub root: Id,
    pub storages: Vec<Storage>,
    /// The zip `byteorder` record said `big`; storages were swapped.
    pub big_endian: bool,
    /// The scan that cleared the file for evaluation.
    pub report: crate::FileReport,
}

impl Loaded<'_> {
    /// The bytes of a storage.
    pub fn storage_bytes(&self, index: u32) -> &[u8] {
        let s = &self.storages[index as usize];
        match &s.data {
            StorageData::Owned(v) => v,
            StorageData::File { offset } => {
                let start = *offset as usize;
                &self.data[start..start + s.nbytes as usize]
            }
        }
    }

    /// The bytes a storage view covers.
    pub fn view_bytes(&self, v: &StorageView) -> &[u8] {
        let b = self.storage_bytes(v.index);
        let start = v.byte_offset as usize;
        &b[start..start + v.nbytes as usize]
    }
}

pub(crate) struct Reader<'o> {
    pub file: String,
    pub opts: &'o LoadOptions<'o>,
    pub budget: Budget,
}

impl<'o> Reader<'o> {
    fn ctx(&self, torch: bool) -> Ctx<'o> {
        let opts: &'o LoadOptions<'o> = self.opts;
        let utf8 = torch || opts.flavor == Flavor::Torch;
        Ctx {
            mode: opts.mode,
            py2_str: opts
                .encoding
                .unwrap_or(if utf8 { Py2Str::Utf8 } else { Py2Str::Ascii }),
            limits: &opts.limits,
            torch_names: torch,
            allowed: opts.allowed,
            joblib: false,
            companions: opts.companions,
        }
    }

    fn err(&self, offset: u64, p: Problem) -> EvalError {
        p.at(&self.file, offset)
    }
}

/// Reads `data` by its content.
pub(crate) fn read<'a>(
    data: &'a [u8],
    r: &mut Reader<'_>,
    report: crate::FileReport,
) -> Result<Loaded<'a>, EvalError> {
    let torch_only = r.opts.flavor == Flavor::Torch;
    let kind = sniff(data);
    let mut out = Loaded {
        file: r.file.clone(),
        format: Format::Pickle,
        data,
        arena: Arena::new(),
        root: 0,
        storages: Vec::new(),
        big_endian: false,
        report,
    };
    match kind {
        Kind::Zip => {
            let archive = ZipArchive::parse(data, r.opts.limits.max_archive_entries)
                .map_err(|e| r.err(e.offset(), malformed(format!("unreadable zip archive: {e}"))))?;
            if let Some(root) = torch_root(&archive) {
                out.format = Format::TorchZip;
                torch_zip(data, &archive, &root, r, &mut out)?;
            } else if !torch_only && archive.entries.iter().all(|e| !e.name.is_empty()) {
                out.format = Format::Npz;
                npz(data, &archive, r, &mut out)?;
            } else {
                return Err(r.err(
                    0,
                    unsupported("a zip archive that is not a PyTorch checkpoint (no `<root>/data.pkl` record)"),
                ));
            }
        }
        Kind::Npy if !torch_only => {
            out.format = Format::Npy;
            let v = npy_value(data, 0, r, &mut out.arena)?;
            out.root = v;
        }
        Kind::Pickle if magic_stream_end(data, 0).is_some() => {
            out.format = Format::TorchLegacy;
            legacy(data, r, &mut out)?;
        }
        Kind::Pickle if !torch_only => {
            out.format = Format::Pickle;
            let mut ctx = r.ctx(false);
            // joblib.load's reading, where the scanner reads the file as joblib's.
            ctx.joblib = crate::containers::joblib::is_joblib(data, 0);
            let (root, _) = run_stream(
                data,
                0,
                0,
                &r.file,
                &ctx,
                &mut out.arena,
                &mut r.budget,
                &mut NoPersist,
            )?;
            out.root = root;
        }
        Kind::Compressed(c) if !torch_only => {
            // joblib.load's reading (pandas.read_pickle's too): the whole
            // decompressed layer, every concatenated stream, then one pickle.
            // The scan already read it the same way, so it was gated whole.
            out.root = compressed(data, c, r, &mut out.arena)?;
        }
        Kind::Pickle => {
            return Err(r.err(
                0,
                malformed("a plain pickle, not a torch checkpoint: the legacy magic number is missing (torch.load fails with \"Invalid magic number\" too); use hermetic.load_pickle"),
            ))
        }
        other => {
            let what = match other {
                Kind::Npy | Kind::Zip | Kind::Pickle => "a numpy file (use hermetic.load_pickle)",
                Kind::Safetensors => "a safetensors file (load it with hermetic.load or safetensors)",
                Kind::Tar => "the legacy torch tar format (torch.load refuses it with weights_only=True too)",
                Kind::Compressed(c) => match c {
                    Compression::Gzip => "a gzip-compressed file",
                    Compression::Zlib => "a zlib-compressed file",
                    Compression::Bz2 => "a bz2-compressed file",
                    _ => "a compressed file",
                },
                Kind::EmbeddedZip => "a zip archive with data before it",
                Kind::None => "not a pickle, PyTorch checkpoint, .npy or .npz file",
            };
            return Err(r.err(0, unsupported(what.to_string())));
        }
    }
    Ok(out)
}

/// The archive root of a PyTorch zip (the folder of its first entry, as
/// torch's reader takes it) when `<root>/data.pkl` exists.
fn torch_root(archive: &ZipArchive) -> Option<String> {
    let first = archive.entries.first()?.name_lossy();
    let (root, _) = first.split_once('/')?;
    let pkl = format!("{root}/data.pkl");
    archive
        .entries
        .iter()
        .any(|e| e.name == pkl.as_bytes())
        .then(|| root.to_string())
}

fn entry<'z>(archive: &'z ZipArchive, name: &str) -> Option<&'z ZipEntry> {
    archive.entries.iter().find(|e| e.name == name.as_bytes())
}

/// An entry's bytes: borrowed when stored, inflated (within the budget) otherwise.
fn entry_bytes<'a>(
    data: &'a [u8],
    e: &ZipEntry,
    r: &mut Reader<'_>,
) -> Result<Cow<'a, [u8]>, EvalError> {
    let max = r.opts.limits.decompression_budget(data.len() as u64);
    let c = read_entry(data, e, max).map_err(|x| r.err(x.offset(), malformed(x.to_string())))?;
    if c.limit_hit {
        return Err(r.err(
            e.local_offset,
            Problem::Limit(format!("`{}` inflates past {max} bytes", e.name_lossy())),
        ));
    }
    if let Some(err) = c.error {
        return Err(r.err(
            e.local_offset,
            malformed(format!(
                "the deflate data of `{}` is corrupt: {err}",
                e.name_lossy()
            )),
        ));
    }
    if c.data.len() as u64 != e.uncompressed_size {
        return Err(r.err(
            e.local_offset,
            malformed(format!(
                "`{}` holds {} bytes, not the {} its header says",
                e.name_lossy(),
                c.data.len(),
                e.uncompressed_size
            )),
        ));
    }
    if let Cow::Owned(v) = &c.data {
        r.budget
            .charge_problem(v.len() as u64)
            .map_err(|p| r.err(e.local_offset, p))?;
    }
    Ok(c.data)
}

/// A compressed pickle, as `joblib.load` reads one.
fn compressed(
    data: &[u8],
    c: Compression,
    r: &mut Reader<'_>,
    arena: &mut Arena<'_>,
) -> Result<Id, EvalError> {
    let max = r.opts.limits.decompression_budget(data.len() as u64);
    let d = crate::containers::compress::decompress(data, c, max);
    let what = c.name();
    if d.limit_hit {
        return Err(r.err(
            0,
            Problem::Limit(format!("{what} data decompresses to more than {max} bytes")),
        ));
    }
    if let Some(e) = d.error {
        return Err(r.err(
            0,
            malformed(format!(
                "{what} data is corrupt after {} decompressed bytes: {e}",
                d.data.len()
            )),
        ));
    }
    r.budget
        .charge_problem(d.data.len() as u64)
        .map_err(|p| r.err(0, p))?;
    match sniff(&d.data) {
        Kind::Pickle if magic_stream_end(&d.data, 0).is_none() => {
            let joblib = crate::containers::joblib::is_joblib(&d.data, 0);
            eval_owned(&d.data, 0, r, false, joblib, arena, &mut NoPersist)
        }
        _ => Err(r.err(
            0,
            unsupported(format!(
                "{what} data that does not hold a plain pickle (hermetic reads compressed pickles as joblib.load does)"
            )),
        )),
    }
}

/// Evaluates a pickle held in memory the arena cannot borrow from: into a
/// scratch arena, then copied into `arena`.
fn eval_owned(
    bytes: &[u8],
    base: u64,
    r: &mut Reader<'_>,
    torch: bool,
    joblib: bool,
    arena: &mut Arena<'_>,
    persist: &mut dyn for<'b> PersistAny<'b>,
) -> Result<Id, EvalError> {
    let mut ctx = r.ctx(torch);
    ctx.joblib = joblib;
    let mut scratch = Arena::new();
    let mut adapter = Adapter(persist);
    let (root, _) = run_stream(
        bytes,
        0,
        base,
        &r.file,
        &ctx,
        &mut scratch,
        &mut r.budget,
        &mut adapter,
    )?;
    let map = arena.absorb(scratch);
    Ok(map(root))
}

/// A persistent loader usable with arenas of any lifetime.
pub(crate) trait PersistAny<'b> {
    fn load_any(
        &mut self,
        arena: &mut Arena<'b>,
        budget: &mut Budget,
        pid: Id,
    ) -> Result<Id, Problem>;
}

impl<'b> PersistAny<'b> for NoPersist {
    fn load_any(
        &mut self,
        arena: &mut Arena<'b>,
        budget: &mut Budget,
        pid: Id,
    ) -> Result<Id, Problem> {
        Persist::load(self, arena, budget, pid)
    }
}

struct Adapter<'p>(&'p mut dyn for<'b> PersistAny<'b>);

impl<'b> Persist<'b> for Adapter<'_> {
    fn load(&mut self, arena: &mut Arena<'b>, budget: &mut Budget, pid: Id) -> Result<Id, Problem> {
        self.0.load_any(arena, budget, pid)
    }
}

/// A persistent id's parts: `('storage', type, key, location, numel[, view])`.
struct StoragePid {
    dtype: TorchDtype,
    key: String,
    location: String,
    numel: u64,
    view: Option<(String, u64, u64)>,
}

fn pid_str(arena: &Arena<'_>, id: Id, what: &str) -> Result<String, Problem> {
    match arena.get(id) {
        Value::Str(s) => s
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| malformed(format!("{what} holds a lone surrogate"))),
        Value::Bytes(b) if b.is_ascii() => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(malformed(format!(
            "{what} is {}, not a str",
            other.describe()
        ))),
    }
}

fn pid_int(arena: &Arena<'_>, id: Id, what: &str) -> Result<u64, Problem> {
    arena
        .int_of(id)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| malformed(format!("{what} is not a non-negative int")))
}

fn parse_storage_pid(arena: &Arena<'_>, parts: &[Id], legacy: bool) -> Result<StoragePid, Problem> {
    let n = if legacy { 6 } else { 5 };
    if parts.len() != n {
        return Err(malformed(format!(
            "a storage persistent id has {} items, not {n}",
            parts.len()
        )));
    }
    let dtype = match arena.get(parts[1]) {
        Value::Global(g) => match **g {
            Global::Known(Known::StorageType(d)) => d,
            Global::Known(Known::UntypedStorage) => TorchDtype::UInt8,
            _ => return Err(malformed("a storage persistent id names no storage type")),
        },
        other => {
            return Err(malformed(format!(
                "a storage persistent id's type is {}",
                other.describe()
            )))
        }
    };
    let key = pid_str(arena, parts[2], "a storage key")?;
    let location = pid_str(arena, parts[3], "a storage location")?;
    let numel = pid_int(arena, parts[4], "a storage size")?;
    let view = if legacy && !matches!(arena.get(parts[5]), Value::None) {
        let v = arena
            .seq_of(parts[5])
            .filter(|v| v.len() == 3)
            .ok_or_else(|| malformed("a storage view is not (key, offset, size)"))?;
        Some((
            pid_str(arena, v[0], "a storage view key")?,
            pid_int(arena, v[1], "a storage view offset")?,
            pid_int(arena, v[2], "a storage view size")?,
        ))
    } else {
        None
    };
    if key.len() > 4096 || location.len() > 256 {
        return Err(malformed("an overlong storage key or location"));
    }
    Ok(StoragePid {
        dtype,
        key,
        location,
        numel,
        view,
    })
}

fn nbytes_of(numel: u64, dtype: TorchDtype) -> Result<u64, Problem> {
    numel
        .checked_mul(dtype.itemsize())
        .ok_or_else(|| malformed("a storage's size overflows"))
}

fn pid_kind(arena: &Arena<'_>, pid: Id) -> Result<(String, Vec<Id>), Problem> {
    let parts = match arena.get(pid) {
        Value::Tuple(t) if !t.is_empty() => t.clone(),
        other => {
            return Err(malformed(format!(
                "a persistent id is {}, not a tuple",
                other.describe()
            )))
        }
    };
    Ok((pid_str(arena, parts[0], "a persistent id's kind")?, parts))
}

struct ZipPersist<'z, 'a> {
    data: &'a [u8],
    /// The archive's `<root>/data/<key>` records by key.
    records: HashMap<&'z [u8], &'z ZipEntry>,
    root: String,
    big_endian: bool,
    max_inflate: u64,
    storages: Vec<Storage>,
    by_key: HashMap<String, u32>,
}

impl<'b> PersistAny<'b> for ZipPersist<'_, '_> {
    fn load_any(
        &mut self,
        arena: &mut Arena<'b>,
        budget: &mut Budget,
        pid: Id,
    ) -> Result<Id, Problem> {
        let (kind, parts) = pid_kind(arena, pid)?;
        if kind != "storage" {
            return Err(malformed(format!(
                "the persistent id kind {kind:?} (a zip checkpoint only has 'storage')"
            )));
        }
        let p = parse_storage_pid(arena, &parts, false)?;
        let nbytes = nbytes_of(p.numel, p.dtype)?;
        let index = match self.by_key.get(&p.key) {
            Some(&i)
                if self.storages[i as usize].dtype == p.dtype
                    || self.storages[i as usize].nbytes == nbytes =>
            {
                i
            }
            _ => {
                let name = format!("{}/data/{}", self.root, p.key);
                let e = *self
                    .records
                    .get(p.key.as_bytes())
                    .ok_or_else(|| malformed(format!("the storage record `{name}` is missing")))?;
                if e.uncompressed_size != nbytes {
                    return Err(malformed(format!(
                        "the storage record `{name}` holds {} bytes; its persistent id says {nbytes}",
                        e.uncompressed_size
                    )));
                }
                let data = match read_entry(self.data, e, self.max_inflate) {
                    Ok(c) if c.error.is_none() && !c.limit_hit && c.data.len() as u64 == nbytes => {
                        match c.data {
                            Cow::Borrowed(_) if !self.big_endian => StorageData::File {
                                offset: e.data_offset.unwrap_or(0),
                            },
                            other => {
                                budget.charge_problem(nbytes)?;
                                let mut v = other.into_owned();
                                if self.big_endian {
                                    byteswap(&mut v, p.dtype.swap_unit() as usize);
                                }
                                StorageData::Owned(v)
                            }
                        }
                    }
                    Ok(_) => {
                        return Err(malformed(format!(
                            "the storage record `{name}` cannot be read whole"
                        )))
                    }
                    Err(x) => return Err(malformed(format!("the storage record `{name}`: {x}"))),
                };
                let i = u32::try_from(self.storages.len())
                    .map_err(|_| malformed("too many storages"))?;
                budget.charge_problem(128 + p.key.len() as u64)?;
                self.storages.push(Storage {
                    key: p.key.clone(),
                    dtype: p.dtype,
                    nbytes,
                    location: p.location,
                    data,
                });
                self.by_key.entry(p.key).or_insert(i);
                i
            }
        };
        let nbytes = self.storages[index as usize].nbytes;
        arena
            .push(
                Value::Storage(StorageView {
                    index,
                    dtype: p.dtype,
                    byte_offset: 0,
                    nbytes,
                }),
                budget,
            )
            .map_err(Problem::Limit)
    }
}

/// The file format versions torch 2.x's PyTorchStreamReader reads
/// (`kMinSupportedFileFormatVersion` to `kMaxSupportedFileFormatVersion`).
const MIN_TORCH_ZIP_VERSION: i64 = 1;
const MAX_TORCH_ZIP_VERSION: i64 = 10;

/// A version record as torch reads it: `std::stoull` (leading C whitespace,
/// an optional sign, decimal digits, anything after them ignored; a
/// negative number wraps, one beyond 64 bits fails) cast to a signed 64-bit
/// int. `None` where stoull throws.
fn stoull_as_i64(text: &[u8]) -> Option<i64> {
    let mut rest = text;
    while let [b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r', tail @ ..] = rest {
        rest = tail;
    }
    let negative = match rest.first() {
        Some(b'-') => {
            rest = &rest[1..];
            true
        }
        Some(b'+') => {
            rest = &rest[1..];
            false
        }
        _ => false,
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in &rest[..digits] {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let v = if negative { v.wrapping_neg() } else { v };
    Some(v as i64)
}

fn torch_zip<'a>(
    data: &'a [u8],
    archive: &ZipArchive,
    root: &str,
    r: &mut Reader<'_>,
    out: &mut Loaded<'a>,
) -> Result<(), EvalError> {
    // PyTorchStreamReader reads `.data/version` if there is one, else
    // `version` (which must exist), and refuses a version it cannot parse or
    // does not support.
    let version = [".data/version", "version"]
        .iter()
        .find_map(|n| entry(archive, &format!("{root}/{n}")))
        .ok_or_else(|| {
            r.err(
                0,
                malformed(format!("the record `{root}/version` is missing")),
            )
        })?;
    let text = entry_bytes(data, version, r)?;
    match stoull_as_i64(&text) {
        Some(v) if (MIN_TORCH_ZIP_VERSION..=MAX_TORCH_ZIP_VERSION).contains(&v) => {}
        found => {
            return Err(r.err(
                version.data_offset.unwrap_or(version.local_offset),
                malformed(match found {
                    Some(v) => format!(
                        "the archive's format version is {v}; torch reads versions \
                         {MIN_TORCH_ZIP_VERSION} to {MAX_TORCH_ZIP_VERSION}"
                    ),
                    None => format!(
                        "the archive's version record {:?} is not a number",
                        String::from_utf8_lossy(&text[..text.len().min(40)])
                    ),
                }),
            ))
        }
    }
    let big_endian = match entry(archive, &format!("{root}/byteorder")) {
        None => false,
        Some(e) => match &*entry_bytes(data, e, r)? {
            b"little" => false,
            b"big" => true,
            _ => {
                return Err(r.err(
                    e.data_offset.unwrap_or(e.local_offset),
                    malformed("the byteorder record is neither `little` nor `big`"),
                ))
            }
        },
    };
    out.big_endian = big_endian;
    let pkl = entry(archive, &format!("{root}/data.pkl")).ok_or_else(|| {
        r.err(
            0,
            malformed(format!("the record `{root}/data.pkl` is missing")),
        )
    })?;
    let prefix = format!("{root}/data/");
    let records = archive
        .entries
        .iter()
        .filter_map(|e| Some((e.name.strip_prefix(prefix.as_bytes())?, e)))
        .collect();
    let mut persist = ZipPersist {
        data,
        records,
        root: root.to_string(),
        big_endian,
        max_inflate: r.opts.limits.decompression_budget(data.len() as u64),
        storages: Vec::new(),
        by_key: HashMap::new(),
    };
    let bytes = entry_bytes(data, pkl, r)?;
    out.root = match bytes {
        Cow::Borrowed(b) => {
            let base = pkl.data_offset.unwrap_or(0);
            let ctx = r.ctx(true);
            let mut adapter = Adapter(&mut persist);
            run_stream(
                b,
                0,
                base,
                &r.file,
                &ctx,
                &mut out.arena,
                &mut r.budget,
                &mut adapter,
            )?
            .0
        }
        Cow::Owned(v) => eval_owned(&v, 0, r, true, false, &mut out.arena, &mut persist)?,
    };
    out.storages = persist.storages;
    Ok(())
}

struct LegacyPersist {
    storages: Vec<Storage>,
    by_key: HashMap<String, u32>,
    views: HashMap<String, StorageView>,
}

impl<'b> PersistAny<'b> for LegacyPersist {
    fn load_any(
        &mut self,
        arena: &mut Arena<'b>,
        budget: &mut Budget,
        pid: Id,
    ) -> Result<Id, Problem> {
        let (kind, parts) = pid_kind(arena, pid)?;
        match kind.as_str() {
            // torch returns the class of a pickled module (data[0]).
            "module" if parts.len() == 4 => return Ok(parts[1]),
            "storage" => {}
            k => return Err(malformed(format!("the persistent id kind {k:?}"))),
        }
        let p = parse_storage_pid(arena, &parts, true)?;
        let nbytes = nbytes_of(p.numel, p.dtype)?;
        let index = match self.by_key.get(&p.key) {
            Some(&i) => {
                let s = &self.storages[i as usize];
                if s.dtype != p.dtype && s.nbytes != nbytes {
                    return Err(unsupported(
                        "a storage referenced with two dtypes of different sizes",
                    ));
                }
                i
            }
            None => {
                let i = u32::try_from(self.storages.len())
                    .map_err(|_| malformed("too many storages"))?;
                budget.charge_problem(128 + p.key.len() as u64)?;
                self.storages.push(Storage {
                    key: p.key.clone(),
                    dtype: p.dtype,
                    nbytes,
                    location: p.location,
                    data: StorageData::Owned(Vec::new()),
                });
                self.by_key.insert(p.key, i);
                i
            }
        };
        let root_nbytes = self.storages[index as usize].nbytes;
        let view = match p.view {
            None => StorageView {
                index,
                dtype: p.dtype,
                byte_offset: 0,
                nbytes: root_nbytes,
            },
            Some((vkey, offset, size)) => match self.views.get(&vkey) {
                Some(v) => *v,
                None => {
                    let isz = p.dtype.itemsize();
                    let start = offset.checked_mul(isz);
                    let len = size.checked_mul(isz);
                    let (Some(start), Some(len)) = (start, len) else {
                        return Err(malformed("a storage view's range overflows"));
                    };
                    if start.checked_add(len).is_none_or(|e| e > root_nbytes) {
                        return Err(malformed(format!(
                            "a storage view of bytes {start}..{} lies outside its storage of {root_nbytes}",
                            start.saturating_add(len)
                        )));
                    }
                    let v = StorageView {
                        index,
                        dtype: p.dtype,
                        byte_offset: start,
                        nbytes: len,
                    };
                    budget.charge_problem(64 + vkey.len() as u64)?;
                    self.views.insert(vkey, v);
                    v
                }
            },
        };
        arena
            .push(Value::Storage(view), budget)
            .map_err(Problem::Limit)
    }
}

/// The legacy layout: magic number, protocol version, sys_info, the object,
/// the storage keys, then per key an 8-byte element count and the bytes.
fn legacy<'a>(data: &'a [u8], r: &mut Reader<'_>, out: &mut Loaded<'a>) -> Result<(), EvalError> {
    let mut pos = magic_stream_end(data, 0)
        .ok_or_else(|| r.err(0, malformed("the legacy magic number is missing")))?;
    match pickled_int(data, pos) {
        Some((PickledInt(1001), end)) => pos = end,
        _ => {
            return Err(r.err(
                pos as u64,
                malformed("the legacy protocol version is not 1001"),
            ))
        }
    }
    let ctx = r.ctx(true);
    // sys_info: plain data, not used.
    let (_, end) = run_stream(
        data,
        pos,
        0,
        &r.file,
        &ctx,
        &mut out.arena,
        &mut r.budget,
        &mut NoPersist,
    )?;
    pos = end;
    let mut persist = LegacyPersist {
        storages: Vec::new(),
        by_key: HashMap::new(),
        views: HashMap::new(),
    };
    let mut adapter = Adapter(&mut persist);
    let (root, end) = run_stream(
        data,
        pos,
        0,
        &r.file,
        &ctx,
        &mut out.arena,
        &mut r.budget,
        &mut adapter,
    )?;
    out.root = root;
    pos = end;
    let keys_at = pos as u64;
    let (keys, end) = run_stream(
        data,
        pos,
        0,
        &r.file,
        &ctx,
        &mut out.arena,
        &mut r.budget,
        &mut NoPersist,
    )?;
    pos = end;
    let keys: Vec<String> = out
        .arena
        .seq_of(keys)
        .ok_or_else(|| r.err(keys_at, malformed("the storage keys are not a list")))?
        .to_vec()
        .iter()
        .map(|&k| pid_str(&out.arena, k, "a storage key").map_err(|p| r.err(keys_at, p)))
        .collect::<Result<_, _>>()?;
    let mut filled = vec![false; persist.storages.len()];
    for key in keys {
        let Some(&i) = persist.by_key.get(&key) else {
            return Err(r.err(
                pos as u64,
                malformed(format!(
                    "the storage key {key:?} is not used by the checkpoint"
                )),
            ));
        };
        let s = &mut persist.storages[i as usize];
        let count = crate::containers::le_u64(data, pos).ok_or_else(|| {
            r.err(
                pos as u64,
                malformed(format!(
                    "storage {key:?}: the data ends before its element count"
                )),
            )
        })?;
        let want = s.nbytes / s.dtype.itemsize();
        if count != want {
            return Err(r.err(
                pos as u64,
                malformed(format!(
                    "storage {key:?} has {count} elements in the file; its persistent id says {want}"
                )),
            ));
        }
        let start = pos + 8;
        let end = (start as u64)
            .checked_add(s.nbytes)
            .filter(|&e| e <= data.len() as u64)
            .ok_or_else(|| {
                r.err(
                    start as u64,
                    malformed(format!(
                        "storage {key:?}: {} bytes expected, the file ends first",
                        s.nbytes
                    )),
                )
            })?;
        if std::mem::replace(&mut filled[i as usize], true) {
            return Err(r.err(
                pos as u64,
                malformed(format!("storage {key:?} is listed twice")),
            ));
        }
        s.data = StorageData::File {
            offset: start as u64,
        };
        pos = end as usize;
    }
    if let Some(i) = filled.iter().position(|f| !f) {
        return Err(r.err(
            pos as u64,
            malformed(format!(
                "storage {:?} has no data in the file",
                persist.storages[i].key
            )),
        ));
    }
    out.storages = persist.storages;
    Ok(())
}

/// A `.npy` array (its pickle, for object arrays) at `start` in `data`.
fn npy_value<'a>(
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

fn npz<'a>(
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
                Value::Str(super::value::Str {
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
            super::calls::dict(super::value::DictKind::Dict, items),
            &mut r.budget,
        )
        .map_err(|x| r.err(0, Problem::Limit(x)))?;
    Ok(())
}

#[cfg(test)]
mod tests;
