//! Scanning an archive: its issues as findings and every pickle record in it.

use super::super::{
    display_name, is_interesting_content, is_pickle_name, is_safetensors, scan_member,
    scan_pickle_file, ContainerError, Loc, Scanner,
};
use super::*;
use crate::codes::FindingCode;
use crate::policy::Verdict;
use std::collections::BTreeMap;

pub(super) fn report_issues(
    issues: &[ZipIssue],
    loc: &Loc,
    sc: &mut Scanner<'_>,
    skip_leading: bool,
) {
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
pub(super) fn record_name(name: &str) -> &str {
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
pub(super) fn scan_archive(
    data: &[u8],
    archive: &ZipArchive,
    loc: &Loc,
    sc: &mut Scanner<'_>,
) -> String {
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
