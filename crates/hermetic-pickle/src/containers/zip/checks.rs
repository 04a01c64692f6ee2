//! The checks on a parsed archive: local headers against the directory,
//! the records' layout, and names two readers could resolve differently.

use super::super::{display_name, le_u16, le_u32};
use super::*;
use std::collections::HashMap;

impl ZipArchive {
    pub(super) fn check_local_headers(&mut self, data: &[u8]) {
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

    pub(super) fn check_layout(&mut self) {
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

    pub(super) fn check_names(&mut self) {
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
