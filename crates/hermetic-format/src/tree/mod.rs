//! The tree: containers, scalars and references to tensor entries, stored as
//! an arena of [`Node`]s and encoded as the JSON subset docs/SPEC.md defines.
//!
//! Identity: every *memoizable* node (bytes, containers, tensors) gets the next
//! memo number in document order (a container before its children) the first
//! time it appears; a later appearance of the same object is `{"$ref": n}`.
//!
//! The nodes are in `node.rs`, tensor views and their byte geometry in
//! `tensor.rs`; `encode.rs` writes a tree as JSON and `decode/` reads one back.

mod decode;
mod encode;
mod node;
mod tensor;
#[cfg(test)]
mod tests;

use crate::error::Result;
use serde_json::Value;

pub use node::{Node, Shape, DEFAULT_FACTORIES};
pub use tensor::{contiguous_strides, gather, is_dense, view_extent, TensorKind, TensorRef, View};

/// Index of a node in [`Tree::nodes`].
pub type NodeId = usize;

/// The deepest container nesting (lists, tuples, dicts, sets) a tree may have.
pub const MAX_DEPTH: usize = 50;
/// The most dimensions a tensor view may have.
pub const MAX_NDIM: usize = 64;
/// Bytes at or below this size are stored inline (base64); larger ones as a
/// `U8` tensor entry.
pub const INLINE_BYTES_MAX: usize = 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The tree: an arena of nodes and its root.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub root: NodeId,
    /// Memo number -> node, filled by [`Tree::index_memo`] and the decoder.
    pub memo: Vec<NodeId>,
}

impl Tree {
    /// Adds a node and returns its id.
    pub fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Follows `Ref`s to the node they name.
    pub fn resolve(&self, id: NodeId) -> NodeId {
        match &self.nodes[id] {
            Node::Ref(n) => self.memo.get(*n).copied().unwrap_or(id),
            // The container itself (its attributes ride along).
            Node::Attrs { target, .. } => *target,
            _ => id,
        }
    }

    /// Recomputes `memo` by walking the tree in document order.
    pub fn index_memo(&mut self) {
        let mut memo = Vec::new();
        let mut stack = vec![self.root];
        while let Some(id) = stack.pop() {
            let node = &self.nodes[id];
            if node.is_memoizable() {
                memo.push(id);
            }
            self.push_children_rev(id, &mut stack);
        }
        self.memo = memo;
    }

    /// Pushes the direct children of `id` onto `stack`, last first (so they
    /// pop in document order).
    pub(crate) fn push_children_rev(&self, id: NodeId, stack: &mut Vec<NodeId>) {
        match &self.nodes[id] {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => {
                stack.extend(v.iter().rev())
            }
            Node::Dict(p) | Node::ODict(p) => {
                for (k, v) in p.iter().rev() {
                    stack.push(*v);
                    stack.push(*k);
                }
            }
            Node::Object { values, .. } => stack.extend(values.iter().rev()),
            Node::Namespace(a) => stack.extend(a.iter().rev().map(|(_, v)| *v)),
            Node::DefaultDict { pairs: p, .. } | Node::Counter(p) => {
                for (k, v) in p.iter().rev() {
                    stack.push(*v);
                    stack.push(*k);
                }
            }
            Node::Deque { items, .. } => stack.extend(items.iter().rev()),
            Node::Slice(v) => stack.extend(v.iter().rev()),
            Node::Attrs { target, attrs } => {
                stack.extend(attrs.iter().rev().map(|(_, v)| *v));
                stack.push(*target);
            }
            Node::Enum { value, .. } => stack.push(*value),
            Node::Partial { args, keywords, .. } => {
                stack.extend(keywords.iter().rev().map(|(_, v)| *v));
                stack.extend(args.iter().rev());
            }
            _ => {}
        }
    }

    /// Direct children in document order (keys before values).
    pub fn children(&self, id: NodeId) -> Vec<NodeId> {
        match &self.nodes[id] {
            Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v) => v.clone(),
            Node::Dict(p) | Node::ODict(p) => p.iter().flat_map(|(k, v)| [*k, *v]).collect(),
            Node::Object { values, .. } => values.clone(),
            Node::Namespace(a) => a.iter().map(|(_, v)| *v).collect(),
            Node::DefaultDict { pairs: p, .. } | Node::Counter(p) => {
                p.iter().flat_map(|(k, v)| [*k, *v]).collect()
            }
            Node::Deque { items, .. } => items.clone(),
            Node::Slice(v) => v.to_vec(),
            Node::Attrs { target, attrs } => std::iter::once(*target)
                .chain(attrs.iter().map(|(_, v)| *v))
                .collect(),
            Node::Enum { value, .. } => vec![*value],
            Node::Partial { args, keywords, .. } => args
                .iter()
                .copied()
                .chain(keywords.iter().map(|(_, v)| *v))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every tensor reference (first appearances only) in document order.
    pub fn tensors(&self) -> Vec<&TensorRef> {
        self.memo
            .iter()
            .filter_map(|&id| match &self.nodes[id] {
                Node::Tensor(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// Every entry name the tree uses (tensors and large bytes), in document order.
    pub fn entry_names(&self) -> Vec<&str> {
        self.memo
            .iter()
            .filter_map(|&id| match &self.nodes[id] {
                Node::Tensor(t) => Some(t.entry.as_str()),
                Node::BytesEntry(e) => Some(e.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Encodes the tree as JSON.
    pub fn to_json(&self) -> Result<String> {
        encode::to_json(self)
    }

    /// Serializes the node (and its subtree) as a JSON value.
    pub fn node_to_value(&self, id: NodeId) -> Result<Value> {
        encode::node_to_value(self, id)
    }

    /// Decodes a tree from JSON, checking every rule of the spec that needs no
    /// knowledge of the entries. `file` names the source in errors.
    pub fn from_json(json: &str, file: &str) -> Result<Tree> {
        decode::from_json(json, file)
    }

    /// A human-readable place for errors: `tree["a"][0]`.
    pub fn place_of_path(parts: &[String]) -> String {
        let mut s = String::from("tree");
        for p in parts {
            s.push_str(p);
        }
        s
    }
}
