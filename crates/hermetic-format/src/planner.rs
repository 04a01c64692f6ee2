//! From tensor views to entries: the part of saving that decides names,
//! storage sharing and layout, independent of where the bytes live.
//!
//! The caller walks its objects in document order, pushes container and
//! scalar nodes into [`Planner::tree`], and reports each tensor view with
//! [`Planner::add_view`]: which storage it lives in (an opaque key), where
//! (byte position of element 0, byte strides) and its path name. Views of one
//! storage become one entry holding the span of bytes they reach, so shared
//! storage is written once and comes back shared.

use crate::dtype::Dtype;
use crate::error::{FormatError, Result};
use crate::header::entry_form;
use crate::tree::{
    contiguous_strides, is_dense, view_extent, Node, NodeId, TensorKind, TensorRef, Tree, View,
};
use crate::writer::{Plan, PlannedEntry};
use std::collections::{HashMap, HashSet};

/// One component of a path in the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum PathPart {
    /// A `str` dict key.
    Key(String),
    /// An `int` dict key or a sequence index.
    Index(i64),
    /// Any other key, already rendered (`repr`).
    Other(String),
}

/// The entry name of a path: components joined with `.`; the empty path
/// (a tensor saved on its own) is `tensor`.
pub fn path_name(parts: &[PathPart]) -> String {
    if parts.is_empty() {
        return "tensor".into();
    }
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        match p {
            PathPart::Key(k) | PathPart::Other(k) => s.push_str(k),
            PathPart::Index(n) => s.push_str(&n.to_string()),
        }
    }
    s
}

/// A path as error messages show it: `tree["model"][0][<key>]`.
pub fn path_place(parts: &[PathPart]) -> String {
    let mut s = String::from("tree");
    for p in parts {
        match p {
            PathPart::Key(k) => s.push_str(&format!("[{k:?}]")),
            PathPart::Index(i) => s.push_str(&format!("[{i}]")),
            PathPart::Other(o) => s.push_str(&format!("[{o}]")),
        }
    }
    s
}

/// A tensor view as the caller sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewSpec {
    pub kind: TensorKind,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Byte strides.
    pub strides: Vec<i64>,
    /// Byte position of element 0 from the start of the storage region.
    pub pos: i64,
    pub requires_grad: Option<bool>,
    pub np_dtype: Option<serde_json::Value>,
    pub device: Option<String>,
}

/// Where an entry's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryOrigin {
    /// Bytes `lo..hi` of the storage the caller keyed `key`.
    Storage { key: u64, lo: u64, hi: u64 },
    /// The row-major copy of a view of bytes `lo..hi` of storage `key`:
    /// element 0 at byte `offset` of that range, byte `strides`.
    Gather {
        key: u64,
        lo: u64,
        hi: u64,
        itemsize: u64,
        shape: Vec<u64>,
        strides: Vec<i64>,
        offset: i64,
    },
    /// The bytes object the caller registered with this number.
    Bytes { slot: usize },
}

struct Group {
    views: Vec<(NodeId, String)>,
}

/// One distinct layout of a storage's views: exact aliases share one.
struct Layout {
    /// Indices into the group's views; the first names the entry.
    members: Vec<usize>,
    nbytes: u64,
    dense: bool,
    /// The bytes it reaches in its storage.
    lo: u64,
    hi: u64,
}

/// Builds a [`Plan`] while the caller walks its objects.
#[derive(Default)]
pub struct Planner {
    pub tree: Tree,
    groups: Vec<(u64, Group)>,
    group_of: HashMap<u64, usize>,
    specs: HashMap<NodeId, ViewSpec>,
    bytes: Vec<(NodeId, String, u64)>,
    /// First-appearance order of groups and bytes entries: (is_bytes, index).
    order: Vec<(bool, usize)>,
    next_private_key: u64,
    /// Names the writer reached an already planned tensor by again (a `$ref`).
    ref_aliases: Vec<(String, NodeId)>,
}

impl Planner {
    pub fn new() -> Self {
        Planner {
            next_private_key: 1 << 63,
            ..Planner::default()
        }
    }

    /// Adds a tensor view in storage `key` (a region of `region_len` bytes)
    /// and returns its node. Empty views get an entry of their own.
    pub fn add_view(
        &mut self,
        name: String,
        key: u64,
        region_len: u64,
        spec: ViewSpec,
    ) -> Result<NodeId> {
        if spec.shape.len() != spec.strides.len() {
            return Err(FormatError::unsupported(
                &name,
                "strides and shape differ in length",
            ));
        }
        let view = View {
            dtype: spec.dtype,
            shape: spec.shape.clone(),
            strides: Some(spec.strides.clone()),
            offset: u64::try_from(spec.pos).unwrap_or(0),
        };
        let key = match view_extent(&View {
            offset: 0,
            ..view.clone()
        }) {
            None => {
                return Err(FormatError::unsupported(
                    &name,
                    "shape and strides overflow",
                ))
            }
            Some(None) => {
                self.next_private_key += 1;
                self.next_private_key
            }
            Some(Some((lo, hi))) => {
                let lo = i128::from(spec.pos) + lo;
                let hi = i128::from(spec.pos) + hi;
                if lo < 0 || hi > i128::from(region_len) {
                    return Err(FormatError::unsupported(
                        &name,
                        format!("the view reaches bytes {lo}..{hi} outside its storage of {region_len} bytes"),
                    ));
                }
                key
            }
        };
        let id = self.tree.push(Node::Tensor(TensorRef {
            kind: spec.kind,
            entry: String::new(),
            view: None,
            requires_grad: None,
            np_dtype: None,
            device: None,
            base: None,
        }));
        let g = match self.group_of.get(&key) {
            Some(&g) => g,
            None => {
                self.groups.push((key, Group { views: Vec::new() }));
                self.group_of.insert(key, self.groups.len() - 1);
                self.order.push((false, self.groups.len() - 1));
                self.groups.len() - 1
            }
        };
        self.groups[g].1.views.push((id, name));
        self.specs.insert(id, spec);
        Ok(id)
    }

    /// Records `name` as another name of the tensor of node `of`: the same
    /// tensor object reached again (written as a `$ref`), which a plain reader
    /// cannot see. Like a tied weight of two objects with one layout, it
    /// becomes `__metadata__[name] = entry` (docs/SPEC.md, section 3).
    pub fn add_alias(&mut self, name: String, of: NodeId) {
        self.ref_aliases.push((name, of));
    }

    /// Adds bytes stored as an entry; `slot` numbers them for the caller.
    pub fn add_bytes(&mut self, name: String, len: u64) -> (NodeId, usize) {
        let id = self.tree.push(Node::BytesEntry(String::new()));
        self.bytes.push((id, name, len));
        self.order.push((true, self.bytes.len() - 1));
        (id, self.bytes.len() - 1)
    }

    /// Plans one storage's entries: each distinct layout gets an entry of
    /// its own row-major bytes. Dense layouts that overlap no earlier one (by
    /// position) are read in place and written back to back in storage order
    /// (a run, which a reader maps as one storage); the others are copies,
    /// and name the run's first entry as `base` when the bytes they view lie
    /// in one stretch of the run without gaps.
    #[allow(clippy::too_many_arguments)]
    fn plan_group(
        &mut self,
        key: u64,
        group: &Group,
        alloc: &dyn Fn(&str, &mut HashSet<String>) -> String,
        used: &mut HashSet<String>,
        entries: &mut Vec<PlannedEntry>,
        origins: &mut Vec<EntryOrigin>,
        aliases: &mut Vec<(String, String)>,
    ) {
        let views: Vec<(NodeId, String, ViewSpec)> = group
            .views
            .iter()
            .map(|(id, n)| (*id, n.clone(), self.specs[id].clone()))
            .collect();
        let mut layouts: Vec<Layout> = Vec::new();
        for (j, (_, _, s)) in views.iter().enumerate() {
            let same = |l: &Layout| {
                let o = &views[l.members[0]].2;
                o.dtype == s.dtype
                    && o.shape == s.shape
                    && o.strides == s.strides
                    && o.pos == s.pos
                    && o.np_dtype == s.np_dtype
            };
            if let Some(l) = layouts.iter_mut().find(|l| same(l)) {
                l.members.push(j);
                continue;
            }
            let nbytes = s
                .shape
                .iter()
                .fold(s.dtype.itemsize(), |a, &d| a.saturating_mul(d));
            let extent = view_extent(&View {
                dtype: s.dtype,
                shape: s.shape.clone(),
                strides: Some(s.strides.clone()),
                offset: 0,
            });
            // add_view checked the extent lies inside the storage.
            let (lo, hi) = match extent {
                Some(Some((a, b))) => (
                    (i128::from(s.pos) + a) as u64,
                    (i128::from(s.pos) + b) as u64,
                ),
                _ => (0, 0),
            };
            layouts.push(Layout {
                members: vec![j],
                nbytes: if hi == lo { 0 } else { nbytes },
                dense: is_dense(&s.shape, &s.strides, s.dtype.itemsize()),
                lo,
                hi,
            });
        }
        // Names in order of first appearance, so collisions resolve as before.
        let names: Vec<String> = layouts
            .iter()
            .map(|l| alloc(&views[l.members[0]].1, used))
            .collect();
        // Dense layouts read in place: by position, larger first, each
        // accepted when it begins at or after the end of the one before.
        let mut cand: Vec<usize> = (0..layouts.len())
            .filter(|&l| layouts[l].dense && layouts[l].nbytes > 0)
            .collect();
        cand.sort_by_key(|&l| (layouts[l].lo, std::cmp::Reverse(layouts[l].nbytes), l));
        let mut run: Vec<usize> = Vec::new();
        let mut end = 0u64;
        for l in cand {
            if run.is_empty() || layouts[l].lo >= end {
                end = layouts[l].hi;
                run.push(l);
            }
        }
        // Stretches of the run without gaps: (storage lo, hi, offset in the run).
        let mut stretches: Vec<(u64, u64, u64)> = Vec::new();
        let mut at = 0u64;
        let mut run_offset = HashMap::new();
        for &l in &run {
            let (lo, hi) = (layouts[l].lo, layouts[l].hi);
            match stretches.last_mut() {
                Some(st) if st.1 == lo => st.1 = hi,
                _ => stretches.push((lo, hi, at)),
            }
            run_offset.insert(l, at);
            at += hi - lo;
        }
        let head = run.first().map(|&l| names[l].clone());
        let order: Vec<usize> = run
            .iter()
            .copied()
            .chain((0..layouts.len()).filter(|l| !run.contains(l)))
            .collect();
        for (k, &l) in order.iter().enumerate() {
            let lay = &layouts[l];
            let owner = &views[lay.members[0]].2;
            let name = names[l].clone();
            // Where this layout lies in the run's storage, if it does.
            let in_run = match run_offset.get(&l) {
                Some(&off) => Some(off),
                None => stretches
                    .iter()
                    .find(|st| lay.nbytes > 0 && st.0 <= lay.lo && lay.hi <= st.1)
                    .map(|st| (owner.pos as u64) - st.0 + st.2),
            }
            .filter(|&off| owner.kind == TensorKind::Numpy || off % owner.dtype.itemsize() == 0);
            let is_head = k == 0 && !run.is_empty();
            let base = if is_head {
                None
            } else {
                in_run.and(head.clone())
            };
            for (m, &j) in lay.members.iter().enumerate() {
                let (id, vname, s) = &views[j];
                let canonical =
                    contiguous_strides(&s.shape, s.dtype.itemsize()).as_ref() == Some(&s.strides);
                let short = base.is_none()
                    && (canonical || !lay.dense)
                    && s.dtype.safetensors().is_some()
                    && s.np_dtype.is_none();
                let view = (!short).then(|| View {
                    dtype: s.dtype,
                    shape: s.shape.clone(),
                    // Exact strides wherever they address the bytes the
                    // tensor views: through its base, or in its own entry
                    // when that is dense (a size-1 dimension may have any).
                    strides: ((base.is_some() || lay.dense)
                        && contiguous_strides(&s.shape, s.dtype.itemsize()).as_ref()
                            != Some(&s.strides))
                    .then(|| s.strides.clone()),
                    offset: if base.is_some() {
                        in_run.unwrap_or(0)
                    } else {
                        0
                    },
                });
                if m > 0 {
                    // A tied weight: recorded the way safetensors.torch.save_model does
                    // (numpy arrays too: a plain reader would miss the other names).
                    aliases.push((vname.clone(), name.clone()));
                }
                self.tree.nodes[*id] = Node::Tensor(TensorRef {
                    kind: s.kind,
                    entry: name.clone(),
                    view,
                    requires_grad: s.requires_grad,
                    np_dtype: s.np_dtype.clone(),
                    device: s.device.clone(),
                    base: base.clone(),
                });
            }
            let (dtype, shape) = entry_form(owner.dtype, &owner.shape);
            entries.push(PlannedEntry {
                name,
                dtype,
                shape,
                nbytes: lay.nbytes,
                align: owner.dtype.alignment(),
                follows: k > 0 && k < run.len(),
            });
            origins.push(if lay.nbytes == 0 || lay.dense {
                EntryOrigin::Storage {
                    key,
                    lo: lay.lo,
                    hi: if lay.nbytes == 0 { lay.lo } else { lay.hi },
                }
            } else {
                EntryOrigin::Gather {
                    key,
                    lo: lay.lo,
                    hi: lay.hi,
                    itemsize: owner.dtype.itemsize(),
                    shape: owner.shape.clone(),
                    strides: owner.strides.clone(),
                    offset: owner.pos - lay.lo as i64,
                }
            });
        }
    }

    /// Decides entries and names, fills in every tensor node, and returns
    /// the plan with the origin of each entry's bytes.
    pub fn finish(
        mut self,
        root: NodeId,
        metadata: Vec<(String, String)>,
    ) -> Result<(Plan, Vec<EntryOrigin>)> {
        self.tree.root = root;
        let mut used: HashSet<String> = HashSet::new();
        used.insert("__metadata__".into());
        let alloc = |want: &str, used: &mut HashSet<String>| -> String {
            if used.insert(want.to_string()) {
                return want.to_string();
            }
            (1..)
                .map(|i| format!("{want}~{i}"))
                .find(|n| used.insert(n.clone()))
                .unwrap_or_default()
        };
        let mut entries = Vec::new();
        let mut origins = Vec::new();
        let mut aliases: Vec<(String, String)> = Vec::new();
        let order = std::mem::take(&mut self.order);
        let groups = std::mem::take(&mut self.groups);
        for &(is_bytes, i) in &order {
            if is_bytes {
                let (id, name, len) = &self.bytes[i];
                let name = alloc(name, &mut used);
                self.tree.nodes[*id] = Node::BytesEntry(name.clone());
                entries.push(PlannedEntry {
                    name,
                    dtype: safetensors::Dtype::U8,
                    shape: vec![*len],
                    nbytes: *len,
                    align: 1,
                    follows: false,
                });
                origins.push(EntryOrigin::Bytes { slot: i });
                continue;
            }
            let (key, group) = &groups[i];
            self.plan_group(
                *key,
                group,
                &alloc,
                &mut used,
                &mut entries,
                &mut origins,
                &mut aliases,
            );
        }
        for (alias, of) in std::mem::take(&mut self.ref_aliases) {
            if let Some(Node::Tensor(t)) = self.tree.nodes.get(of) {
                aliases.push((alias, t.entry.clone()));
            }
        }
        // Alias names that are entry names, user metadata or repeated are dropped.
        let user: HashSet<&str> = metadata.iter().map(|(k, _)| k.as_str()).collect();
        let mut seen = HashSet::new();
        let mut md = metadata.clone();
        for (alias, target) in aliases {
            if !used.contains(&alias)
                && !user.contains(alias.as_str())
                && alias != "format"
                && alias != crate::header::HERMETIC_KEY
                && alias != crate::header::LAYOUT_KEY
                && seen.insert(alias.clone())
            {
                md.push((alias, target));
            }
        }
        self.tree.index_memo();
        let plan = Plan {
            entries,
            tree: Some(self.tree),
            metadata: md,
        };
        Ok((plan, origins))
    }
}

#[cfg(test)]
mod tests;
