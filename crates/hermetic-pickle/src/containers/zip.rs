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

use super::{
    display_name, is_interesting_content, is_pickle_name, is_safetensors, le_u16, le_u32, le_u64,
    scan_member, scan_pickle_file, slice_at, ContainerError, Loc, Scanner,
};
use crate::codes::FindingCode;
use crate::policy::Verdict;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;

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

fn read_central(
    data: &[u8],
    start: u64,
    size: u64,
    shift: u64,
    max_entries: usize,
) -> Result<(Vec<ZipEntry>, Vec<ZipIssue>), ContainerError> {
    let end = start
        .checked_add(size)
        .ok_or_else(|| truncated("central directory", start, u64::MAX, data.len()))?;
    if end > data.len() as u64 {
        return Err(truncated("central directory", start, end, data.len()));
    }
    // Both fit in the data, so they fit a usize.
    let (start_u, end_u) = (start as usize, end as usize);
    let mut entries = Vec::new();
    let mut issues = Vec::new();
    let mut pos = start_u;
    while pos < end_u {
        if entries.len() >= max_entries {
            return Err(ContainerError::LimitExceeded {
                what: "zip entries",
                offset: pos as u64,
                limit: max_entries as u64,
            });
        }
        if pos + CENTRAL_LEN > end_u {
            return Err(truncated(
                "central directory record",
                pos as u64,
                (pos + CENTRAL_LEN) as u64,
                end_u,
            ));
        }
        if &data[pos..pos + 4] != CENTRAL_SIG {
            return Err(ContainerError::BadSignature {
                what: "central directory record",
                offset: pos as u64,
            });
        }
        let r16 = |o: usize| le_u16(data, pos + o).unwrap_or(0);
        let r32 = |o: usize| le_u32(data, pos + o).unwrap_or(0);
        let nlen = usize::from(r16(28));
        let xlen = usize::from(r16(30));
        let clen = usize::from(r16(32));
        let total = CENTRAL_LEN + nlen + xlen + clen;
        if pos + total > end_u {
            return Err(truncated(
                "central directory record",
                pos as u64,
                (pos + total) as u64,
                end_u,
            ));
        }
        let name = data[pos + CENTRAL_LEN..pos + CENTRAL_LEN + nlen].to_vec();
        let extra = &data[pos + CENTRAL_LEN + nlen..pos + CENTRAL_LEN + nlen + xlen];
        let mut usize_ = u64::from(r32(24));
        let mut csize = u64::from(r32(20));
        let mut local = u64::from(r32(42));
        if !extra_record(extra, 0).1 {
            issues.push(issue(
                ZipRule::ExtraField,
                pos as u64,
                format!(
                    "the central extra field of `{}` is malformed (zipfile rejects it)",
                    display_name(&name)
                ),
            ));
        }
        if !apply_zip64(extra, &mut [&mut usize_, &mut csize, &mut local]) {
            issues.push(issue(
                ZipRule::Zip64Mismatch,
                pos as u64,
                format!(
                    "`{}` has saturated sizes or offset but no ZIP64 extra field for them",
                    display_name(&name)
                ),
            ));
        }
        if r16(34) != 0 && r16(34) != 0xffff {
            issues.push(issue(
                ZipRule::MultiDisk,
                pos as u64,
                "an entry starts on another disk",
            ));
        }
        let local_offset = local
            .checked_add(shift)
            .ok_or_else(|| ContainerError::Malformed {
                what: "central directory record",
                offset: pos as u64,
                reason: "local header offset overflows".into(),
            })?;
        entries.push(ZipEntry {
            name,
            flags: r16(8),
            method: r16(10),
            crc32: r32(16),
            compressed_size: csize,
            uncompressed_size: usize_,
            central_offset: pos as u64,
            local_offset,
            data_offset: None,
            end_offset: None,
        });
        pos += total;
    }
    Ok((entries, issues))
}

/// The length of the data descriptor at `at` that matches the entry's
/// central values, trying the forms writers use (with or without signature,
/// 32- or 64-bit sizes).
fn descriptor_len(data: &[u8], at: u64, e: &ZipEntry) -> Option<u64> {
    let at = usize::try_from(at).ok().filter(|&a| a < data.len())?;
    let signed = data.get(at..at.checked_add(4)?) == Some(DESCRIPTOR_SIG);
    let mut forms: Vec<(usize, bool)> = Vec::new();
    if signed {
        forms.extend([(4, false), (4, true)]);
    }
    forms.extend([(0, false), (0, true)]);
    for (skip, wide) in forms {
        let p = at.checked_add(skip)?;
        let crc = le_u32(data, p);
        let (cs, us, len) = if wide {
            (le_u64(data, p + 4), le_u64(data, p + 12), skip + 20)
        } else {
            (
                le_u32(data, p + 4).map(u64::from),
                le_u32(data, p + 8).map(u64::from),
                skip + 12,
            )
        };
        if crc == Some(e.crc32) && cs == Some(e.compressed_size) && us == Some(e.uncompressed_size)
        {
            return Some(len as u64);
        }
    }
    None
}

impl ZipArchive {
    /// Reads the archive's directory and checks every entry's local header.
    /// An error means no consistent directory could be found at all.
    pub fn parse(data: &[u8], max_entries: usize) -> Result<ZipArchive, ContainerError> {
        let eocd = find_eocd(data).ok_or(ContainerError::BadSignature {
            what: "end of central directory",
            offset: data.len() as u64,
        })?;
        Self::parse_at(data, eocd, max_entries)
    }

    /// Parses the archive whose end of central directory record is at `eocd`.
    pub fn parse_at(
        data: &[u8],
        eocd: usize,
        max_entries: usize,
    ) -> Result<ZipArchive, ContainerError> {
        let mut issues = Vec::new();
        let r16 = |o: usize| u64::from(le_u16(data, eocd + o).unwrap_or(0));
        let r32 = |o: usize| u64::from(le_u32(data, eocd + o).unwrap_or(0));
        let (disk, cd_disk) = (r16(4), r16(6));
        let (mut n_disk, mut n_total, mut cd_size, mut cd_off) =
            (r16(8), r16(10), r32(12), r32(16));
        let comment_len = r16(20);
        let mut zip64 = false;
        let mut dir_end = eocd as u64;
        if eocd >= LOCATOR_LEN
            && &data[eocd - LOCATOR_LEN..eocd - LOCATOR_LEN + 4] == ZIP64_LOCATOR_SIG
        {
            zip64 = true;
            let loc = eocd - LOCATOR_LEN;
            let loc_disk = le_u32(data, loc + 4).unwrap_or(0);
            let rec_ofs = le_u64(data, loc + 8).unwrap_or(0);
            let disks = le_u32(data, loc + 16).unwrap_or(0);
            if loc_disk != 0 || disks > 1 {
                issues.push(issue(
                    ZipRule::MultiDisk,
                    loc as u64,
                    "the ZIP64 locator names several disks",
                ));
            }
            let expected = loc.checked_sub(ZIP64_EOCD_LEN);
            let is_record = |p: usize| data.get(p..p + 4) == Some(ZIP64_EOCD_SIG);
            let rec = match expected {
                Some(p) if is_record(p) => {
                    if rec_ofs != p as u64 {
                        issues.push(issue(
                            ZipRule::Zip64Mismatch,
                            loc as u64,
                            format!("the ZIP64 locator points at byte {rec_ofs} but the record zipfile reads is at byte {p}"),
                        ));
                    }
                    p
                }
                _ => match usize::try_from(rec_ofs) {
                    Ok(p)
                        if p.checked_add(ZIP64_EOCD_LEN).is_some_and(|e| e <= loc)
                            && is_record(p) =>
                    {
                        issues.push(issue(
                            ZipRule::Zip64Mismatch,
                            loc as u64,
                            "the ZIP64 record is not right before its locator, where zipfile looks for it",
                        ));
                        p
                    }
                    _ => {
                        return Err(ContainerError::Malformed {
                            what: "zip64 end of central directory",
                            offset: loc as u64,
                            reason: "a ZIP64 locator without a ZIP64 record".into(),
                        })
                    }
                },
            };
            let size = le_u64(data, rec + 4).unwrap_or(0);
            if size != 44 {
                issues.push(issue(
                    ZipRule::Zip64Mismatch,
                    rec as u64,
                    format!("the ZIP64 record declares {size} bytes instead of 44"),
                ));
            }
            if le_u32(data, rec + 16) != Some(0) || le_u32(data, rec + 20) != Some(0) {
                issues.push(issue(
                    ZipRule::MultiDisk,
                    rec as u64,
                    "the ZIP64 record names another disk",
                ));
            }
            let z = [
                le_u64(data, rec + 24).unwrap_or(0),
                le_u64(data, rec + 32).unwrap_or(0),
                le_u64(data, rec + 40).unwrap_or(0),
                le_u64(data, rec + 48).unwrap_or(0),
            ];
            let classic = [
                (n_disk, 0xffff),
                (n_total, 0xffff),
                (cd_size, 0xffff_ffff),
                (cd_off, 0xffff_ffff),
            ];
            let names = [
                "entries on this disk",
                "entries",
                "directory size",
                "directory offset",
            ];
            for ((c, sat), (zv, name)) in classic.iter().zip(z.iter().zip(names)) {
                if *c != *sat && c != zv {
                    issues.push(issue(
                        ZipRule::Zip64Mismatch,
                        eocd as u64,
                        format!("the end record gives {name} {c} but the ZIP64 record {zv}"),
                    ));
                }
            }
            [n_disk, n_total, cd_size, cd_off] = z;
            // zipfile assumes the record sits right before the locator.
            dir_end = (eocd - LOCATOR_LEN).saturating_sub(ZIP64_EOCD_LEN) as u64;
        }
        if disk != 0 || cd_disk != 0 {
            issues.push(issue(
                ZipRule::MultiDisk,
                eocd as u64,
                "the end record names another disk",
            ));
        }
        // zipfile's `concat`: bytes before the archive, from where the
        // directory ends versus where its offset says it starts.
        let concat = i128::from(dir_end) - i128::from(cd_size) - i128::from(cd_off);
        let zipfile_view = if concat >= 0 {
            let c = concat as u64;
            read_central(data, cd_off.saturating_add(c), cd_size, c, max_entries)
        } else {
            Err(ContainerError::Malformed {
                what: "end of central directory",
                offset: eocd as u64,
                reason: "the central directory would start before the file".into(),
            })
        };
        let (entries, more, prefix_len, central_offset) = match zipfile_view {
            Ok((e, m)) => (e, m, concat as u64, cd_off + concat as u64),
            Err(e @ ContainerError::LimitExceeded { .. }) => return Err(e),
            Err(e) if concat != 0 => match read_central(data, cd_off, cd_size, 0, max_entries) {
                Ok((entries, m)) => {
                    issues.push(issue(
                        ZipRule::UnreadableDirectory,
                        eocd as u64,
                        format!("zipfile cannot read the central directory ({e}) but a reader taking its offset as absolute (miniz) can"),
                    ));
                    (entries, m, 0, cd_off)
                }
                Err(e2 @ ContainerError::LimitExceeded { .. }) => return Err(e2),
                Err(_) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        issues.extend(more);
        let mut archive = ZipArchive {
            entries,
            eocd_offset: eocd as u64,
            central_offset,
            central_size: cd_size,
            prefix_len,
            zip64,
            issues,
        };
        if n_total != archive.entries.len() as u64 || n_disk != archive.entries.len() as u64 {
            archive.issues.push(issue(
                ZipRule::CountMismatch,
                eocd as u64,
                format!(
                    "the end record counts {n_total} entries ({n_disk} on this disk) but the central directory holds {}",
                    archive.entries.len()
                ),
            ));
        }
        let comment_end = eocd as u64 + EOCD_LEN as u64 + comment_len;
        if comment_end < data.len() as u64 {
            archive.issues.push(issue(
                ZipRule::TrailingData,
                comment_end,
                format!(
                    "{} bytes after the end of central directory record",
                    data.len() as u64 - comment_end
                ),
            ));
        } else if comment_end > data.len() as u64 {
            archive.issues.push(issue(
                ZipRule::Truncated,
                eocd as u64,
                "the archive comment runs past the end of the file",
            ));
        }
        archive.check_local_headers(data);
        archive.check_layout();
        archive.check_names();
        Ok(archive)
    }

    fn check_local_headers(&mut self, data: &[u8]) {
        let mut issues = Vec::new();
        for e in &mut self.entries {
            let name = display_name(&e.name);
            if e.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) != 0 {
                issues.push(issue(
                    ZipRule::Encrypted,
                    e.central_offset,
                    format!("`{name}` is encrypted"),
                ));
            }
            if e.method == METHOD_STORED && e.compressed_size != e.uncompressed_size {
                issues.push(issue(
                    ZipRule::StoredSize,
                    e.central_offset,
                    format!(
                        "stored `{name}` has compressed size {} but uncompressed size {}",
                        e.compressed_size, e.uncompressed_size
                    ),
                ));
            }
            let Ok(lo) = usize::try_from(e.local_offset) else {
                issues.push(issue(
                    ZipRule::Truncated,
                    e.central_offset,
                    format!("`{name}` points past the end"),
                ));
                continue;
            };
            if data.get(lo..lo.saturating_add(4)) != Some(LOCAL_SIG) || lo + LOCAL_LEN > data.len()
            {
                issues.push(issue(
                    ZipRule::HeaderMismatch,
                    e.local_offset,
                    format!("no local header where the central directory puts `{name}`"),
                ));
                continue;
            }
            let r16 = |o: usize| le_u16(data, lo + o).unwrap_or(0);
            let r32 = |o: usize| le_u32(data, lo + o).unwrap_or(0);
            let (l_flags, l_method, l_crc) = (r16(6), r16(8), r32(14));
            let (mut l_cs, mut l_us) = (u64::from(r32(18)), u64::from(r32(22)));
            let (nlen, xlen) = (usize::from(r16(26)), usize::from(r16(28)));
            let name_start = lo + LOCAL_LEN;
            let Some(l_name) = data.get(name_start..name_start + nlen) else {
                issues.push(issue(
                    ZipRule::Truncated,
                    e.local_offset,
                    format!("the local header of `{name}` is cut off"),
                ));
                continue;
            };
            let Some(l_extra) = data.get(name_start + nlen..name_start + nlen + xlen) else {
                issues.push(issue(
                    ZipRule::Truncated,
                    e.local_offset,
                    format!("the local header of `{name}` is cut off"),
                ));
                continue;
            };
            if l_name != e.name.as_slice() {
                issues.push(issue(
                    ZipRule::HeaderMismatch,
                    e.local_offset,
                    format!(
                        "the local header names `{}` but the central directory `{name}`",
                        display_name(l_name)
                    ),
                ));
            }
            if l_method != e.method {
                issues.push(issue(
                    ZipRule::HeaderMismatch,
                    e.local_offset,
                    format!(
                        "`{name}`: local method {l_method}, central method {}",
                        e.method
                    ),
                ));
            }
            let mask = FLAG_ENCRYPTED | FLAG_DESCRIPTOR | FLAG_STRONG_ENCRYPTION | FLAG_UTF8;
            if (l_flags ^ e.flags) & mask != 0 {
                issues.push(issue(
                    ZipRule::HeaderMismatch,
                    e.local_offset,
                    format!(
                        "`{name}`: local flags {l_flags:#06x}, central flags {:#06x}",
                        e.flags
                    ),
                ));
            }
            if !extra_record(l_extra, 0).1 {
                issues.push(issue(
                    ZipRule::ExtraField,
                    e.local_offset,
                    format!("the local extra field of `{name}` is malformed"),
                ));
            }
            let zip64_ok = apply_zip64(l_extra, &mut [&mut l_us, &mut l_cs]);
            let data_offset = (name_start + nlen + xlen) as u64;
            let data_end = data_offset.saturating_add(e.compressed_size);
            if data_end > data.len() as u64 {
                issues.push(issue(
                    ZipRule::Truncated,
                    data_offset,
                    format!("the data of `{name}` runs past the end of the file"),
                ));
            }
            let mut end = data_end;
            if e.flags & FLAG_DESCRIPTOR == 0 {
                if !zip64_ok
                    || l_crc != e.crc32
                    || l_cs != e.compressed_size
                    || l_us != e.uncompressed_size
                {
                    issues.push(issue(
                        ZipRule::HeaderMismatch,
                        e.local_offset,
                        format!(
                            "`{name}`: local CRC/sizes {l_crc:08x}/{l_cs}/{l_us}, central {:08x}/{}/{}",
                            e.crc32, e.compressed_size, e.uncompressed_size
                        ),
                    ));
                }
            } else {
                let disagrees = (l_crc != 0 && l_crc != e.crc32)
                    || (l_cs != 0 && l_cs != e.compressed_size)
                    || (l_us != 0 && l_us != e.uncompressed_size);
                if disagrees {
                    issues.push(issue(
                        ZipRule::HeaderMismatch,
                        e.local_offset,
                        format!(
                            "`{name}`: local CRC/sizes {l_crc:08x}/{l_cs}/{l_us}, central {:08x}/{}/{}",
                            e.crc32, e.compressed_size, e.uncompressed_size
                        ),
                    ));
                }
                match descriptor_len(data, data_end, e) {
                    Some(n) => end = data_end + n,
                    None => issues.push(issue(
                        ZipRule::DataDescriptor,
                        data_end,
                        format!("no data descriptor matching the central directory after `{name}`"),
                    )),
                }
            }
            e.data_offset = Some(data_offset);
            e.end_offset = Some(end);
        }
        self.issues.extend(issues);
    }

    fn check_layout(&mut self) {
        let mut issues = Vec::new();
        let mut prev: Option<u64> = None;
        for e in &self.entries {
            if let Some(p) = prev {
                if e.local_offset <= p {
                    issues.push(issue(
                        ZipRule::OutOfOrder,
                        e.central_offset,
                        format!(
                            "`{}` comes after an entry at byte {p} in the central directory but its local header is at byte {}",
                            display_name(&e.name),
                            e.local_offset
                        ),
                    ));
                }
            }
            prev = Some(e.local_offset);
        }
        let mut spans: Vec<(u64, u64, usize)> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.end_offset.map(|end| (e.local_offset, end, i)))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            let ((_, a_end, a), (b_start, _, b)) = (w[0], w[1]);
            if b_start < a_end {
                issues.push(issue(
                    ZipRule::Overlap,
                    b_start,
                    format!(
                        "`{}` and `{}` share bytes",
                        display_name(&self.entries[a].name),
                        display_name(&self.entries[b].name)
                    ),
                ));
            }
        }
        // Gaps are measured only between entries whose extent is known (a
        // broken local header is an issue of its own).
        let complete = spans.len() == self.entries.len();
        for w in spans.windows(2) {
            let ((_, a_end, a), (b_start, _, _)) = (w[0], w[1]);
            if b_start > a_end {
                issues.push(issue(
                    ZipRule::Gap,
                    a_end,
                    format!(
                        "{} bytes after `{}` that no record accounts for",
                        b_start - a_end,
                        display_name(&self.entries[a].name)
                    ),
                ));
            }
        }
        if let Some(&(_, end, i)) = spans.iter().max_by_key(|s| s.1) {
            if complete && end < self.central_offset {
                issues.push(issue(
                    ZipRule::Gap,
                    end,
                    format!(
                        "{} bytes between `{}` and the central directory that no record accounts for",
                        self.central_offset - end,
                        display_name(&self.entries[i].name)
                    ),
                ));
            }
            if end > self.central_offset {
                issues.push(issue(
                    ZipRule::Overlap,
                    self.central_offset,
                    format!(
                        "`{}` runs into the central directory",
                        display_name(&self.entries[i].name)
                    ),
                ));
            }
        }
        // Without ZIP64 records the end record follows the directory
        // directly (with them, the ZIP64 records sit in between).
        let central_end = self.central_offset.saturating_add(self.central_size);
        if !self.zip64 && self.prefix_len == 0 && central_end < self.eocd_offset {
            issues.push(issue(
                ZipRule::Gap,
                central_end,
                format!(
                    "{} bytes between the central directory and its end record",
                    self.eocd_offset - central_end
                ),
            ));
        }
        let first = self
            .entries
            .iter()
            .map(|e| e.local_offset)
            .min()
            .unwrap_or(self.central_offset);
        if first > 0 {
            let shift = if self.prefix_len > 0 {
                format!(
                    " (zipfile shifts every offset by {}; miniz does not)",
                    self.prefix_len
                )
            } else {
                String::new()
            };
            issues.push(issue(
                ZipRule::LeadingData,
                0,
                format!("{first} bytes before the archive's first record{shift}"),
            ));
        }
        self.issues.extend(issues);
    }

    fn check_names(&mut self) {
        let mut issues = Vec::new();
        let mut seen: HashMap<&[u8], usize> = HashMap::new();
        for e in &self.entries {
            let visible = match e.name.iter().position(|&b| b == 0) {
                Some(p) => {
                    issues.push(issue(
                        ZipRule::BadName,
                        e.central_offset,
                        format!(
                            "`{}` contains NUL; zipfile cuts the name there",
                            display_name(&e.name)
                        ),
                    ));
                    &e.name[..p]
                }
                None => &e.name[..],
            };
            if seen.insert(visible, 0).is_some() {
                issues.push(issue(
                    ZipRule::DuplicateName,
                    e.central_offset,
                    format!(
                        "`{}` appears more than once; miniz (torch.load) and zipfile pick different copies",
                        display_name(visible)
                    ),
                ));
            }
        }
        self.issues.extend(issues);
    }

    /// Names that differ only in ASCII case, which miniz's case-insensitive
    /// lookup (`torch.load`) confuses.
    pub fn case_insensitive_duplicates(&self) -> Vec<ZipIssue> {
        let mut seen: HashMap<Vec<u8>, &[u8]> = HashMap::new();
        let mut out = Vec::new();
        for e in &self.entries {
            let lower = e.name.to_ascii_lowercase();
            if let Some(prev) = seen.get(&lower) {
                if *prev != e.name.as_slice() {
                    out.push(issue(
                        ZipRule::DuplicateName,
                        e.central_offset,
                        format!(
                            "`{}` and `{}` differ only in case; torch.load's lookup ignores case",
                            display_name(prev),
                            display_name(&e.name)
                        ),
                    ));
                }
            } else {
                seen.insert(lower, &e.name);
            }
        }
        out
    }
}

/// An entry's content as read.
#[derive(Debug)]
pub struct EntryContent<'a> {
    pub data: Cow<'a, [u8]>,
    /// Inflating stopped at the bound.
    pub limit_hit: bool,
    /// The deflate stream is corrupt; `data` holds what came out before.
    pub error: Option<String>,
}

/// Reads an entry's content: borrowed when stored, inflated (to at most
/// `max` bytes) when deflated.
pub fn read_entry<'a>(
    data: &'a [u8],
    e: &ZipEntry,
    max: u64,
) -> Result<EntryContent<'a>, ContainerError> {
    let offset = e.data_offset.ok_or_else(|| ContainerError::Malformed {
        what: "zip entry",
        offset: e.local_offset,
        reason: "no readable local header".into(),
    })?;
    let raw = slice_at(data, offset, e.compressed_size).ok_or_else(|| {
        truncated(
            "zip entry data",
            offset,
            offset.saturating_add(e.compressed_size),
            data.len(),
        )
    })?;
    match e.method {
        METHOD_STORED => Ok(EntryContent {
            data: Cow::Borrowed(raw),
            limit_hit: false,
            error: None,
        }),
        METHOD_DEFLATE => {
            let mut out = Vec::new();
            let result = flate2::read::DeflateDecoder::new(raw)
                .take(max.saturating_add(1))
                .read_to_end(&mut out);
            let limit_hit = out.len() as u64 > max;
            if limit_hit {
                out.truncate(usize::try_from(max).unwrap_or(usize::MAX));
            }
            Ok(EntryContent {
                data: Cow::Owned(out),
                limit_hit,
                error: result.err().map(|e| e.to_string()),
            })
        }
        m => Err(ContainerError::Malformed {
            what: "zip entry",
            offset: e.local_offset,
            reason: format!("compression method {m} is not supported"),
        }),
    }
}

/// The first `n` bytes of an entry's content, without reading the rest.
pub fn peek_entry(data: &[u8], e: &ZipEntry, n: usize) -> Option<Vec<u8>> {
    let raw = slice_at(data, e.data_offset?, e.compressed_size)?;
    match e.method {
        METHOD_STORED => Some(raw[..raw.len().min(n)].to_vec()),
        METHOD_DEFLATE => {
            let mut out = Vec::new();
            let _ = flate2::read::DeflateDecoder::new(raw)
                .take(n as u64)
                .read_to_end(&mut out);
            Some(out)
        }
        _ => None,
    }
}

fn report_issues(issues: &[ZipIssue], loc: &Loc, sc: &mut Scanner<'_>, skip_leading: bool) {
    let mut by_rule: BTreeMap<ZipRule, (&ZipIssue, usize)> = BTreeMap::new();
    for i in issues {
        if skip_leading && i.rule == ZipRule::LeadingData {
            continue;
        }
        by_rule.entry(i.rule).or_insert((i, 0)).1 += 1;
    }
    for (rule, (first, count)) in by_rule {
        let more = if count > 1 {
            format!(" (and {} more)", count - 1)
        } else {
            String::new()
        };
        sc.finding(
            loc,
            Verdict::Dangerous,
            FindingCode::AmbiguousZip,
            first.offset,
            format!(
                "ambiguous zip ({}): {}{more}; torch.load (miniz) and zipfile-based loaders may read different contents",
                rule.as_str(),
                first.detail
            ),
        );
    }
}

/// The path inside a PyTorch archive: the name without its root folder.
fn record_name(name: &str) -> &str {
    name.split_once('/').map_or(name, |(_, rest)| rest)
}

/// Archives stored back to back, as `torch.distributed.checkpoint` writes
/// `.distcp` files (one `torch.save` zip per item, read back by offset):
/// the `(start, end)` of each, first to last, when the data is exactly a
/// sequence of two or more. Each archive's central directory gives where it
/// starts (`zipfile`'s `concat`), and the bytes before it must again end with
/// a whole archive.
pub fn concatenated_archives(
    data: &[u8],
    max_entries: usize,
    max_parts: usize,
) -> Option<Vec<(usize, usize)>> {
    let mut parts = Vec::new();
    let mut end = data.len();
    loop {
        let a = ZipArchive::parse(&data[..end], max_entries).ok()?;
        let start = usize::try_from(a.prefix_len).ok().filter(|&s| s < end)?;
        parts.push((start, end));
        if start == 0 {
            break;
        }
        if parts.len() >= max_parts || !data[..start].starts_with(LOCAL_SIG) {
            return None;
        }
        end = start;
    }
    (parts.len() >= 2).then(|| {
        parts.reverse();
        parts
    })
}

/// Scans data that starts with a zip local header (or an empty archive).
pub(crate) fn scan_zip(data: &[u8], loc: &Loc, sc: &mut Scanner<'_>) -> String {
    if let Some(parts) =
        concatenated_archives(data, sc.limits.max_archive_entries, sc.limits.max_streams)
    {
        let mut first = None;
        for (start, end) in parts {
            let member = loc.member(&format!("@{start}"), start as u64);
            let f = scan_zip(&data[start..end], &member, sc);
            first.get_or_insert(f);
        }
        return format!("{}-sequence", first.unwrap_or_default());
    }
    // torch reads the archive miniz finds, numpy's npz the one zipfile finds.
    if let Some(m) = find_eocd_miniz(data).filter(|&m| Some(m) != find_eocd(data)) {
        sc.finding(
            loc,
            Verdict::Dangerous,
            FindingCode::AmbiguousZip,
            m as u64,
            "torch.load (miniz) and zipfile find different end of central directory records: each reads another archive",
        );
        if let Ok(a) = ZipArchive::parse_at(data, m, sc.limits.max_archive_entries) {
            report_issues(&a.issues, loc, sc, false);
            scan_archive(data, &a, loc, sc);
        }
    }
    let archive = match ZipArchive::parse(data, sc.limits.max_archive_entries) {
        Ok(a) => a,
        Err(e @ ContainerError::LimitExceeded { .. }) => {
            sc.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::LimitExceeded,
                e.offset(),
                format!("zip archive: {e}"),
            );
            return "zip".into();
        }
        Err(e) => {
            if find_eocd(data).is_none() {
                if is_safetensors(data) {
                    return "safetensors".into();
                }
                if let Some(format) = scan_pickle_file(data, loc, sc) {
                    return format;
                }
                sc.finding(
                    loc,
                    Verdict::Suspicious,
                    FindingCode::MalformedContainer,
                    e.offset(),
                    format!("starts like a zip archive but no loader can open it: {e}"),
                );
            } else {
                sc.finding(
                    loc,
                    Verdict::Dangerous,
                    FindingCode::AmbiguousZip,
                    e.offset(),
                    format!("ambiguous zip (central directory): it cannot be read ({e}); zip readers may recover different entries"),
                );
            }
            return "zip".into();
        }
    };
    // A zip local header at offset 0 can also parse as a pickle (`P`, PERSID,
    // reads the header up to a newline), and a `.npz` holding an object
    // array commonly does. It is not a polyglot: pickle.load, joblib and
    // numpy refuse PERSID without a persistent_load, and torch.load reads
    // the zip.
    report_issues(&archive.issues, loc, sc, false);
    scan_archive(data, &archive, loc, sc)
}

/// Scans a zip archive found by its end record in data that does not start
/// with one (`zipfile` opens it; `torch.load` does not). `None` when there is
/// no readable archive with entries. `after_pickle`: the data also starts
/// with a pickle, so `pickle.load` and `zipfile` read two different things.
pub(crate) fn scan_embedded_zip(
    data: &[u8],
    loc: &Loc,
    sc: &mut Scanner<'_>,
    after_pickle: bool,
) -> Option<String> {
    let eocd = find_eocd(data)?;
    let polyglot = |sc: &mut Scanner<'_>| {
        if after_pickle {
            sc.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::PolyglotPickleZip,
                eocd as u64,
                "the file starts with a pickle stream (pickle.load runs it; torch.load reads it as a legacy checkpoint) but ends with a zip central directory (zipfile, np.load and joblib users read it as an archive)",
            );
        }
    };
    match ZipArchive::parse(data, sc.limits.max_archive_entries) {
        Ok(a) if !a.entries.is_empty() || after_pickle => {
            polyglot(sc);
            report_issues(&a.issues, loc, sc, after_pickle);
            Some(scan_archive(data, &a, loc, sc))
        }
        Err(e @ ContainerError::LimitExceeded { .. }) => {
            polyglot(sc);
            sc.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::LimitExceeded,
                e.offset(),
                format!("zip archive: {e}"),
            );
            Some("zip".into())
        }
        _ => None,
    }
}

/// Classifies a readable archive and scans the entries its loaders unpickle.
fn scan_archive(data: &[u8], archive: &ZipArchive, loc: &Loc, sc: &mut Scanner<'_>) -> String {
    let names: Vec<String> = archive.entries.iter().map(ZipEntry::name_lossy).collect();
    // miniz, which torch.load and torch.jit.load read records through,
    // looks names up ignoring ASCII case.
    let lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    let is_code = |n: &str| {
        let r = record_name(n);
        r == "constants.pkl" || r.starts_with("code/")
    };
    let torchscript = lower.iter().any(|n| is_code(n));
    let torch = torchscript || lower.iter().any(|n| record_name(n) == "data.pkl");
    let npz = !torch
        && names
            .iter()
            .any(|n| n.to_ascii_lowercase().ends_with(".npy"));
    let mut issues = Vec::new();
    if torch {
        issues.extend(archive.case_insensitive_duplicates());
    }
    if torchscript {
        let at = archive
            .entries
            .iter()
            .zip(&lower)
            .find(|(_, n)| is_code(n))
            .map_or(0, |(e, _)| e.local_offset);
        sc.finding(
            loc,
            Verdict::Suspicious,
            FindingCode::TorchscriptCode,
            at,
            "the archive carries TorchScript code (code/, constants.pkl) that torch.jit.load compiles and runs; torch.load hands such archives to torch.jit.load",
        );
    }
    // Spans already scanned. Overlapping entries are an issue already; scanning
    // each of them would let one archive multiply the work.
    let mut scanned: BTreeMap<u64, u64> = BTreeMap::new();
    for (e, name) in archive.entries.iter().zip(&names) {
        // numpy.load reads the same archive as an npz whatever torch makes of
        // it, so `.npy` members are read even in a torch-looking archive.
        let lower_name = name.to_ascii_lowercase();
        let selected = if torch {
            lower_name.ends_with(".pkl") || lower_name.ends_with(".npy")
        } else {
            is_pickle_name(name)
                || name.to_ascii_lowercase().ends_with(".npy")
                || (e.method != METHOD_STORED && e.method != METHOD_DEFLATE)
                || peek_entry(data, e, 8).is_some_and(|head| is_interesting_content(&head))
        };
        if !selected {
            continue;
        }
        if e.method != METHOD_STORED && e.method != METHOD_DEFLATE {
            issues.push(issue(
                ZipRule::UnsupportedMethod,
                e.local_offset,
                format!(
                    "`{}` uses compression method {}, which hermetic cannot read",
                    display_name(&e.name),
                    e.method
                ),
            ));
            continue;
        }
        if let Some(start) = e.data_offset {
            let end = start.saturating_add(e.compressed_size.max(1));
            let before = scanned
                .range(..=start)
                .next_back()
                .is_some_and(|(_, &b_end)| b_end > start);
            let after = scanned
                .range(start..)
                .next()
                .is_some_and(|(&a_start, _)| a_start < end);
            if before || after {
                continue;
            }
            scanned.insert(start, end);
        }
        let content = match read_entry(data, e, sc.decompress_budget) {
            Ok(c) => c,
            // The structural problem is already an issue.
            Err(_) => continue,
        };
        let deflated = e.method == METHOD_DEFLATE;
        if deflated {
            sc.decompress_budget = sc
                .decompress_budget
                .saturating_sub(content.data.len() as u64);
        }
        if content.limit_hit {
            sc.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::DecompressionLimit,
                e.local_offset,
                format!("`{name}` inflates past the decompression limit; only its first {} bytes were scanned", content.data.len()),
            );
        } else if content.error.is_none() {
            if content.data.len() as u64 != e.uncompressed_size {
                issues.push(issue(
                    ZipRule::SizeMismatch,
                    e.local_offset,
                    format!(
                        "`{name}` inflates to {} bytes, not {}",
                        content.data.len(),
                        e.uncompressed_size
                    ),
                ));
            } else if crc32fast::hash(&content.data) != e.crc32 {
                issues.push(issue(
                    ZipRule::BadCrc,
                    e.local_offset,
                    format!(
                        "the content of `{name}` does not match its CRC-32 {:08x}",
                        e.crc32
                    ),
                ));
            }
        }
        if let Some(err) = &content.error {
            issues.push(issue(
                ZipRule::Truncated,
                e.local_offset,
                format!(
                    "the deflate data of `{name}` is corrupt after {} bytes: {err}",
                    content.data.len()
                ),
            ));
        }
        let child = if deflated {
            loc.decompressed_member("deflate", name)
        } else {
            loc.member(name, e.data_offset.unwrap_or(0))
        };
        if torch && lower_name.ends_with(".pkl") {
            sc.stream_sequence(&content.data, 0, &child, &child.stream_name());
        } else {
            scan_member(&content.data, name, &child, sc);
        }
    }
    report_issues(&issues, loc, sc, false);
    if torchscript {
        "torchscript"
    } else if torch {
        "torch-zip"
    } else if npz {
        "npz"
    } else {
        "zip"
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{zip_with, Opts, E};
    use super::*;
    use crate::{scan_bytes, FileReport, Limits, Policy};

    const SAFE: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.";
    const EVIL: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.";

    fn scan(d: &[u8]) -> FileReport {
        scan_bytes(d, "t", &Policy::default(), &Limits::default())
    }

    fn torch_like(pkl: &[u8]) -> Vec<E> {
        vec![
            E::torch("archive/data.pkl", pkl),
            E::torch("archive/data/0", &[0x80, 0x02, 1, 2, 3, 4, 5, 6]),
            E::torch("archive/version", b"3\n"),
        ]
    }

    fn zip(entries: &[E]) -> Vec<u8> {
        zip_with(entries, &Opts::default())
    }

    fn rules(r: &FileReport) -> Vec<String> {
        r.findings
            .iter()
            .filter(|f| f.code == FindingCode::AmbiguousZip)
            .map(|f| f.reason.clone())
            .collect()
    }

    fn assert_rule(r: &FileReport, rule: ZipRule) {
        let reasons = rules(r);
        assert!(
            reasons
                .iter()
                .any(|x| x.contains(&format!("({})", rule.as_str()))),
            "expected {rule:?} in {reasons:#?}"
        );
        assert_eq!(r.verdict, Verdict::Dangerous);
    }

    #[test]
    fn torch_like_archive_is_clean() {
        let d = zip(&torch_like(SAFE));
        let a = ZipArchive::parse(&d, 100).unwrap();
        assert!(a.issues.is_empty(), "{:?}", a.issues);
        let r = scan(&d);
        assert_eq!(r.format, "torch-zip");
        assert_eq!(r.verdict, Verdict::Safe, "{:?}", r.findings);
        assert_eq!(r.streams.len(), 1);
        assert_eq!(r.streams[0].name, "archive/data.pkl");
        // Absolute offset of the record's data.
        let off = r.streams[0].offset as usize;
        assert_eq!(&d[off..off + SAFE.len()], SAFE);
    }

    #[test]
    fn any_root_name_and_every_pkl() {
        let mut e = torch_like(SAFE);
        for x in &mut e {
            x.name = String::from_utf8_lossy(&x.name)
                .replace("archive/", "mymodel/")
                .into_bytes();
        }
        e.push(E::torch("mymodel/extra.pkl", EVIL));
        let r = scan(&zip(&e));
        assert_eq!(r.format, "torch-zip");
        assert_eq!(r.streams.len(), 2);
        assert_eq!(r.verdict, Verdict::Dangerous);
        assert!(r.streams.iter().any(|s| s.name == "mymodel/extra.pkl"));
    }

    #[test]
    fn zip64_end_records_like_torch() {
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                zip64: true,
                ..Opts::default()
            },
        );
        let a = ZipArchive::parse(&d, 100).unwrap();
        assert!(a.zip64);
        assert!(a.issues.is_empty(), "{:?}", a.issues);
        assert_eq!(scan(&d).verdict, Verdict::Safe);
    }

    #[test]
    fn record_lookup_ignores_case_like_miniz() {
        let e = vec![
            E::torch("Archive/DATA.PKL", EVIL),
            E::torch("Archive/version", b"3\n"),
        ];
        let r = scan(&zip(&e));
        assert_eq!(r.format, "torch-zip");
        assert_eq!(r.verdict, Verdict::Dangerous);
    }

    #[test]
    fn torchscript_is_suspicious() {
        let mut e = torch_like(SAFE);
        e.push(E::torch(
            "archive/code/__torch__.py",
            b"def forward(self): pass\n",
        ));
        e.push(E::torch("archive/constants.pkl", b"\x80\x02)."));
        let r = scan(&zip(&e));
        assert_eq!(r.format, "torchscript");
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == FindingCode::TorchscriptCode && f.severity == Verdict::Suspicious));
        assert_eq!(r.verdict, Verdict::Suspicious);
        assert_eq!(r.streams.len(), 2);
    }

    #[test]
    fn duplicate_names() {
        let mut e = torch_like(SAFE);
        e.push(E::torch("archive/data.pkl", EVIL));
        let r = scan(&zip(&e));
        assert_rule(&r, ZipRule::DuplicateName);
        // Both copies are scanned.
        assert_eq!(r.streams.len(), 2);
        let mut e = torch_like(SAFE);
        e.push(E::torch("archive/DATA.pkl", EVIL));
        assert_rule(&scan(&zip(&e)), ZipRule::DuplicateName);
        let mut e = torch_like(SAFE);
        e.push(E::stored("archive/data.pkl\0x", SAFE));
        assert_rule(&scan(&zip(&e)), ZipRule::BadName);
    }

    #[test]
    fn overlapping_entries() {
        // Two central entries pointing at the same local header.
        let e = torch_like(SAFE);
        let d = zip_with(
            &e,
            &Opts {
                central_offsets: Some(vec![0, 0, 0]),
                ..Opts::default()
            },
        );
        let r = scan(&d);
        assert!(rules(&r)
            .iter()
            .any(|x| x.contains("overlapping") || x.contains("out of order")));
        assert_eq!(r.verdict, Verdict::Dangerous);
    }

    #[test]
    fn out_of_order() {
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                central_order: Some(vec![1, 0, 2]),
                ..Opts::default()
            },
        );
        assert_rule(&scan(&d), ZipRule::OutOfOrder);
    }

    #[test]
    fn header_mismatches() {
        let mut e = torch_like(SAFE);
        e[0].local_name = Some(b"archive/other.pkl".to_vec());
        assert_rule(&scan(&zip(&e)), ZipRule::HeaderMismatch);
        let mut e = vec![E::stored("a.pkl", SAFE)];
        e[0].local_crc = Some(0x1234_5678);
        assert_rule(&scan(&zip(&e)), ZipRule::HeaderMismatch);
        let mut e = vec![E::stored("a.pkl", SAFE)];
        e[0].local_method = Some(8);
        assert_rule(&scan(&zip(&e)), ZipRule::HeaderMismatch);
    }

    #[test]
    fn bad_crc_on_scanned_record() {
        let mut e = torch_like(SAFE);
        e[0].crc = Some(0xdead_beef);
        let r = scan(&zip(&e));
        assert_rule(&r, ZipRule::BadCrc);
        // A bad CRC on a tensor record is not read, so not reported.
        let mut e = torch_like(SAFE);
        e[1].crc = Some(0xdead_beef);
        let r = scan(&zip(&e));
        assert_eq!(r.verdict, Verdict::Safe, "{:?}", r.findings);
    }

    #[test]
    fn trailing_and_leading_data() {
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                suffix: b"junk".to_vec(),
                ..Opts::default()
            },
        );
        assert_rule(&scan(&d), ZipRule::TrailingData);
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                prefix: b"JUNKJUNK".to_vec(),
                ..Opts::default()
            },
        );
        let r = scan(&d);
        assert_eq!(r.format, "torch-zip");
        assert_rule(&r, ZipRule::LeadingData);
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                prefix: b"JUNKJUNK".to_vec(),
                absolute: true,
                ..Opts::default()
            },
        );
        assert_rule(&scan(&d), ZipRule::LeadingData);
    }

    #[test]
    fn bytes_between_records() {
        // A local header hidden between two records: a streaming unzipper
        // walking local headers reads `hidden.pkl`, torch.load never does.
        let hidden = zip(&[E::stored("hidden.pkl", b"cos\nsystem\n.")]);
        let cd = hidden.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                after: vec![hidden[..cd].to_vec()],
                ..Opts::default()
            },
        );
        let r = scan(&d);
        assert_eq!(r.format, "torch-zip");
        assert_rule(&r, ZipRule::Gap);
        // The same bytes after the last record, before the central directory.
        let n = torch_like(SAFE).len();
        let mut after = vec![Vec::new(); n];
        after[n - 1] = b"padding".to_vec();
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                after,
                ..Opts::default()
            },
        );
        assert_rule(&scan(&d), ZipRule::Gap);
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                before_end: b"hidden".to_vec(),
                ..Opts::default()
            },
        );
        assert_rule(&scan(&d), ZipRule::Gap);
        // Records that follow each other, data descriptors included, have none.
        let r = scan(&zip(&torch_like(SAFE)));
        assert!(
            !rules(&r).iter().any(|x| x.contains("between")),
            "{:?}",
            rules(&r)
        );
    }

    #[test]
    fn polyglot_pickle_then_zip() {
        let d = zip_with(
            &[E::stored("a.pkl", SAFE)],
            &Opts {
                prefix: EVIL.to_vec(),
                ..Opts::default()
            },
        );
        let r = scan(&d);
        assert_eq!(r.format, "pickle");
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == FindingCode::PolyglotPickleZip && f.severity == Verdict::Dangerous));
        assert!(r.streams.iter().any(|s| s.name == "a.pkl"));
        assert!(r.streams.iter().any(|s| s.name == "pickle"));
    }

    #[test]
    fn zip_that_parses_as_a_pickle_is_not_a_polyglot() {
        // `P` (PERSID) reads the rest of the local header up to a newline as
        // a persistent id; the entry's data is the rest of a pickle. No
        // stock unpickler accepts PERSID without a persistent_load.
        let name = "x\n";
        let tail = b"\x85.";
        let d = zip(&[E::stored(name, tail)]);
        assert_eq!(
            d.iter().position(|&b| b == b'\n'),
            Some(31),
            "the line must end in the name"
        );
        let r = scan(&d);
        assert!(
            r.findings
                .iter()
                .all(|f| f.code != FindingCode::PolyglotPickleZip),
            "{:?}",
            r.findings
        );
        assert_eq!(r.format, "zip");
    }

    #[test]
    fn encryption_and_descriptor() {
        let mut e = vec![E::stored("a.pkl", SAFE)];
        e[0].flags = FLAG_ENCRYPTED;
        assert_rule(&scan(&zip(&e)), ZipRule::Encrypted);
        // Bit 3 with a matching descriptor (as torch writes) is fine.
        let e = vec![E::torch("a/data.pkl", SAFE)];
        let a = ZipArchive::parse(&zip(&e), 10).unwrap();
        assert!(a.issues.is_empty(), "{:?}", a.issues);
        // Bit 3 without a descriptor is not.
        let mut e = vec![E::torch("a/data.pkl", SAFE)];
        e[0].descriptor = false;
        assert_rule(&scan(&zip(&e)), ZipRule::DataDescriptor);
    }

    #[test]
    fn count_mismatch() {
        let d = zip_with(
            &torch_like(SAFE),
            &Opts {
                count: Some(2),
                ..Opts::default()
            },
        );
        assert_rule(&scan(&d), ZipRule::CountMismatch);
    }

    #[test]
    fn unsupported_method_on_scanned_entry() {
        let mut e = vec![E::stored("a.pkl", SAFE)];
        e[0].method = 12;
        e[0].local_method = Some(12);
        assert_rule(&scan(&zip(&e)), ZipRule::UnsupportedMethod);
    }

    #[test]
    fn deflated_entries_and_npz() {
        let e = vec![E::deflated("a.pkl", EVIL)];
        let r = scan(&zip(&e));
        assert_eq!(r.format, "zip");
        assert_eq!(r.streams[0].name, "deflate:a.pkl");
        assert_eq!(r.verdict, Verdict::Dangerous);
        let npy = b"\x93NUMPY\x01\x00\x46\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }            \n\0\0\0\0\0\0\0\0";
        let r = scan(&zip(&[E::stored("a.npy", npy), E::deflated("b.npy", npy)]));
        assert_eq!(r.format, "npz");
        assert_eq!(r.verdict, Verdict::Safe, "{:?}", r.findings);
    }

    #[test]
    fn generic_zip_content_rules() {
        let inner = zip(&[E::stored("evil.bin", EVIL)]);
        let r = scan(&zip(&[
            E::stored("readme.txt", b"hello"),
            E::stored("nested.zip", &inner),
        ]));
        assert_eq!(r.format, "zip");
        assert_eq!(r.verdict, Verdict::Dangerous);
        assert!(
            r.streams.iter().any(|s| s.name == "nested.zip:evil.bin"),
            "{:?}",
            r.streams
        );
        let r = scan(&zip(&[E::stored("readme.txt", b"hello")]));
        assert_eq!(r.verdict, Verdict::Safe);
        assert!(r.streams.is_empty());
    }

    #[test]
    fn overlapping_entries_are_scanned_once() {
        let inner = zip(&[E::stored("x.pkl", SAFE)]);
        let e: Vec<E> = (0..50)
            .map(|i| E::stored(&format!("n{i}.zip"), &inner))
            .collect();
        let offsets = vec![0u64; 50];
        let d = zip_with(
            &e,
            &Opts {
                central_offsets: Some(offsets),
                ..Opts::default()
            },
        );
        let r = scan(&d);
        assert_eq!(r.verdict, Verdict::Dangerous);
        assert_eq!(r.streams.len(), 1);
    }

    #[test]
    fn nesting_is_bounded() {
        let mut d = zip(&[E::stored("x.pkl", EVIL)]);
        for _ in 0..20 {
            d = zip(&[E::stored("n.zip", &d)]);
        }
        let r = scan(&d);
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == FindingCode::LimitExceeded));
    }

    #[test]
    fn entry_limit() {
        let e: Vec<E> = (0..10).map(|i| E::stored(&format!("f{i}"), b"x")).collect();
        let d = zip(&e);
        let limits = Limits {
            max_archive_entries: 5,
            ..Limits::default()
        };
        let r = scan_bytes(&d, "t", &Policy::default(), &limits);
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == FindingCode::LimitExceeded));
    }

    #[test]
    fn broken_zips() {
        let r = scan(b"PK\x03\x04 not really");
        assert_eq!(r.format, "zip");
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == FindingCode::MalformedContainer));
        let d = zip(&torch_like(SAFE));
        // Corrupt the central directory signature.
        let a = ZipArchive::parse(&d, 10).unwrap();
        let mut bad = d.clone();
        bad[a.central_offset as usize] = b'X';
        let r = scan(&bad);
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == FindingCode::AmbiguousZip));
        assert_eq!(r.verdict, Verdict::Dangerous);
        assert!(scan(b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").verdict == Verdict::Safe);
    }
}
