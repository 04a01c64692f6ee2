//! One tree from a DCP folder: every item's bytes read from its byte range
//! and placed at its path, chunked tensors copied into one buffer.

use super::*;

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

pub(super) fn contiguous(size: &[u64]) -> Vec<u64> {
    let mut stride = vec![1u64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1].max(1);
    }
    stride
}

/// The bytes of one item, as `FileSystemReader` slices them.
pub(super) fn item_bytes<'f>(
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
pub(super) fn copy_chunk(
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
