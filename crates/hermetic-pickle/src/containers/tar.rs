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

/// Scans a tar archive: the members `torch.load` unpickles for a torch tar,
/// pickle-looking members for any other tar.
pub(crate) fn scan_tar(data: &[u8], loc: &Loc, sc: &mut Scanner<'_>) -> String {
    // pickle.load's reading of the same bytes (and torch.load's, when
    // tarfile gives up on the archive) is scanned by the caller.
    let archive = match parse_tar(data, sc.limits.max_archive_entries) {
        Ok(a) => a,
        Err(e) => {
            let code = e.code();
            let severity = if code == FindingCode::LimitExceeded {
                Verdict::Dangerous
            } else {
                Verdict::Suspicious
            };
            sc.finding(loc, severity, code, e.offset(), format!("tar archive: {e}"));
            return "tar".into();
        }
    };
    let torch = archive
        .members
        .iter()
        .any(|m| TORCH_MEMBERS.iter().any(|t| m.name == t.as_bytes()));
    if torch {
        scan_torch_tar(data, &archive, loc, sc);
        "torch-tar".into()
    } else {
        if let Some((at, why)) = &archive.stopped {
            sc.finding(
                loc,
                Verdict::Suspicious,
                FindingCode::MalformedContainer,
                *at as u64,
                format!("tar archive: {why}"),
            );
        }
        for m in &archive.members {
            if !m.is_regular() {
                continue;
            }
            let Some(content) = member_content(data, m) else {
                continue;
            };
            let name = m.name_lossy();
            if is_pickle_name(&name)
                || name.to_ascii_lowercase().ends_with(".npy")
                || is_interesting_content(&content[..content.len().min(8)])
            {
                scan_member(content, &name, &loc.member(&name, m.data_offset as u64), sc);
            }
        }
        "tar".into()
    }
}

fn member_content<'a>(data: &'a [u8], m: &TarMember) -> Option<&'a [u8]> {
    let end = usize::try_from(m.size)
        .ok()
        .and_then(|s| m.data_offset.checked_add(s))?;
    data.get(m.data_offset..end)
}

fn scan_torch_tar(data: &[u8], archive: &TarArchive, loc: &Loc, sc: &mut Scanner<'_>) {
    let mut count: HashMap<&[u8], usize> = HashMap::new();
    for m in &archive.members {
        *count.entry(&m.name).or_default() += 1;
    }
    for (name, n) in &count {
        if *n > 1 && TORCH_MEMBERS.iter().any(|t| *name == t.as_bytes()) {
            sc.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::AmbiguousTar,
                0,
                format!(
                    "the member `{}` appears {n} times; tarfile uses the last copy",
                    display_name(name)
                ),
            );
        }
    }
    if let Some((at, why)) = &archive.stopped {
        sc.finding(
            loc,
            Verdict::Dangerous,
            FindingCode::UnreadableRecord,
            *at as u64,
            format!("tar archive: {why}; tarfile may raise and torch.load then reads the file as pickle streams"),
        );
    }
    for m in &archive.members {
        let Some(which) = TORCH_MEMBERS.iter().find(|t| m.name == t.as_bytes()) else {
            continue;
        };
        if !m.is_regular() {
            sc.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::UnreadableRecord,
                m.header_offset as u64,
                format!(
                    "`{which}` is a link or special file (type {:?}); tarfile extracts it as such and torch.load unpickles whatever it points to",
                    m.typeflag as char
                ),
            );
            continue;
        }
        let avail = data.len().saturating_sub(m.data_offset);
        let len = usize::try_from(m.size).unwrap_or(usize::MAX).min(avail);
        let content = &data[m.data_offset.min(data.len())..m.data_offset.min(data.len()) + len];
        if (len as u64) < m.size {
            sc.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::UnreadableRecord,
                m.header_offset as u64,
                format!("`{which}` is cut off; tarfile raises and torch.load then reads the file as pickle streams"),
            );
        }
        let mloc = loc.member(which, m.data_offset as u64);
        let mloc = Loc {
            prefix: loc.scope(),
            leaf: None,
            ..mloc
        };
        match *which {
            "storages" => walk_records(content, &mloc, sc, Records::Storages),
            "tensors" => walk_records(content, &mloc, sc, Records::Tensors),
            _ => {
                sc.single_stream(content, 0, &mloc, &mloc.named(which));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Records {
    Storages,
    Tensors,
}

/// Walks `storages` or `tensors` as `legacy_load` reads them.
fn walk_records(content: &[u8], loc: &Loc, sc: &mut Scanner<'_>, kind: Records) {
    let member = if kind == Records::Storages {
        "storages"
    } else {
        "tensors"
    };
    let unreadable = |sc: &mut Scanner<'_>, at: usize, why: String| {
        sc.finding(
            loc,
            Verdict::Dangerous,
            FindingCode::UnreadableRecord,
            at as u64,
            format!("`{member}` cannot be walked as torch's legacy loader reads it: {why}"),
        );
    };
    let Some(a) = sc.single_stream(content, 0, loc, &loc.named(member)) else {
        return;
    };
    let Some(mut pos) = a.end else {
        return;
    };
    let n = match pickled_int(content, 0) {
        Some((v, _)) => v.0,
        None => {
            unreadable(sc, 0, "the record count is not a plain integer".into());
            return;
        }
    };
    // range() of a negative count is empty.
    let n = u64::try_from(n).unwrap_or(0);
    if n > content.len() as u64 {
        unreadable(
            sc,
            0,
            format!("{n} records cannot fit in {} bytes", content.len()),
        );
        return;
    }
    for i in 0..n {
        let Some(a) = sc.single_stream(content, pos, loc, &loc.named(&format!("{member}[{i}]")))
        else {
            return;
        };
        let Some(end) = a.end else {
            return;
        };
        pos = end;
        let skip = match kind {
            Records::Storages => {
                let types: Vec<&str> = a
                    .report
                    .globals
                    .iter()
                    .filter(|g| g.name.contains("Storage"))
                    .map(|g| g.name.as_str())
                    .collect();
                let size = match types.as_slice() {
                    [one] => storage_element_size(one),
                    _ => None,
                };
                let Some(size) = size else {
                    unreadable(
                        sc,
                        pos,
                        format!(
                            "record {i} does not name exactly one known storage type ({types:?})"
                        ),
                    );
                    return;
                };
                let Some(numel) = super::le_u64(content, pos) else {
                    unreadable(sc, pos, format!("record {i} has no element count"));
                    return;
                };
                let bytes = i64::try_from(numel)
                    .ok()
                    .and_then(|n| u64::try_from(n).ok())
                    .and_then(|n| n.checked_mul(size))
                    .and_then(|n| n.checked_add(8));
                match bytes {
                    Some(b) => b,
                    None => {
                        unreadable(
                            sc,
                            pos,
                            format!("record {i} has an impossible element count"),
                        );
                        return;
                    }
                }
            }
            Records::Tensors => {
                let Some(ndim) = super::le_u32(content, pos).map(|v| v as i32) else {
                    unreadable(sc, pos, format!("record {i} has no dimension count"));
                    return;
                };
                let Ok(ndim) = u64::try_from(ndim) else {
                    unreadable(
                        sc,
                        pos,
                        format!("record {i} has a negative dimension count"),
                    );
                    return;
                };
                // ndim, 4 skipped bytes, sizes, strides, storage offset.
                8 + 16 * ndim + 8
            }
        };
        let next = u64::try_from(pos).ok().and_then(|p| p.checked_add(skip));
        match next
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= content.len())
        {
            Some(n) => pos = n,
            None => {
                unreadable(
                    sc,
                    pos,
                    format!("record {i}'s raw data runs past the end of the member"),
                );
                return;
            }
        }
    }
    if kind == Records::Storages {
        sc.single_stream(content, pos, loc, &loc.named("storages:views"));
    }
}

#[cfg(test)]
pub(crate) mod tests;
