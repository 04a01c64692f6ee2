//! The hermetic tensor-tree format: a safetensors file whose `__metadata__`
//! carries a tree of containers, scalars and references to tensor entries
//! (docs/SPEC.md). No Python here: this crate is usable, testable and
//! fuzzable from Rust alone; `hermetic-py` converts Python objects to and
//! from [`Tree`]s.
//!
//! - [`Planner`] turns tensor views into entries (names, shared storage, spans).
//! - [`write_file`] / [`write_to_vec`] / [`write_sharded`] stream a [`Plan`] out.
//! - [`Archive`] opens a file or sharded checkpoint, validates it and verifies digests.

mod archive;
mod digest;
mod dtype;
mod error;
#[cfg(feature = "pickle")]
mod from_pickle;
mod header;
mod planner;
mod shard;
mod st_header;
mod syntax;
mod temps;
mod tree;
mod typed;
mod writer;

pub use archive::{index_path, Archive, Backing, DataFile, EntryCheck, LayoutCheck};
pub use digest::{digest, Hasher, DIGEST_ALGORITHM};
pub use dtype::{
    is_torch_device, is_torch_dtype_name, numpy_code, Dtype, MAX_RAW_ITEMSIZE, NUMPY_CODES,
    TORCH_DEVICE_TYPES, TORCH_DTYPE_NAMES,
};
pub use error::{FormatError, Result};
#[cfg(feature = "pickle")]
pub use from_pickle::{convert, convert_with, Converted, ConvertedData, Foreign};
pub use header::{
    check_tree, flat_tree, layout_digest, parse_doc, resolve, Doc, EntryInfo, Header, Resolved,
    DATA_ALIGNMENT, FORMAT_VERSION, HERMETIC_KEY, LAYOUT_KEY, MAX_HEADER_SIZE,
};
pub use planner::{path_name, path_place, EntryOrigin, PathPart, Planner, ViewSpec};
pub use shard::{read_index, shard_name, write_sharded, Index, INDEX_NAME, MAX_INDEX_SIZE};
pub use temps::{remove_stale as remove_stale_temporaries, stale as stale_temporaries};
pub use tree::{
    contiguous_strides, gather, is_dense, view_extent, Node, NodeId, Shape, TensorKind, TensorRef,
    Tree, View, DEFAULT_FACTORIES, INLINE_BYTES_MAX, MAX_DEPTH, MAX_NDIM,
};
pub use typed::{
    is_class_name, is_date, is_datetime, is_decimal, is_identifier, is_import_name, is_time,
    is_timedelta, is_utc_offset, is_uuid, NamedRef, RefKind, ATTRS_VERSION, TYPED_VERSION,
    VIEWS_VERSION,
};
pub use writer::{
    write_file, write_to_vec, EntrySource, Plan, PlannedEntry, SliceSource, WriteOptions,
};

/// Writes a flat `name -> tensor` file (what `safetensors` writes, plus the
/// tree and digests): each item is (name, dtype, shape, bytes).
pub fn save_tensors(
    path: &std::path::Path,
    tensors: &[(&str, Dtype, &[u64], &[u8])],
    metadata: &[(&str, &str)],
    opts: WriteOptions,
) -> Result<()> {
    let (plan, data) = flat_plan(tensors, metadata)?;
    write_file(path, &plan, &mut SliceSource(data), opts)
}

/// Like [`save_tensors`], to memory.
pub fn tensors_to_vec(
    tensors: &[(&str, Dtype, &[u64], &[u8])],
    metadata: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let (plan, data) = flat_plan(tensors, metadata)?;
    write_to_vec(&plan, &mut SliceSource(data))
}

fn flat_plan<'a>(
    tensors: &[(&str, Dtype, &[u64], &'a [u8])],
    metadata: &[(&str, &str)],
) -> Result<(Plan, Vec<&'a [u8]>)> {
    let mut p = Planner::new();
    let mut pairs = Vec::new();
    for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
        let strides = contiguous_strides(shape, dtype.itemsize())
            .ok_or_else(|| FormatError::unsupported(*name, "shape overflows"))?;
        let id = p.add_view(
            name.to_string(),
            i as u64,
            bytes.len() as u64,
            ViewSpec {
                kind: TensorKind::Torch,
                dtype: *dtype,
                shape: shape.to_vec(),
                strides,
                pos: 0,
                requires_grad: None,
                np_dtype: None,
                device: None,
            },
        )?;
        let k = p.tree.push(Node::Str(name.to_string()));
        pairs.push((k, id));
    }
    let root = p.tree.push(Node::Dict(pairs));
    let md = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (plan, origins) = p.finish(root, md)?;
    let data = origins
        .iter()
        .map(|o| match o {
            EntryOrigin::Storage { key, lo, hi } => {
                let b = tensors[*key as usize].3;
                b.get(*lo as usize..*hi as usize).unwrap_or(&[])
            }
            // Never planned here: every tensor is dense in a storage of its own.
            EntryOrigin::Bytes { .. } | EntryOrigin::Gather { .. } => &[][..],
        })
        .collect();
    Ok((plan, data))
}
