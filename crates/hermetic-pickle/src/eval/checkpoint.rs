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

mod legacy;
mod npz;
mod torch_zip;

use legacy::legacy;
use npz::{npy_value, npz};
use torch_zip::{torch_root, torch_zip};

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

/// Records a storage a persistent id names: charged to the budget and
/// indexed by its key, unless the key already names an earlier storage
/// (torch's zip reader keeps the first for a key read with another dtype).
fn add_storage(
    storages: &mut Vec<Storage>,
    by_key: &mut HashMap<String, u32>,
    budget: &mut Budget,
    storage: Storage,
) -> Result<u32, Problem> {
    let i = u32::try_from(storages.len()).map_err(|_| malformed("too many storages"))?;
    budget.charge_problem(128 + storage.key.len() as u64)?;
    by_key.entry(storage.key.clone()).or_insert(i);
    storages.push(storage);
    Ok(i)
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

#[cfg(test)]
mod tests;
