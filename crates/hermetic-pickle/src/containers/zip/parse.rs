//! Reading the central directory, as miniz and zipfile each find it.

use super::super::{display_name, le_u16, le_u32, le_u64, ContainerError};
use super::*;

pub(super) fn read_central(
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
pub(super) fn descriptor_len(data: &[u8], at: u64, e: &ZipEntry) -> Option<u64> {
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
}
