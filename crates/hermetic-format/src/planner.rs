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
use crate::tree::{
    contiguous_strides, view_extent, Node, NodeId, TensorKind, TensorRef, Tree, View,
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
    /// The bytes object the caller registered with this number.
    Bytes { slot: usize },
}

struct Group {
    region_len: u64,
    views: Vec<(NodeId, String)>,
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
        }));
        let g = match self.group_of.get(&key) {
            Some(&g) => g,
            None => {
                self.groups.push((
                    key,
                    Group {
                        region_len,
                        views: Vec::new(),
                    },
                ));
                self.group_of.insert(key, self.groups.len() - 1);
                self.order.push((false, self.groups.len() - 1));
                self.groups.len() - 1
            }
        };
        self.groups[g].1.views.push((id, name));
        self.specs.insert(id, spec);
        Ok(id)
    }

    /// Adds bytes stored as an entry; `slot` numbers them for the caller.
    pub fn add_bytes(&mut self, name: String, len: u64) -> (NodeId, usize) {
        let id = self.tree.push(Node::BytesEntry(String::new()));
        self.bytes.push((id, name, len));
        self.order.push((true, self.bytes.len() - 1));
        (id, self.bytes.len() - 1)
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
        for &(is_bytes, i) in &self.order {
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
                });
                origins.push(EntryOrigin::Bytes { slot: i });
                continue;
            }
            let (key, group) = &self.groups[i];
            let views: Vec<(NodeId, &str, &ViewSpec)> = group
                .views
                .iter()
                .map(|(id, n)| (*id, n.as_str(), &self.specs[id]))
                .collect();
            // The span of bytes the views reach, widened to the largest
            // alignment they need (within the region).
            let align = views
                .iter()
                .map(|v| v.2.dtype.alignment())
                .max()
                .unwrap_or(1);
            let mut lo = i128::MAX;
            let mut hi = i128::MIN;
            for (_, _, s) in &views {
                let v = View {
                    dtype: s.dtype,
                    shape: s.shape.clone(),
                    strides: Some(s.strides.clone()),
                    offset: 0,
                };
                if let Some(Some((a, b))) = view_extent(&v) {
                    lo = lo.min(i128::from(s.pos) + a);
                    hi = hi.max(i128::from(s.pos) + b);
                }
            }
            if lo > hi {
                lo = 0;
                hi = 0;
            }
            let a = i128::from(align);
            let lo = lo.div_euclid(a) * a;
            let widened = (hi + a - 1).div_euclid(a) * a;
            let hi = if widened <= i128::from(group.region_len) {
                widened
            } else {
                hi
            };
            let (lo, hi) = (lo as u64, hi as u64);
            let len = hi - lo;
            // The first view that covers the span exactly, contiguously,
            // names the entry and gives it its dtype and shape.
            let exact = |s: &ViewSpec| {
                s.pos as u64 == lo
                    && contiguous_strides(&s.shape, s.dtype.itemsize()).as_deref()
                        == Some(s.strides.as_slice())
                    && s.shape
                        .iter()
                        .try_fold(s.dtype.itemsize(), |acc, &d| acc.checked_mul(d))
                        == Some(len)
            };
            let owner = views.iter().position(|v| exact(v.2));
            let (name_hint, dtype, shape) = match owner {
                Some(o) => {
                    let s = views[o].2;
                    match s.dtype.safetensors() {
                        Some(d) => (views[o].1, d, s.shape.clone()),
                        None => {
                            let mut shape = s.shape.clone();
                            shape.push(s.dtype.itemsize());
                            (views[o].1, safetensors::Dtype::U8, shape)
                        }
                    }
                }
                None => {
                    let first = views[0].2.dtype;
                    let same = views.iter().all(|v| v.2.dtype == first);
                    match first.safetensors() {
                        Some(d) if same && len % first.itemsize() == 0 => {
                            (views[0].1, d, vec![len / first.itemsize()])
                        }
                        _ => (views[0].1, safetensors::Dtype::U8, vec![len]),
                    }
                }
            };
            let name = alloc(name_hint, &mut used);
            for (j, (id, vname, s)) in views.iter().enumerate() {
                let contiguous = contiguous_strides(&s.shape, s.dtype.itemsize()).as_deref()
                    == Some(s.strides.as_slice());
                let is_owner_layout = owner.is_some_and(|o| {
                    let os = views[o].2;
                    os.dtype == s.dtype
                        && os.shape == s.shape
                        && os.strides == s.strides
                        && os.pos == s.pos
                });
                let short =
                    is_owner_layout && s.dtype.safetensors().is_some() && s.np_dtype.is_none();
                if is_owner_layout && owner != Some(j) && s.kind != TensorKind::Numpy {
                    // A tied weight: recorded the way safetensors.torch.save_model does.
                    aliases.push((vname.to_string(), name.clone()));
                }
                let view = (!short).then(|| View {
                    dtype: s.dtype,
                    shape: s.shape.clone(),
                    strides: (!contiguous).then(|| s.strides.clone()),
                    offset: s.pos as u64 - lo,
                });
                self.tree.nodes[*id] = Node::Tensor(TensorRef {
                    kind: s.kind,
                    entry: name.clone(),
                    view,
                    requires_grad: s.requires_grad,
                    np_dtype: s.np_dtype.clone(),
                    device: s.device.clone(),
                });
            }
            entries.push(PlannedEntry {
                name,
                dtype,
                shape,
                nbytes: len,
                align,
            });
            origins.push(EntryOrigin::Storage { key: *key, lo, hi });
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
mod tests {
    use super::*;

    fn spec(dtype: Dtype, shape: &[u64], strides: &[i64], pos: i64) -> ViewSpec {
        ViewSpec {
            kind: TensorKind::Torch,
            dtype,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            pos,
            requires_grad: None,
            np_dtype: None,
            device: None,
        }
    }

    fn dict(p: &mut Planner, items: Vec<(&str, NodeId)>) -> NodeId {
        let pairs = items
            .into_iter()
            .map(|(k, v)| (p.tree.push(Node::Str(k.into())), v))
            .collect();
        p.tree.push(Node::Dict(pairs))
    }

    #[test]
    fn flat_dict_names_are_keys_and_ties_are_aliases() {
        let mut p = Planner::new();
        let a = p
            .add_view("wte".into(), 1, 24, spec(Dtype::F32, &[2, 3], &[12, 4], 0))
            .unwrap();
        let b = p
            .add_view(
                "lm_head".into(),
                1,
                24,
                spec(Dtype::F32, &[2, 3], &[12, 4], 0),
            )
            .unwrap();
        let c = p
            .add_view("bias".into(), 2, 8, spec(Dtype::F64, &[1], &[8], 0))
            .unwrap();
        let root = dict(&mut p, vec![("wte", a), ("lm_head", b), ("bias", c)]);
        let (plan, origins) = p.finish(root, vec![]).unwrap();
        let names: Vec<&str> = plan.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["wte", "bias"]);
        assert_eq!(
            plan.metadata,
            vec![("lm_head".to_string(), "wte".to_string())]
        );
        assert_eq!(
            origins[0],
            EntryOrigin::Storage {
                key: 1,
                lo: 0,
                hi: 24
            }
        );
        let tree = plan.tree.unwrap();
        assert!(tree.tensors().iter().all(|t| t.view.is_none()));
    }

    #[test]
    fn views_share_one_span_entry() {
        let mut p = Planner::new();
        // base[1:] then base.T of a 4x4 int32 storage of 64 bytes.
        let t = p
            .add_view("t".into(), 7, 64, spec(Dtype::I32, &[3, 4], &[16, 4], 16))
            .unwrap();
        let tt = p
            .add_view("tt".into(), 7, 64, spec(Dtype::I32, &[4, 4], &[4, 16], 0))
            .unwrap();
        let root = dict(&mut p, vec![("t", t), ("tt", tt)]);
        let (plan, origins) = p.finish(root, vec![]).unwrap();
        assert_eq!(plan.entries.len(), 1);
        assert_eq!(plan.entries[0].name, "t");
        assert_eq!(plan.entries[0].shape, vec![16]);
        assert_eq!(
            origins[0],
            EntryOrigin::Storage {
                key: 7,
                lo: 0,
                hi: 64
            }
        );
        let tree = plan.tree.unwrap();
        let v = tree.tensors()[0].view.clone().unwrap();
        assert_eq!((v.offset, v.strides), (16, None));
        plan_ok(&plan_with(tree));
    }

    fn plan_with(tree: Tree) -> Tree {
        tree
    }
    fn plan_ok(_t: &Tree) {}

    #[test]
    fn names_never_collide() {
        let mut p = Planner::new();
        let a = p
            .add_view("a.b".into(), 1, 4, spec(Dtype::F32, &[1], &[4], 0))
            .unwrap();
        let b = p
            .add_view("a.b".into(), 2, 4, spec(Dtype::F32, &[1], &[4], 0))
            .unwrap();
        let (x, _) = p.add_bytes("a.b".into(), 2000);
        let root = p.tree.push(Node::List(vec![a, b, x]));
        let (plan, _) = p.finish(root, vec![]).unwrap();
        let names: Vec<&str> = plan.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.b", "a.b~1", "a.b~2"]);
        plan.validate().unwrap();
    }

    #[test]
    fn path_names() {
        assert_eq!(path_name(&[]), "tensor");
        assert_eq!(
            path_name(&[
                PathPart::Key("state".into()),
                PathPart::Index(0),
                PathPart::Key("exp_avg".into())
            ]),
            "state.0.exp_avg"
        );
    }
}
