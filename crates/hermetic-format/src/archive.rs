//! Reading: a single file or a sharded checkpoint, memory-mapped, with the
//! header validated before anything else is looked at.

use crate::digest::{digest, digest_text};
use crate::error::{FormatError, Result};
use crate::header::{check_tree, flat_tree, resolve, resolve_based, EntryInfo, Header, Resolved};
use crate::shard::{read_index, Index, INDEX_NAME};
use crate::tree::{gather, view_extent, Node, TensorKind, TensorRef, Tree};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The bytes of one file: a read-only map, or a buffer the caller owns.
pub enum Backing {
    Map(memmap2::Mmap),
    Bytes(Box<dyn AsRef<[u8]> + Send + Sync>),
}

impl Backing {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Bytes(b) => (**b).as_ref(),
        }
    }
}

#[allow(unsafe_code)]
fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and every byte is untrusted input: the
    // header is validated before use and payload bytes are only hashed or
    // handed out as plain bytes. If another process truncates the file while
    // it is mapped, reads may fault (SIGBUS), as with any mmap reader; that
    // is the documented contract of `hermetic.load` on files being rewritten
    // in place (hermetic's own writer renames, never rewrites in place).
    unsafe { memmap2::Mmap::map(file) }
}

/// One validated file and its bytes.
pub struct DataFile {
    pub path: PathBuf,
    pub header: Header,
    pub backing: Backing,
}

/// Opens a regular file without blocking: a FIFO named like a checkpoint
/// would otherwise hang the load until something writes to it. The type is
/// checked on the open descriptor, so the path cannot be swapped between.
fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let f = options.open(path)?;
    let kind = f.metadata()?.file_type();
    if kind.is_file() {
        return Ok(f);
    }
    let what = if kind.is_dir() {
        "a directory"
    } else {
        "a FIFO, socket or device"
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("not a regular file ({what}); not read"),
    ))
}

impl DataFile {
    /// Maps `path` and validates its header.
    pub fn open(path: &Path) -> Result<DataFile> {
        let f = open_file(path).map_err(|e| FormatError::io(path, e))?;
        let len = f.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let backing = if len == 0 {
            Backing::Bytes(Box::new(Vec::<u8>::new()))
        } else {
            Backing::Map(map_file(&f).map_err(|e| FormatError::io(path, e))?)
        };
        let header = Header::parse(backing.bytes(), &path.display().to_string())?;
        Ok(DataFile {
            path: path.to_path_buf(),
            header,
            backing,
        })
    }

    /// Validates `bytes` as a whole file; `name` labels it in errors.
    pub fn from_bytes(name: &str, bytes: Box<dyn AsRef<[u8]> + Send + Sync>) -> Result<DataFile> {
        let backing = Backing::Bytes(bytes);
        let header = Header::parse(backing.bytes(), name)?;
        Ok(DataFile {
            path: PathBuf::from(name),
            header,
            backing,
        })
    }

    /// The bytes of an entry of this file.
    pub fn entry_bytes(&self, e: &EntryInfo) -> &[u8] {
        let start = e.start as usize;
        &self.backing.bytes()[start..start + e.nbytes as usize]
    }
}

/// The outcome of checking one entry's digest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EntryCheck {
    pub file: String,
    pub entry: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

/// A file's (or a shard index's) layout digest against its header now: what
/// a load reads besides entry bytes (dtypes, shapes, offsets, metadata, the
/// tree). `recorded` is `None` for files written before hermetic recorded it.
#[derive(Clone, Debug)]
pub struct LayoutCheck {
    pub file: String,
    pub recorded: Option<String>,
    pub actual: String,
}

impl LayoutCheck {
    pub fn ok(&self) -> bool {
        self.recorded.as_ref().is_none_or(|r| *r == self.actual)
    }
}

/// A file or sharded checkpoint, opened and validated.
pub struct Archive {
    /// What the caller opened.
    pub path: PathBuf,
    pub files: Vec<DataFile>,
    /// Present for a sharded checkpoint.
    pub index: Option<Index>,
    /// Entry name -> (file, entry index in that file's header), for a
    /// sharded checkpoint; a single file looks names up in its header.
    locations: Option<HashMap<String, (usize, usize)>>,
    tree: Tree,
    has_tree: bool,
    /// Entry name -> the length of the storage that starts at it, for
    /// entries that tensors name as `base` (at least the entry's length).
    storage_len: HashMap<String, u64>,
}

/// How a path is laid out.
pub fn index_path(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        return Some(path.join(INDEX_NAME));
    }
    let name = path.file_name()?.to_string_lossy();
    name.ends_with(".index.json").then(|| path.to_path_buf())
}

impl Archive {
    /// Opens a hermetic or safetensors file, a checkpoint folder holding
    /// `model.safetensors.index.json`, or such an index file.
    pub fn open(path: &Path) -> Result<Archive> {
        match index_path(path) {
            Some(ix) if path.is_dir() && !ix.exists() => Err(FormatError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "a folder without {INDEX_NAME}: hermetic reads a folder only as a sharded \
                         checkpoint; name the file inside it to read one file"
                    ),
                ),
            )),
            Some(ix) => Self::open_sharded(path, &ix),
            None => Self::from_file(path.to_path_buf(), DataFile::open(path)?),
        }
    }

    /// Wraps one validated file.
    pub fn from_file(path: PathBuf, mut file: DataFile) -> Result<Archive> {
        let taken = file.header.doc.as_mut().and_then(|d| d.tree.take());
        let (tree, has_tree) = match taken {
            Some(t) => (t, true),
            None => (
                flat_tree(
                    file.header.entries.iter().map(|e| e.name.as_str()),
                    default_kind(&file.header.metadata),
                ),
                false,
            ),
        };
        let mut ar = Archive {
            path,
            files: vec![file],
            index: None,
            locations: None,
            tree,
            has_tree,
            storage_len: HashMap::new(),
        };
        ar.storage_len = ar.storage_lens()?;
        Ok(ar)
    }

    fn open_sharded(path: &Path, ix_path: &Path) -> Result<Archive> {
        let index = read_index(ix_path)?;
        let dir = ix_path.parent().unwrap_or(Path::new("."));
        let ix_file = ix_path.display().to_string();
        let mut names: Vec<&str> = index.weight_map.iter().map(|(_, f)| f.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut files = Vec::with_capacity(names.len());
        let mut file_no = HashMap::new();
        for n in names {
            file_no.insert(n.to_string(), files.len());
            files.push(DataFile::open(&dir.join(n))?);
        }
        let mut locations = HashMap::new();
        for (entry, f) in &index.weight_map {
            let fi = file_no[f];
            let Some(&ei) = files[fi].header.by_name.get(entry) else {
                return Err(FormatError::Index {
                    file: ix_file,
                    detail: format!("weight_map puts `{entry}` in {f}, which has no such entry"),
                });
            };
            locations.insert(entry.clone(), (fi, ei));
        }
        let (tree, has_tree) = match &index.tree {
            Some(t) => {
                let lookup = |n: &str| locations.get(n).map(|&(f, e)| &files[f].header.entries[e]);
                check_tree(t, &ix_file, &lookup)?;
                (t.clone(), true)
            }
            None => {
                let kind = files
                    .first()
                    .map(|f| default_kind(&f.header.metadata))
                    .unwrap_or(TensorKind::Torch);
                (
                    flat_tree(index.weight_map.iter().map(|(k, _)| k.as_str()), kind),
                    false,
                )
            }
        };
        let mut ar = Archive {
            path: path.to_path_buf(),
            files,
            index: Some(index),
            locations: Some(locations),
            tree,
            has_tree,
            storage_len: HashMap::new(),
        };
        ar.storage_len = ar.storage_lens()?;
        Ok(ar)
    }

    /// The tree; for a file without one, a flat dict of its entries.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Whether the file carried a hermetic tree (false: plain safetensors).
    pub fn has_tree(&self) -> bool {
        self.has_tree
    }

    /// User metadata (`__metadata__` without the hermetic key, or the index's).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        match &self.index {
            Some(ix) => ix.metadata.clone(),
            None => self.files[0].header.metadata.clone(),
        }
    }

    /// Where an entry lives: (file number, info).
    pub fn locate(&self, entry: &str) -> Option<(usize, &EntryInfo)> {
        let (f, e) = match &self.locations {
            Some(l) => *l.get(entry)?,
            None => (0, *self.files[0].header.by_name.get(entry)?),
        };
        Some((f, &self.files[f].header.entries[e]))
    }

    fn locate_or_fail(&self, name: &str) -> Result<(usize, &EntryInfo)> {
        self.locate(name).ok_or_else(|| {
            FormatError::tree(
                &self.path.display().to_string(),
                "tree",
                format!("no entry `{name}`"),
            )
        })
    }

    /// Resolves a tensor with a `base` against its base's file: the file
    /// number, the base entry, and the view relative to the base's first byte.
    fn resolve_base(&self, t: &TensorRef, base: &str) -> Result<(usize, &EntryInfo, Resolved)> {
        let (f, e) = self.locate_or_fail(&t.entry)?;
        let (fb, be) = self.locate_or_fail(base)?;
        let file = self.files[fb].path.display().to_string();
        if f != fb {
            return Err(FormatError::tree(
                &file,
                format!("tensor `{}`", t.entry),
                format!("its base `{base}` lies in another shard"),
            ));
        }
        let room = (self.files[fb].backing.bytes().len() as u64).saturating_sub(be.start);
        Ok((fb, be, resolve_based(t, e, be, room, &file)?))
    }

    /// The storage lengths of every entry named as a `base`: the furthest
    /// byte any tensor on it reaches.
    fn storage_lens(&self) -> Result<HashMap<String, u64>> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for n in &self.tree.nodes {
            let Node::Tensor(t) = n else { continue };
            let Some(b) = &t.base else { continue };
            let (_, be, r) = self.resolve_base(t, b)?;
            let reach = view_extent(&crate::tree::View {
                dtype: r.dtype,
                shape: r.shape.clone(),
                strides: Some(r.strides.clone()),
                offset: r.offset,
            })
            .flatten()
            .map_or(0, |(_, hi)| hi as u64);
            let len = out.entry(b.clone()).or_insert(be.nbytes);
            *len = (*len).max(reach).max(r.offset);
        }
        Ok(out)
    }

    /// Resolves a tensor reference of the tree: the file number, the
    /// storage it views (an entry, or the bytes from its `base` on), and the
    /// view relative to the storage's first byte.
    pub fn resolve(&self, t: &TensorRef) -> Result<(usize, EntryInfo, Resolved)> {
        let (f, e, r) = match &t.base {
            Some(b) => self.resolve_base(t, b)?,
            None => {
                let (f, e) = self.locate_or_fail(&t.entry)?;
                let r = resolve(t, e, &self.files[f].path.display().to_string())?;
                (f, e, r)
            }
        };
        let mut storage = e.clone();
        if let Some(&len) = self.storage_len.get(&e.name) {
            storage.nbytes = storage.nbytes.max(len);
        }
        Ok((f, storage, r))
    }

    /// Checks that every tensor with a `base` reads, through its base, the
    /// same bytes its own entry holds (what a plain safetensors reader sees).
    pub fn verify_views(&self) -> Result<()> {
        for n in &self.tree.nodes {
            let Node::Tensor(t) = n else { continue };
            if t.base.is_none() {
                continue;
            }
            let (f, storage, r) = self.resolve(t)?;
            let bytes = self.files[f].backing.bytes();
            let start = storage.start as usize;
            let region = &bytes[start..start + storage.nbytes as usize];
            let got = gather(
                region,
                r.dtype.itemsize(),
                &r.shape,
                &r.strides,
                r.offset as i64,
            );
            let (fe, e) = self.locate_or_fail(&t.entry)?;
            if got.as_deref() != Some(self.files[fe].entry_bytes(e)) {
                return Err(FormatError::tree(
                    &self.files[f].path.display().to_string(),
                    format!("tensor `{}`", t.entry),
                    format!(
                        "its view of `{}` differs from its own entry's bytes",
                        storage.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Entry names in file order.
    pub fn entry_names(&self) -> Vec<&str> {
        self.files
            .iter()
            .flat_map(|f| f.header.entries.iter().map(|e| e.name.as_str()))
            .collect()
    }

    /// Hashes the named entries (all when `None`) in parallel and compares
    /// each with its recorded digest. Errors only when nothing can be checked.
    pub fn check(&self, only: Option<&[&str]>) -> Result<Vec<EntryCheck>> {
        let mut jobs = Vec::new();
        for f in &self.files {
            let Some(doc) = &f.header.doc else {
                return Err(FormatError::NoDigests {
                    file: f.path.display().to_string(),
                });
            };
            for (e, &d) in f.header.entries.iter().zip(&doc.digests) {
                if only.is_some_and(|o| !o.contains(&e.name.as_str())) {
                    continue;
                }
                jobs.push((f, e, digest_text(d)));
            }
        }
        Ok(jobs
            .par_iter()
            .map(|(f, e, expected)| {
                let actual = digest(f.entry_bytes(e));
                EntryCheck {
                    file: f.path.display().to_string(),
                    entry: e.name.clone(),
                    ok: &actual == expected,
                    expected: expected.clone(),
                    actual,
                }
            })
            .collect())
    }

    /// Each file's layout digest (and the shard index's), against its header.
    pub fn check_layout(&self) -> Vec<LayoutCheck> {
        let mut out: Vec<LayoutCheck> = self
            .files
            .iter()
            .filter(|f| f.header.doc.is_some())
            .map(|f| LayoutCheck {
                file: f.path.display().to_string(),
                recorded: f.header.layout_recorded(),
                actual: f.header.layout_actual(),
            })
            .collect();
        if let Some(ix) = &self.index {
            out.push(LayoutCheck {
                file: index_path(&self.path)
                    .unwrap_or_else(|| self.path.clone())
                    .display()
                    .to_string(),
                recorded: ix.layout.clone(),
                actual: ix.layout_actual.clone(),
            });
        }
        out
    }

    /// Like [`Archive::check`], but fails on the first corrupt entry.
    /// With every entry checked (`only` is `None`), also checks tensors
    /// with a `base` against their own entries ([`Archive::verify_views`]).
    pub fn verify(&self, only: Option<&[&str]>) -> Result<()> {
        for c in self.check(only)? {
            if !c.ok {
                return Err(FormatError::Digest {
                    file: c.file,
                    entry: c.entry,
                    expected: c.expected,
                    actual: c.actual,
                });
            }
        }
        if only.is_none() {
            for c in self.check_layout() {
                if !c.ok() {
                    return Err(FormatError::Layout {
                        file: c.file,
                        expected: c.recorded.unwrap_or_default(),
                        actual: c.actual,
                    });
                }
            }
            self.verify_views()?;
        }
        Ok(())
    }
}

fn default_kind(metadata: &BTreeMap<String, String>) -> TensorKind {
    match metadata.get("format").map(String::as_str) {
        Some("np") | Some("numpy") => TensorKind::Numpy,
        _ => TensorKind::Torch,
    }
}
