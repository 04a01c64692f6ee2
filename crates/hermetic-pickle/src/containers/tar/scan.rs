//! Scanning a tar: every member's pickle, and torch's tar checkpoint
//! members read as `torch.load` reads them.

use super::*;

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

pub(super) fn member_content<'a>(data: &'a [u8], m: &TarMember) -> Option<&'a [u8]> {
    let end = usize::try_from(m.size)
        .ok()
        .and_then(|s| m.data_offset.checked_add(s))?;
    data.get(m.data_offset..end)
}

pub(super) fn scan_torch_tar(data: &[u8], archive: &TarArchive, loc: &Loc, sc: &mut Scanner<'_>) {
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
pub(super) enum Records {
    Storages,
    Tensors,
}

/// Walks `storages` or `tensors` as `legacy_load` reads them.
pub(super) fn walk_records(content: &[u8], loc: &Loc, sc: &mut Scanner<'_>, kind: Records) {
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
                let Some(numel) = crate::containers::le_u64(content, pos) else {
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
                let Some(ndim) = crate::containers::le_u32(content, pos).map(|v| v as i32) else {
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
