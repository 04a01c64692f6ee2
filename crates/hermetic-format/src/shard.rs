//! Sharded checkpoints: shard files plus an index compatible with the
//! transformers `model.safetensors.index.json` convention (`metadata.total_size`
//! and `weight_map`), with the tree under a `hermetic` member.

use crate::error::{FormatError, Result};
use crate::header::{parse_doc_members, FORMAT_VERSION};
use crate::tree::Tree;
use crate::typed::ATTRS_VERSION;
use crate::writer::{persist, write_temp, EntrySource, Plan, WriteOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The index file's name inside a checkpoint folder.
pub const INDEX_NAME: &str = "model.safetensors.index.json";
/// The largest index file a reader accepts.
pub const MAX_INDEX_SIZE: u64 = 100_000_000;

/// `model-00001-of-00003.safetensors`.
pub fn shard_name(i: usize, n: usize) -> String {
    format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
}

fn is_shard_name(name: &str) -> bool {
    let b = name.as_bytes();
    name.len() == "model-00001-of-00001.safetensors".len()
        && name.starts_with("model-")
        && name.ends_with(".safetensors")
        && &name[11..15] == "-of-"
        && b[6..11].iter().chain(&b[15..20]).all(u8::is_ascii_digit)
}

/// A parsed index.
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Entry name -> shard file name, in the index's order.
    pub weight_map: Vec<(String, String)>,
    /// `metadata` string members (total_size is checked, not kept).
    pub metadata: BTreeMap<String, String>,
    pub tree: Option<Tree>,
    /// The layout digest the writer recorded, if any, and the index's now.
    pub layout: Option<String>,
    pub layout_actual: String,
}

/// Splits `plan` into shards of at most `max_shard_size` bytes of data each
/// (an entry larger than that gets a shard of its own), writes them and then
/// the index, each through a temporary file renamed into place; the index is
/// renamed last, so a reader never sees an index naming a missing shard.
/// Shard files of an earlier save in `dir` that this one does not use are
/// removed afterwards. Returns the paths written, the index last.
pub fn write_sharded(
    dir: &Path,
    plan: &Plan,
    source: &mut dyn EntrySource,
    max_shard_size: u64,
    opts: WriteOptions,
) -> Result<Vec<PathBuf>> {
    plan.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut size = 0u64;
    // A run of entries of one storage (see `Plan::units`) stays in one
    // shard, and so does every copy that views that storage through its
    // `base` (SPEC 3.1: a reader refuses a base in another shard).
    for unit in units_with_bases(plan) {
        let n: u64 = unit.iter().map(|&i| plan.entries[i].nbytes).sum();
        if groups.is_empty() || (size > 0 && size.saturating_add(n) > max_shard_size) {
            groups.push(Vec::new());
            size = 0;
        }
        if let Some(g) = groups.last_mut() {
            g.extend(unit);
        }
        size += n;
    }
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    let n = groups.len();
    let mut temps = Vec::with_capacity(n + 1);
    let mut weight_map = Vec::new();
    for (s, group) in groups.iter().enumerate() {
        let name = shard_name(s, n);
        let sub = Plan {
            entries: group.iter().map(|&i| plan.entries[i].clone()).collect(),
            tree: None,
            metadata: plan.metadata.clone(),
        };
        for &i in group {
            weight_map.push((plan.entries[i].name.clone(), name.clone()));
        }
        let mut sub_source = Remap {
            inner: &mut *source,
            map: group,
        };
        let path = dir.join(&name);
        temps.push((write_temp(&path, &sub, &mut sub_source, opts)?, path));
    }
    let index_path = dir.join(INDEX_NAME);
    let json = index_json(plan, &weight_map)?;
    crate::temps::remove_stale(&index_path);
    let tmp = crate::temps::create(&index_path).map_err(|e| FormatError::io(dir, e))?;
    std::fs::write(tmp.path(), json).map_err(|e| FormatError::io(&index_path, e))?;
    if opts.fsync {
        tmp.as_file()
            .sync_all()
            .map_err(|e| FormatError::io(&index_path, e))?;
    }
    let mut written = Vec::new();
    for (t, p) in temps {
        persist(t, &p, opts)?;
        written.push(p);
    }
    persist(tmp, &index_path, opts)?;
    // Remove stale shards of an earlier, differently split save.
    let keep: std::collections::HashSet<String> = (0..n).map(|s| shard_name(s, n)).collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if is_shard_name(&name) && !keep.contains(&name) {
                let _ = std::fs::remove_file(ent.path());
            }
        }
    }
    written.push(index_path);
    Ok(written)
}

/// [`Plan::units`], each joined with the units of the tensors that name one
/// of its entries as their `base`, in the order of their first unit.
fn units_with_bases(plan: &Plan) -> Vec<Vec<usize>> {
    let units = plan.units();
    let mut unit_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (u, r) in units.iter().enumerate() {
        for i in r.clone() {
            unit_of.insert(plan.entries[i].name.as_str(), u);
        }
    }
    let mut parent: Vec<usize> = (0..units.len()).collect();
    fn root(parent: &mut [usize], mut u: usize) -> usize {
        while parent[u] != u {
            parent[u] = parent[parent[u]];
            u = parent[u];
        }
        u
    }
    if let Some(tree) = &plan.tree {
        for n in &tree.nodes {
            if let crate::tree::Node::Tensor(t) = n {
                let linked = t.base.as_deref().and_then(|b| unit_of.get(b).copied());
                if let (Some(a), Some(b)) = (unit_of.get(t.entry.as_str()).copied(), linked) {
                    let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                    parent[ra.max(rb)] = ra.min(rb);
                }
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut slot: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for (u, r) in units.iter().enumerate() {
        let g = *slot.entry(root(&mut parent, u)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].extend(r.clone());
    }
    groups
}

struct Remap<'a> {
    inner: &'a mut dyn EntrySource,
    map: &'a [usize],
}

impl EntrySource for Remap<'_> {
    fn write_entry(
        &mut self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        self.inner.write_entry(self.map[index], sink)
    }
}

fn index_json(plan: &Plan, weight_map: &[(String, String)]) -> Result<String> {
    let mut md = serde_json::Map::new();
    md.insert(
        "total_size".into(),
        serde_json::Value::from(plan.data_size()),
    );
    md.insert("format".into(), "pt".into());
    for (k, v) in &plan.metadata {
        if k != "total_size" {
            md.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
    }
    let mut wm = String::from("{");
    for (i, (k, v)) in weight_map.iter().enumerate() {
        if i > 0 {
            wm.push(',');
        }
        wm.push_str(&serde_json::to_string(k).unwrap_or_default());
        wm.push(':');
        wm.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
    wm.push('}');
    let (tree, version) = match &plan.tree {
        Some(t) => (t.to_json()?, t.required_version()),
        None => ("null".into(), FORMAT_VERSION),
    };
    let hermetic = format!("{{\"version\":{version},\"tree\":{tree}}}");
    let layout = index_layout(&md, weight_map, &hermetic);
    Ok(format!(
        "{{\"metadata\":{},\"weight_map\":{wm},\"hermetic\":{hermetic},\"{INDEX_LAYOUT_KEY}\":\"{layout}\"}}\n",
        serde_json::Value::Object(md)
    ))
}

/// The index's member holding its layout digest (SPEC 8): a top-level key
/// that readers of the transformers convention ignore.
pub const INDEX_LAYOUT_KEY: &str = "hermetic_layout";

/// XXH3-128 of the compact JSON text of `[METADATA, WEIGHT_MAP, DOC]`:
/// the `metadata` object (keys sorted), the `weight_map` pairs sorted by
/// name, and the digest of the `hermetic` member's exact text.
fn index_layout(
    metadata: &serde_json::Map<String, serde_json::Value>,
    weight_map: &[(String, String)],
    hermetic: &str,
) -> String {
    let md: BTreeMap<&String, &serde_json::Value> = metadata.iter().collect();
    let mut wm: Vec<(&str, &str)> = weight_map
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    wm.sort_unstable();
    let doc = crate::digest::digest(hermetic.as_bytes());
    let text = serde_json::to_string(&(md, wm, doc)).unwrap_or_default();
    crate::digest::digest(text.as_bytes())
}

/// Reads an index file (bounded in size); `file` names it in errors.
pub fn read_index(path: &Path) -> Result<Index> {
    let file = path.display().to_string();
    let bad = |d: String| FormatError::Index {
        file: file.clone(),
        detail: d,
    };
    let meta = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
    if meta.len() > MAX_INDEX_SIZE {
        return Err(FormatError::Limit {
            file: file.clone(),
            place: "index file".into(),
            what: "index size",
            limit: MAX_INDEX_SIZE,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(default)]
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
        weight_map: serde_json::Map<String, serde_json::Value>,
        #[serde(borrow, default)]
        hermetic: Option<&'a serde_json::value::RawValue>,
        #[serde(default)]
        hermetic_layout: Option<String>,
    }
    let raw: Raw<'_> =
        serde_json::from_str(&text).map_err(|e| bad(format!("not an index: {e}")))?;
    let mut index = Index::default();
    let pairs: Vec<(String, String)> = raw
        .weight_map
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    index.layout = raw.hermetic_layout.clone();
    index.layout_actual = index_layout(
        raw.metadata.as_ref().unwrap_or(&serde_json::Map::new()),
        &pairs,
        raw.hermetic.map_or("", |h| h.get()),
    );
    for (k, v) in raw.weight_map {
        let Some(f) = v.as_str() else {
            return Err(bad(format!("weight_map[{k:?}] must be a file name")));
        };
        let p = Path::new(f);
        if p.components().count() != 1 || f.starts_with('.') || f.contains(['/', '\\']) {
            return Err(bad(format!(
                "weight_map[{k:?}] = {f:?}: shards must be plain file names beside the index"
            )));
        }
        index.weight_map.push((k, f.to_string()));
    }
    for (k, v) in raw.metadata.unwrap_or_default() {
        if let serde_json::Value::String(s) = v {
            index.metadata.insert(k, s);
        }
    }
    if let Some(h) = raw.hermetic {
        let (version, tree) = parse_doc_members(h.get(), &file)?;
        if !(FORMAT_VERSION..=ATTRS_VERSION).contains(&version) {
            return Err(bad(format!("hermetic version {version} is not supported")));
        }
        index.tree = tree;
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert_eq!(shard_name(0, 3), "model-00001-of-00003.safetensors");
        assert!(is_shard_name("model-00002-of-00003.safetensors"));
        assert!(!is_shard_name("model.safetensors"));
        assert!(!is_shard_name("model-0000a-of-00003.safetensors"));
    }
}
