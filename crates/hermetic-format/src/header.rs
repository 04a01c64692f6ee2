//! The safetensors header: parsing and validating one (the safetensors rules
//! in `st_header`, then hermetic's), and building one for the writer.

use crate::digest::{parse_digest, DIGEST_ALGORITHM};
use crate::dtype::Dtype;
use crate::error::{FormatError, Result};
use crate::st_header;
use crate::tree::{contiguous_strides, view_extent, Node, TensorKind, TensorRef, Tree, View};
use crate::typed::ATTRS_VERSION;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

mod doc;

use doc::{finish_doc, parse_early, EarlyDoc};
pub use doc::{parse_doc, parse_doc_members};

/// The key in `__metadata__` whose value is the hermetic document.
pub const HERMETIC_KEY: &str = "__hermetic__";
/// The spec version this crate writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The largest header a reader accepts (the `safetensors` crate's limit).
pub const MAX_HEADER_SIZE: u64 = st_header::MAX_HEADER_SIZE;
/// The data section starts at a multiple of this.
pub const DATA_ALIGNMENT: u64 = 64;

/// One tensor entry of a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    /// The dtype the header names.
    pub st_dtype: safetensors::Dtype,
    pub shape: Vec<u64>,
    /// Byte offset of the first byte in the file.
    pub start: u64,
    pub nbytes: u64,
}

impl EntryInfo {
    /// The hermetic dtype of the entry, if its elements are whole bytes.
    pub fn dtype(&self) -> Option<Dtype> {
        Dtype::from_safetensors(self.st_dtype)
    }
}

/// The value of `__metadata__["__hermetic__"]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Doc {
    pub version: u64,
    /// Each entry's digest, in the order of [`Header::entries`] (a shard
    /// index's document has none).
    pub digests: Vec<u128>,
    /// The tree; absent in a shard of a sharded checkpoint (the index holds it).
    pub tree: Option<Tree>,
}

/// A tensor view with every default filled in, checked against its entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Strides in bytes.
    pub strides: Vec<i64>,
    /// Byte offset of element 0 from the entry's first byte.
    pub offset: u64,
}

impl Resolved {
    /// Whether this view is its whole entry of `nbytes`: element 0 at byte
    /// 0, exactly C-contiguous strides, and every byte covered. Only then is
    /// a tensor over the entry's bytes the view itself, with nothing to
    /// re-stride or offset.
    pub fn is_whole_entry(&self, nbytes: u64) -> bool {
        let item = self.dtype.itemsize();
        let numel = self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        self.offset == 0
            && nbytes > 0
            && numel.and_then(|n| n.checked_mul(item)) == Some(nbytes)
            && contiguous_strides(&self.shape, item).as_deref() == Some(&self.strides[..])
    }
}

/// A parsed, validated header.
#[derive(Clone, Debug)]
pub struct Header {
    /// Names the source in errors.
    pub file: String,
    /// Length of the JSON header (the 8-byte prefix's value).
    pub header_len: u64,
    /// Entries in file order.
    pub entries: Vec<EntryInfo>,
    pub by_name: HashMap<String, usize>,
    /// `__metadata__`, without the hermetic key and the layout digest.
    pub metadata: BTreeMap<String, String>,
    pub doc: Option<Doc>,
    /// The layout digest the writer recorded ([`LAYOUT_KEY`]), if any.
    pub layout: Option<String>,
    /// XXH3-128 of the hermetic document's exact text.
    doc_digest: Option<String>,
}

/// The `__metadata__` key of the layout digest: what a load reads from the
/// header besides entry bytes (SPEC 4.1). Outside the hermetic document, so
/// readers that predate it see one more metadata string and nothing else.
pub const LAYOUT_KEY: &str = "__hermetic_layout__";

/// The layout digest (SPEC 4.1): XXH3-128 of the compact JSON text of
/// `[METADATA, DOC, ENTRIES]`, where METADATA is `[key, value]` pairs of
/// `__metadata__` sorted by key without the hermetic key and this one, DOC
/// the digest of the hermetic document's text (or `null`), and ENTRIES
/// `[name, dtype, shape, [begin, end]]` sorted by name.
pub fn layout_digest<'a>(
    metadata: impl Iterator<Item = (&'a str, &'a str)>,
    doc_digest: Option<&str>,
    entries: impl Iterator<Item = (&'a str, String, &'a [u64], u64, u64)>,
) -> String {
    let mut md: Vec<(&str, &str)> = metadata
        .filter(|(k, _)| *k != HERMETIC_KEY && *k != LAYOUT_KEY)
        .collect();
    md.sort_unstable();
    let mut es: Vec<(&str, String, &[u64], u64, u64)> = entries.collect();
    es.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let es: Vec<(&str, &str, &[u64], [u64; 2])> = es
        .iter()
        .map(|(n, d, s, a, b)| (*n, d.as_str(), *s, [*a, *b]))
        .collect();
    let text = serde_json::to_string(&(md, doc_digest, es)).unwrap_or_default();
    crate::digest::digest(text.as_bytes())
}

impl Header {
    /// Parses and validates the header of a whole file held in `buf`.
    pub fn parse(buf: &[u8], file: &str) -> Result<Header> {
        // The hermetic document sits in `__metadata__`, which writers put
        // first: its tree is parsed on another thread while this one reads
        // the entries (on a 10,000-tensor file each takes about a millisecond).
        let early: std::sync::Mutex<Option<Result<EarlyDoc>>> = std::sync::Mutex::new(None);
        let layout: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let doc_digest: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let raw = rayon::in_place_scope(|scope| {
            let early = &early;
            st_header::parse(buf, file, &mut |meta| {
                if let Some(i) = meta.iter().position(|(k, _)| k == LAYOUT_KEY) {
                    *layout.lock().unwrap_or_else(|p| p.into_inner()) = Some(meta.remove(i).1);
                }
                if let Some(i) = meta.iter().position(|(k, _)| k == HERMETIC_KEY) {
                    let json = meta.swap_remove(i).1;
                    *doc_digest.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(crate::digest::digest(json.as_bytes()));
                    scope.spawn(move |_| {
                        let r = parse_early(json, file);
                        *early.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                    });
                }
            })
        })?;
        let data_start = 8 + raw.len;
        let entries: Vec<EntryInfo> = raw
            .entries
            .into_iter()
            .map(|e| EntryInfo {
                name: e.name,
                st_dtype: e.dtype,
                shape: e.shape,
                start: data_start + e.begin,
                nbytes: e.end - e.begin,
            })
            .collect();
        let by_name = raw.by_name;
        let n = raw.len;
        let metadata: BTreeMap<String, String> = raw.metadata.into_iter().collect();
        let early = early.into_inner().unwrap_or_else(|p| p.into_inner());
        let doc = match early {
            Some(e) => Some(finish_doc(e?, file, &entries, &by_name)?),
            None => None,
        };
        let header = Header {
            file: file.to_string(),
            header_len: n,
            entries,
            by_name,
            metadata,
            doc,
            layout: layout.into_inner().unwrap_or_else(|p| p.into_inner()),
            doc_digest: doc_digest.into_inner().unwrap_or_else(|p| p.into_inner()),
        };
        Ok(header)
    }

    /// The layout digest of this header as it is now ([`layout_digest`]).
    pub fn layout_actual(&self) -> String {
        self.layout_without(None)
    }

    /// The layout digest of this header with the metadata key `skip` left out.
    fn layout_without(&self, skip: Option<&str>) -> String {
        let start = self.data_start();
        layout_digest(
            self.metadata
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != skip)
                .map(|(k, v)| (k.as_str(), v.as_str())),
            self.doc_digest.as_deref(),
            self.entries.iter().map(|e| {
                let b = e.start - start;
                (
                    e.name.as_str(),
                    e.st_dtype.to_string(),
                    e.shape.as_slice(),
                    b,
                    b + e.nbytes,
                )
            }),
        )
    }

    /// The layout digest the writer recorded, also where its key was
    /// damaged: a file without [`LAYOUT_KEY`] whose metadata holds, under
    /// another key, the layout digest of the header without that key had
    /// its layout key renamed (one flipped bit), and must not verify as a
    /// file written before layout digests.
    pub fn layout_recorded(&self) -> Option<String> {
        if self.layout.is_some() || self.doc.is_none() {
            return self.layout.clone();
        }
        let is_digest = |v: &str| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit());
        self.metadata.iter().find_map(|(key, value)| {
            (is_digest(value) && self.layout_without(Some(key)) == *value).then(|| value.clone())
        })
    }

    /// Byte offset of the data section.
    pub fn data_start(&self) -> u64 {
        8 + self.header_len
    }

    pub fn entry(&self, name: &str) -> Option<&EntryInfo> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The hermetic tree, if the file has one.
    pub fn tree(&self) -> Option<&Tree> {
        self.doc.as_ref().and_then(|d| d.tree.as_ref())
    }

    /// Resolves a tensor reference against its entry (already validated).
    pub fn resolve(&self, t: &TensorRef) -> Result<Resolved> {
        let e = self.entry(&t.entry).ok_or_else(|| {
            FormatError::tree(&self.file, "tree", format!("no entry `{}`", t.entry))
        })?;
        resolve(t, e, &self.file)
    }
}

/// The safetensors dtype and shape of the entry holding a view's own
/// row-major bytes: the view's, or `U8` with the element size appended.
pub fn entry_form(dtype: Dtype, shape: &[u64]) -> (safetensors::Dtype, Vec<u64>) {
    match dtype.safetensors() {
        Some(d) => (d, shape.to_vec()),
        None => {
            let mut s = shape.to_vec();
            s.push(dtype.itemsize());
            (safetensors::Dtype::U8, s)
        }
    }
}

/// Resolves `t`, which has a `base`, against the storage of entry `base`
/// (`room` bytes from its first byte), and checks that its own entry `e`
/// holds exactly its dtype and shape.
pub fn resolve_based(
    t: &TensorRef,
    e: &EntryInfo,
    base: &EntryInfo,
    room: u64,
    file: &str,
) -> Result<Resolved> {
    let bad = |detail: String| FormatError::tree(file, format!("tensor `{}`", t.entry), detail);
    let Some(v) = &t.view else {
        return Err(bad("a tensor with `base` needs dtype and shape".into()));
    };
    if entry_form(v.dtype, &v.shape) != (e.st_dtype, e.shape.clone()) {
        return Err(bad(format!(
            "its entry is {:?} {:?}, not the view's own {} {:?}",
            e.st_dtype,
            e.shape,
            v.dtype.code(),
            v.shape
        )));
    }
    let storage = EntryInfo {
        nbytes: room,
        ..base.clone()
    };
    resolve(t, &storage, file)
}

/// Resolves `t` against entry `e`, checking every bound.
pub fn resolve(t: &TensorRef, e: &EntryInfo, file: &str) -> Result<Resolved> {
    let bad = |detail: String| FormatError::tree(file, format!("tensor `{}`", t.entry), detail);
    let view = match &t.view {
        Some(v) => v.clone(),
        None => {
            let dtype = e.dtype().ok_or_else(|| {
                bad(format!(
                    "entry dtype {:?} has no whole-byte elements; hermetic cannot view it",
                    e.st_dtype
                ))
            })?;
            View {
                dtype,
                shape: e.shape.clone(),
                strides: None,
                offset: 0,
            }
        }
    };
    let itemsize = view.dtype.itemsize();
    let strides = match &view.strides {
        Some(s) => s.clone(),
        None => contiguous_strides(&view.shape, itemsize)
            .ok_or_else(|| bad("shape overflows".into()))?,
    };
    match view_extent(&view) {
        None => return Err(bad("shape, strides or offset overflow".into())),
        Some(None) => {
            if view.offset > e.nbytes {
                return Err(bad(format!(
                    "offset {} lies past the entry's {} bytes",
                    view.offset, e.nbytes
                )));
            }
        }
        Some(Some((lo, hi))) => {
            if lo < 0 || hi > i128::from(e.nbytes) {
                return Err(bad(format!(
                    "the view reaches bytes {lo}..{hi} but the entry has {} bytes",
                    e.nbytes
                )));
            }
        }
    }
    if t.kind != TensorKind::Numpy {
        let size = itemsize as i64;
        if view.offset % itemsize != 0 || strides.iter().any(|&s| s < 0 || s % size != 0) {
            return Err(bad(format!(
                "a torch view needs an offset and non-negative strides that are multiples of \
                 the element size {itemsize}"
            )));
        }
    }
    Ok(Resolved {
        dtype: view.dtype,
        shape: view.shape,
        strides,
        offset: view.offset,
    })
}

/// Checks every entry reference of `tree` with `lookup`.
pub fn check_tree<'a>(
    tree: &Tree,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<&'a EntryInfo>,
) -> Result<()> {
    for &id in &tree.memo {
        match &tree.nodes[id] {
            Node::Tensor(t) => {
                let e = lookup(&t.entry).ok_or_else(|| {
                    FormatError::tree(
                        file,
                        "tree",
                        format!("tensor names a missing entry `{}`", t.entry),
                    )
                })?;
                if let Some(b) = &t.base {
                    let be = lookup(b).ok_or_else(|| {
                        FormatError::tree(
                            file,
                            "tree",
                            format!("tensor names a missing base entry `{b}`"),
                        )
                    })?;
                    // The bound that matters (the base's file) is checked
                    // by the archive; here the view must fit any file.
                    resolve_based(t, e, be, u64::MAX >> 2, file)?;
                } else if t.view.is_none() {
                    // The whole entry, whose size the header check already
                    // tied to its shape: only the dtype can be wrong.
                    if e.dtype().is_none() {
                        resolve(t, e, file)?;
                    }
                } else {
                    resolve(t, e, file)?;
                }
            }
            Node::BytesEntry(name) => {
                let e = lookup(name).ok_or_else(|| {
                    FormatError::tree(file, "tree", format!("bytes name a missing entry `{name}`"))
                })?;
                if e.st_dtype != safetensors::Dtype::U8 || e.shape.len() != 1 {
                    return Err(FormatError::tree(
                        file,
                        format!("entry `{name}`"),
                        "a bytes entry must be a 1-D U8 tensor",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A flat dict of every entry, in name order: how a plain safetensors file
/// (or a shard without a tree) reads.
pub fn flat_tree<'a>(names: impl IntoIterator<Item = &'a str>, kind: TensorKind) -> Tree {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    let mut tree = Tree::default();
    let mut pairs = Vec::with_capacity(names.len());
    for n in names {
        let k = tree.push(Node::Str(n.to_string()));
        let v = tree.push(Node::Tensor(TensorRef {
            kind,
            entry: n.to_string(),
            view: None,
            requires_grad: None,
            np_dtype: None,
            device: None,
            base: None,
        }));
        pairs.push((k, v));
    }
    tree.root = tree.push(Node::Dict(pairs));
    tree.index_memo();
    tree
}

// ------------------------------------------------------------ the document

/// Encodes a hermetic document, with the tree already encoded: (JSON, the
/// version it requires).
pub fn doc_json_with(tree: Option<(&str, u64)>, digests: &[(&str, &str)]) -> Result<String> {
    let mut s = String::with_capacity(64 + digests.len() * 64 + tree.map_or(0, |t| t.0.len()));
    let version = tree.map_or(FORMAT_VERSION, |t| t.1);
    s.push_str(&format!(
        "{{\"version\":{version},\"digest\":\"{DIGEST_ALGORITHM}\",\"digests\":{{"
    ));
    for (i, (name, d)) in digests.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(
            &serde_json::to_string(name)
                .map_err(|e| FormatError::unsupported("entry name", e.to_string()))?,
        );
        s.push(':');
        s.push_str(
            &serde_json::to_string(d)
                .map_err(|e| FormatError::unsupported("digest", e.to_string()))?,
        );
    }
    s.push('}');
    if let Some((t, _)) = tree {
        s.push_str(",\"tree\":");
        s.push_str(t);
    }
    s.push('}');
    Ok(s)
}

// ------------------------------------------------------------ header writing

/// One entry as the writer lays it out.
#[derive(Serialize)]
struct EntryJson<'a> {
    dtype: String,
    shape: &'a [u64],
    data_offsets: [u64; 2],
}

/// Builds the complete header (8-byte length + JSON + space padding) so the
/// data section starts at a multiple of [`DATA_ALIGNMENT`].
/// `entries` are (name, dtype, shape, start, end) relative to the data section.
pub fn build_header(
    metadata: &[(String, String)],
    entries: &[(&str, safetensors::Dtype, &[u64], u64, u64)],
) -> Result<Vec<u8>> {
    let mut json = Vec::with_capacity(256 + entries.len() * 96);
    // A hermetic file records its layout digest last in `__metadata__`.
    let layout = metadata
        .iter()
        .find(|(k, _)| k == HERMETIC_KEY)
        .map(|(_, doc)| {
            layout_digest(
                metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                Some(&crate::digest::digest(doc.as_bytes())),
                entries
                    .iter()
                    .map(|(n, d, s, a, b)| (*n, d.to_string(), *s, *a, *b)),
            )
        });
    {
        use serde::ser::SerializeMap;
        let mut ser = serde_json::Serializer::new(&mut json);
        let mut m = serde::Serializer::serialize_map(&mut ser, Some(entries.len() + 1))
            .map_err(|e| FormatError::unsupported("header", e.to_string()))?;
        let mut md: Vec<(&str, &str)> = metadata
            .iter()
            .filter(|(k, _)| k != LAYOUT_KEY)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(l) = &layout {
            md.push((LAYOUT_KEY, l.as_str()));
        }
        m.serialize_entry("__metadata__", &OrderedMap(&md))
            .map_err(|e| FormatError::unsupported("header", e.to_string()))?;
        for (name, dtype, shape, a, b) in entries {
            m.serialize_entry(
                name,
                &EntryJson {
                    dtype: dtype.to_string(),
                    shape,
                    data_offsets: [*a, *b],
                },
            )
            .map_err(|e| FormatError::unsupported("header", e.to_string()))?;
        }
        m.end()
            .map_err(|e| FormatError::unsupported("header", e.to_string()))?;
    }
    let pad = (DATA_ALIGNMENT - (8 + json.len() as u64) % DATA_ALIGNMENT) % DATA_ALIGNMENT;
    json.resize(json.len() + pad as usize, b' ');
    let n = json.len() as u64;
    if n > MAX_HEADER_SIZE {
        return Err(FormatError::unsupported(
            "header",
            format!("the header would be {n} bytes, over the {MAX_HEADER_SIZE}-byte limit readers accept"),
        ));
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

struct OrderedMap<'a>(&'a [(&'a str, &'a str)]);

impl Serialize for OrderedMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}
