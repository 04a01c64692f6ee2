//! PyTorch zip checkpoints: the archive root, entry bytes, the version
//! record, and storages resolved through `<root>/data/<key>` records.

use super::*;

/// The archive root of a PyTorch zip (the folder of its first entry, as
/// torch's reader takes it) when `<root>/data.pkl` exists.
pub(super) fn torch_root(archive: &ZipArchive) -> Option<String> {
    let first = archive.entries.first()?.name_lossy();
    let (root, _) = first.split_once('/')?;
    let pkl = format!("{root}/data.pkl");
    archive
        .entries
        .iter()
        .any(|e| e.name == pkl.as_bytes())
        .then(|| root.to_string())
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
                add_storage(
                    &mut self.storages,
                    &mut self.by_key,
                    budget,
                    Storage {
                        key: p.key,
                        dtype: p.dtype,
                        nbytes,
                        location: p.location,
                        data,
                    },
                )?
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
pub(super) fn stoull_as_i64(text: &[u8]) -> Option<i64> {
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

pub(super) fn torch_zip<'a>(
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
