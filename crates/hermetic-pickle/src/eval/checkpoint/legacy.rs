//! Legacy (pre-1.6) torch checkpoints: one stream of pickles followed by
//! the raw bytes of each storage.

use super::*;

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
            None => add_storage(
                &mut self.storages,
                &mut self.by_key,
                budget,
                Storage {
                    key: p.key,
                    dtype: p.dtype,
                    nbytes,
                    location: p.location,
                    data: StorageData::Owned(Vec::new()),
                },
            )?,
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
pub(super) fn legacy<'a>(
    data: &'a [u8],
    r: &mut Reader<'_>,
    out: &mut Loaded<'a>,
) -> Result<(), EvalError> {
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
