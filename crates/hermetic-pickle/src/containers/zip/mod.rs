//! Zip archives, read by hand so that every place two zip readers could
//! disagree is visible.
//!
//! Two readers matter. `torch.load` decides "zip" from the local header magic
//! `PK\x03\x04` at offset 0 and reads records through miniz, which uses the
//! central directory's offsets as absolute positions and follows the ZIP64
//! locator's pointer. Python's `zipfile` (used by `np.load` for `.npz`, by
//! joblib users and by `zipfile.is_zipfile`) finds the end of central
//! directory record at the end of the file, shifts every offset by the bytes
//! found before the archive, and expects the ZIP64 record right before its
//! locator; for a duplicated name the last entry wins. Wherever the archive
//! lets these readers see different contents, the scan reports an
//! `ambiguous_zip` finding naming the rule that broke.
//!
//! PyTorch writes every record with general purpose flag bit 3 (a data
//! descriptor follows the data; the local header's CRC and sizes are zero)
//! and always writes ZIP64 end records, so neither is a finding: the data
//! descriptor is instead checked against the central directory.

use super::{le_u64, ContainerError};

mod checks;
mod parse;
mod read;
mod scan;
#[cfg(test)]
mod tests;

use parse::descriptor_len;
pub use read::{peek_entry, read_entry, EntryContent};
pub use scan::concatenated_archives;
pub(crate) use scan::{scan_embedded_zip, scan_zip};

pub const LOCAL_SIG: &[u8] = b"PK\x03\x04";
pub const CENTRAL_SIG: &[u8] = b"PK\x01\x02";
pub const EOCD_SIG: &[u8] = b"PK\x05\x06";
pub const ZIP64_LOCATOR_SIG: &[u8] = b"PK\x06\x07";
pub const ZIP64_EOCD_SIG: &[u8] = b"PK\x06\x06";
pub const DESCRIPTOR_SIG: &[u8] = b"PK\x07\x08";

const EOCD_LEN: usize = 22;
const LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
const MAX_COMMENT: usize = 0xffff;

pub const FLAG_ENCRYPTED: u16 = 0x0001;
pub const FLAG_DESCRIPTOR: u16 = 0x0008;
pub const FLAG_STRONG_ENCRYPTION: u16 = 0x0040;
pub const FLAG_UTF8: u16 = 0x0800;

const METHOD_STORED: u16 = 0;
const METHOD_DEFLATE: u16 = 8;

/// A rule of unambiguous zip structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZipRule {
    /// Bytes before the first record (or a central directory offset that
    /// only works when shifted).
    LeadingData,
    /// Bytes after the end of central directory record and its comment.
    TrailingData,
    DuplicateName,
    /// A name with a NUL byte (`zipfile` truncates it there).
    BadName,
    Overlap,
    /// Bytes between records that no record accounts for: room for a local
    /// header that a reader walking local headers (a streaming unzipper)
    /// sees and a central-directory reader does not.
    Gap,
    /// Local headers not in central directory order.
    OutOfOrder,
    /// Local and central headers disagree (name, method, flags, CRC, sizes).
    HeaderMismatch,
    /// A data descriptor missing or disagreeing with the central directory.
    DataDescriptor,
    Encrypted,
    /// The end record's entry counts differ from the central directory.
    CountMismatch,
    /// The ZIP64 records disagree with each other or with the end record.
    Zip64Mismatch,
    /// A malformed extra field.
    ExtraField,
    MultiDisk,
    /// A stored entry whose compressed and uncompressed sizes differ.
    StoredSize,
    Truncated,
    BadCrc,
    /// Decompressed data of another length than the central directory says.
    SizeMismatch,
    /// A compression method other than stored or deflate on a scanned entry.
    UnsupportedMethod,
    /// The central directory reads only when its offset is taken one way.
    UnreadableDirectory,
}

impl ZipRule {
    pub fn as_str(self) -> &'static str {
        match self {
            ZipRule::LeadingData => "leading data",
            ZipRule::TrailingData => "trailing data",
            ZipRule::DuplicateName => "duplicate names",
            ZipRule::BadName => "NUL in a name",
            ZipRule::Overlap => "overlapping entries",
            ZipRule::Gap => "bytes between records",
            ZipRule::OutOfOrder => "entries out of order",
            ZipRule::HeaderMismatch => "local and central headers disagree",
            ZipRule::DataDescriptor => "data descriptor",
            ZipRule::Encrypted => "encryption",
            ZipRule::CountMismatch => "central directory count mismatch",
            ZipRule::Zip64Mismatch => "ZIP64 records",
            ZipRule::ExtraField => "malformed extra field",
            ZipRule::MultiDisk => "multi-disk archive",
            ZipRule::StoredSize => "stored entry sizes differ",
            ZipRule::Truncated => "truncated",
            ZipRule::BadCrc => "bad CRC",
            ZipRule::SizeMismatch => "decompressed size mismatch",
            ZipRule::UnsupportedMethod => "unsupported compression method",
            ZipRule::UnreadableDirectory => "central directory offset",
        }
    }
}

/// One broken rule, at an offset within the archive's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipIssue {
    pub rule: ZipRule,
    pub offset: u64,
    pub detail: String,
}

/// An entry of the central directory, checked against its local header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipEntry {
    pub name: Vec<u8>,
    pub flags: u16,
    pub method: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// Offset of the central directory record.
    pub central_offset: u64,
    /// Offset of the local header (the central value plus the prefix length).
    pub local_offset: u64,
    /// Offset of the entry's data; `None` when the local header is unreadable.
    pub data_offset: Option<u64>,
    /// End of the data and its data descriptor.
    pub end_offset: Option<u64>,
}

impl ZipEntry {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A zip archive's directory.
#[derive(Clone, Debug)]
pub struct ZipArchive {
    pub entries: Vec<ZipEntry>,
    pub eocd_offset: u64,
    pub central_offset: u64,
    pub central_size: u64,
    /// Bytes before the archive by `zipfile`'s reckoning (its `concat`).
    pub prefix_len: u64,
    pub zip64: bool,
    pub issues: Vec<ZipIssue>,
}

/// The end of central directory record as `zipfile` finds it: at the very
/// end when there is no comment, else the last signature in the final 64 KiB.
pub fn find_eocd(data: &[u8]) -> Option<usize> {
    let len = data.len();
    if len < EOCD_LEN {
        return None;
    }
    let last = len - EOCD_LEN;
    if &data[last..last + 4] == EOCD_SIG && data[len - 2..] == [0, 0] {
        return Some(last);
    }
    let window = len.saturating_sub(MAX_COMMENT + EOCD_LEN);
    let pos = window + data[window..].windows(4).rposition(|w| w == EOCD_SIG)?;
    (pos + EOCD_LEN <= len).then_some(pos)
}

/// The end record miniz finds, which `torch.load` and `torch.jit.load` read
/// archives through: scanning back from the end in 4 KiB reads, it takes the
/// last signature with room for a whole record after it, skipping any
/// closer to the end (where `zipfile` gives up), and stops once a read
/// starts more than 64 KiB + 22 bytes from the end.
pub fn find_eocd_miniz(data: &[u8]) -> Option<usize> {
    const CHUNK: usize = 4096;
    let size = data.len();
    if size < EOCD_LEN {
        return None;
    }
    let mut cur = size.saturating_sub(CHUNK);
    loop {
        let n = CHUNK.min(size - cur);
        let chunk = &data[cur..cur + n];
        if n >= 4 {
            for i in (0..=n - 4).rev() {
                if &chunk[i..i + 4] == EOCD_SIG && size - (cur + i) >= EOCD_LEN {
                    return Some(cur + i);
                }
            }
        }
        if cur == 0 || size - cur >= usize::from(u16::MAX) + EOCD_LEN {
            return None;
        }
        cur = cur.saturating_sub(CHUNK - 3);
    }
}

fn issue(rule: ZipRule, offset: u64, detail: impl Into<String>) -> ZipIssue {
    ZipIssue {
        rule,
        offset,
        detail: detail.into(),
    }
}

fn truncated(what: &'static str, offset: u64, end: u64, len: usize) -> ContainerError {
    ContainerError::Truncated {
        what,
        offset,
        needed: end.saturating_sub(len as u64),
    }
}

/// The body of the first extra-field record with `tag`, and whether the
/// extra field as a whole is well formed.
fn extra_record(extra: &[u8], tag: u16) -> (Option<&[u8]>, bool) {
    let mut i = 0usize;
    let mut found = None;
    while i + 4 <= extra.len() {
        let t = u16::from_le_bytes([extra[i], extra[i + 1]]);
        let n = usize::from(u16::from_le_bytes([extra[i + 2], extra[i + 3]]));
        let Some(body) = extra.get(i + 4..i + 4 + n) else {
            return (found, false);
        };
        if t == tag && found.is_none() {
            found = Some(body);
        }
        i += 4 + n;
    }
    (found, i == extra.len() || extra.len() - i < 4)
}

/// Replaces saturated 32-bit fields by their ZIP64 extra values, in the
/// order the format defines. `false` when a needed value is missing.
fn apply_zip64(extra: &[u8], fields: &mut [&mut u64]) -> bool {
    if !fields.iter().any(|f| **f == 0xffff_ffff) {
        return true;
    }
    let (Some(body), _) = extra_record(extra, 0x0001) else {
        return false;
    };
    let mut at = 0;
    for f in fields.iter_mut() {
        if **f == 0xffff_ffff {
            match le_u64(body, at) {
                Some(v) => **f = v,
                None => return false,
            }
            at += 8;
        }
    }
    true
}
