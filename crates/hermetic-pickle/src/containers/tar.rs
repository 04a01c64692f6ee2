//! Tar archives, read the way Python's `tarfile` reads them, and PyTorch's
//! oldest checkpoint format: a tar with the members `sys_info`, `pickle`,
//! `storages` and `tensors`.
//!
//! `torch.load` tries `tarfile.open` first on a real file at offset 0, so
//! any data whose first 512-byte block has a valid tar checksum takes that
//! path. `legacy_load` then unpickles, in order:
//!
//! * `storages`: a count pickle; per storage a `(key, location,
//!   storage_type)` pickle, an i64 little-endian element count and that many
//!   elements of the storage type's size; then a pickle of storage views;
//! * `tensors`: a count pickle; per tensor a `(key, storage_id,
//!   tensor_type)` pickle, an i32 `ndim`, 4 skipped bytes, `ndim` i64 sizes,
//!   `ndim` i64 strides and an i64 storage offset;
//! * `pickle`: the checkpoint object.
//!
//! `tarfile` resolves a name to its last member, stops at the first header
//! that does not check out, and extracts links as links; so a duplicated
//! name is reported, every copy is scanned, and a link or other non-regular
//! member under one of these names is an `unreadable_record`.

use super::torch_legacy::pickled_int;
use super::{
    display_name, is_interesting_content, is_pickle_name, scan_member, ContainerError, Loc, Scanner,
};
use crate::codes::FindingCode;
use crate::policy::Verdict;
use std::collections::HashMap;

mod scan;

pub(crate) use scan::scan_tar;

const BLOCK: usize = 512;

/// The members `torch.serialization.legacy_load` reads.
pub const TORCH_MEMBERS: [&str; 4] = ["sys_info", "pickle", "storages", "tensors"];

/// A member of a tar archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarMember {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub header_offset: usize,
    pub data_offset: usize,
    pub size: u64,
}

impl TarMember {
    /// A regular file (`0`, NUL, or the contiguous-file type `7`).
    pub fn is_regular(&self) -> bool {
        matches!(self.typeflag, b'0' | 0 | b'7')
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A tar archive's members, up to where `tarfile` would stop.
#[derive(Clone, Debug, Default)]
pub struct TarArchive {
    pub members: Vec<TarMember>,
    /// Where and why reading stopped before a proper end of archive, when it did.
    pub stopped: Option<(usize, String)>,
}

/// `tarfile.nts`: the bytes up to the first NUL.
fn nts(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(p) => &b[..p],
        None => b,
    }
}

/// `tarfile.nti`: an octal number field (Python `int(s.strip() or "0", 8)`)
/// or a base-256 one.
fn nti(field: &[u8]) -> Option<i128> {
    match field.first() {
        Some(&0x80) | Some(&0xff) => {
            if field.len() > 16 {
                return None;
            }
            let mut n: i128 = 0;
            for &b in &field[1..] {
                n = (n << 8) | i128::from(b);
            }
            if field[0] == 0xff {
                n -= 1i128 << (8 * (field.len() - 1));
            }
            Some(n)
        }
        _ => {
            let text = std::str::from_utf8(nts(field)).ok()?;
            // `str.strip()` and `int()` strip every character `str.isspace()`
            // calls whitespace; in ASCII that includes \x0b and \x1c-\x1f,
            // which Rust's `is_ascii_whitespace` does not.
            let text = text.trim_matches(crate::text::py_ascii_space);
            if text.is_empty() {
                return Some(0);
            }
            let (neg, rest) = match text.as_bytes()[0] {
                b'-' => (true, &text[1..]),
                b'+' => (false, &text[1..]),
                _ => (false, text),
            };
            let rest = rest
                .strip_prefix("0o")
                .or_else(|| rest.strip_prefix("0O"))
                .unwrap_or(rest);
            if rest.is_empty()
                || rest.starts_with('_')
                || rest.ends_with('_')
                || rest.contains("__")
            {
                return None;
            }
            let digits: String = rest.chars().filter(|&c| c != '_').collect();
            let n = i128::from_str_radix(&digits, 8).ok()?;
            Some(if neg { -n } else { n })
        }
    }
}

/// Whether `block` is a tar header `tarfile` accepts: not all zeros, a
/// checksum matching the unsigned or signed byte sum, numeric fields that parse.
pub fn header_valid(block: &[u8]) -> bool {
    if block.len() < BLOCK || block[..BLOCK].iter().all(|&b| b == 0) {
        return false;
    }
    let Some(chksum) = nti(&block[148..156]) else {
        return false;
    };
    let mut unsigned: i128 = 256;
    let mut signed: i128 = 256;
    for (i, &b) in block[..BLOCK].iter().enumerate() {
        if (148..156).contains(&i) {
            continue;
        }
        unsigned += i128::from(b);
        signed += i128::from(b as i8);
    }
    if chksum != unsigned && chksum != signed {
        return false;
    }
    [
        (100, 108),
        (108, 116),
        (116, 124),
        (124, 136),
        (136, 148),
        (329, 337),
        (337, 345),
    ]
    .iter()
    .all(|&(a, b)| nti(&block[a..b]).is_some())
}

/// Whether the data starts with a tar header.
pub fn is_tar(data: &[u8]) -> bool {
    data.len() >= BLOCK && header_valid(&data[..BLOCK])
}

fn blocks(size: u64) -> Option<usize> {
    let size = usize::try_from(size).ok()?;
    size.checked_add(BLOCK - 1).map(|n| n / BLOCK * BLOCK)
}

/// Parses PAX records; `None` when they are malformed.
fn pax_records(buf: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() && buf[pos] != 0 {
        let space = buf[pos..].iter().position(|&b| b == b' ')? + pos;
        let len: usize = std::str::from_utf8(&buf[pos..space]).ok()?.parse().ok()?;
        let end = pos.checked_add(len)?;
        let rec = buf.get(space + 1..end)?;
        let rec = rec.strip_suffix(b"\n")?;
        let eq = rec.iter().position(|&b| b == b'=')?;
        out.push((&rec[..eq], &rec[eq + 1..]));
        if len == 0 {
            return None;
        }
        pos = end;
    }
    Some(out)
}

/// Reads the members of a tar archive. An error means the first header is
/// not a tar header or there are too many members.
pub fn parse_tar(data: &[u8], max_members: usize) -> Result<TarArchive, ContainerError> {
    if !is_tar(data) {
        return Err(ContainerError::BadSignature {
            what: "tar header",
            offset: 0,
        });
    }
    let mut archive = TarArchive::default();
    let mut pos = 0usize;
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut global_path: Option<Vec<u8>> = None;
    let mut global_size: Option<u64> = None;
    loop {
        let Some(block) = pos.checked_add(BLOCK).and_then(|end| data.get(pos..end)) else {
            if pos < data.len() {
                archive.stopped = Some((pos, "a header is cut off".into()));
            }
            break;
        };
        if block.iter().all(|&b| b == 0) {
            break;
        }
        if !header_valid(block) {
            archive.stopped = Some((
                pos,
                "a header's checksum or numbers are invalid; tarfile stops here".into(),
            ));
            break;
        }
        if archive.members.len() >= max_members {
            return Err(ContainerError::LimitExceeded {
                what: "tar members",
                offset: pos as u64,
                limit: max_members as u64,
            });
        }
        let size = nti(&block[124..136]).unwrap_or(0);
        let Ok(size) = u64::try_from(size) else {
            archive.stopped = Some((pos, "a member has a negative size".into()));
            break;
        };
        let typeflag = block[156];
        let data_offset = pos + BLOCK;
        let Some(padded) = blocks(size) else {
            archive.stopped = Some((pos, "a member's size does not fit".into()));
            break;
        };
        match typeflag {
            b'L' | b'K' => {
                let Some(buf) = data.get(data_offset..data_offset.saturating_add(padded)) else {
                    archive.stopped = Some((pos, "a GNU long name is cut off".into()));
                    break;
                };
                if typeflag == b'L' {
                    let n = usize::try_from(size).unwrap_or(usize::MAX).min(buf.len());
                    long_name = Some(nts(&buf[..n]).to_vec());
                }
                pos = data_offset + padded;
                continue;
            }
            b'x' | b'g' | b'X' => {
                let n = usize::try_from(size).unwrap_or(usize::MAX);
                let Some(buf) = data.get(data_offset..data_offset.saturating_add(n)) else {
                    archive.stopped = Some((pos, "a PAX header is cut off".into()));
                    break;
                };
                let Some(records) = pax_records(buf) else {
                    archive.stopped = Some((pos, "a PAX header is malformed".into()));
                    break;
                };
                for (k, v) in records {
                    let (path, sz) = if typeflag == b'g' {
                        (&mut global_path, &mut global_size)
                    } else {
                        (&mut pax_path, &mut pax_size)
                    };
                    match k {
                        b"path" => *path = Some(v.to_vec()),
                        b"size" => match std::str::from_utf8(v)
                            .ok()
                            .and_then(|t| t.parse::<u64>().ok())
                        {
                            Some(s) => *sz = Some(s),
                            None => {
                                archive.stopped = Some((pos, "a PAX size is not a number".into()));
                                return Ok(archive);
                            }
                        },
                        k if k.starts_with(b"GNU.sparse") => {
                            archive.stopped =
                                Some((pos, "GNU sparse members are not supported".into()));
                            return Ok(archive);
                        }
                        _ => {}
                    }
                }
                pos = data_offset.saturating_add(padded);
                continue;
            }
            b'S' => {
                archive.stopped = Some((pos, "GNU sparse members are not supported".into()));
                break;
            }
            _ => {}
        }
        let mut name = nts(&block[0..100]).to_vec();
        let prefix = nts(&block[345..500]);
        let mut typeflag = typeflag;
        if typeflag == 0 && name.ends_with(b"/") {
            typeflag = b'5';
        }
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
        if let Some(n) = long_name.take() {
            name = n;
        }
        if let Some(p) = pax_path.take().or_else(|| global_path.clone()) {
            name = p;
        }
        let size = pax_size.take().or(global_size).unwrap_or(size);
        if typeflag == b'5' {
            while name.ends_with(b"/") {
                name.pop();
            }
        }
        let regular = matches!(typeflag, b'0' | 0 | b'7');
        let supported = regular || matches!(typeflag, b'1'..=b'6');
        archive.members.push(TarMember {
            name,
            typeflag,
            header_offset: pos,
            data_offset,
            size,
        });
        if regular || !supported {
            let Some(padded) = blocks(size) else {
                archive.stopped = Some((pos, "a member's size does not fit".into()));
                break;
            };
            pos = data_offset.saturating_add(padded);
        } else {
            pos = data_offset;
        }
    }
    Ok(archive)
}

/// Storage element sizes by the storage type name torch's legacy unpickler
/// maps (`torch.serialization.StorageType`).
pub fn storage_element_size(name: &str) -> Option<u64> {
    Some(match name {
        "BoolStorage" | "ByteStorage" | "CharStorage" | "QInt8Storage" | "QUInt8Storage"
        | "QUInt4x2Storage" | "QUInt2x4Storage" => 1,
        "BFloat16Storage" | "HalfStorage" | "ShortStorage" => 2,
        "FloatStorage" | "IntStorage" | "QInt32Storage" => 4,
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "ComplexDoubleStorage" => 16,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests;
