//! Expanding paths into the files to scan, and scanning them in parallel
//! (the CLI's `hermetic scan` and Python's `hermetic.scan`).
//!
//! Symlinks are followed, because a Hugging Face hub cache is made of them
//! (`snapshots/REV/model.safetensors` -> `../../blobs/HASH`): skipping them
//! would scan a malicious snapshot as "0 files". A file reached by several
//! paths is scanned once; loops, dangling links and things that are not
//! regular files are reported, never silently left out.

use crate::policy::{Policy, Verdict};
use crate::report::FileReport;
use crate::{fsio, scan_file, Limits};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Folders no model lives in, whose contents (compressed VCS objects) would
/// only cost time.
const SKIP_DIRS: &[&str] = &[".git", ".hg", ".svn"];

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Regular files to scan, sorted, each file once.
    pub files: Vec<PathBuf>,
    /// Further paths that lead to one of `files` (hard links, several
    /// snapshots sharing a blob): `(alias, scanned path)`.
    pub aliases: Vec<(PathBuf, PathBuf)>,
    /// Paths that could not be scanned, with the reason.
    pub errors: Vec<(PathBuf, String)>,
}

/// Every regular file under `paths`, following symlinks.
pub fn collect(paths: &[PathBuf]) -> Walk {
    let mut found: Vec<(PathBuf, Option<(u64, u64)>)> = Vec::new();
    let mut walk = Walk::default();
    for root in paths {
        if std::fs::symlink_metadata(root).is_err() {
            walk.errors
                .push((root.clone(), "no such file or directory".to_string()));
            continue;
        }
        let walker = walkdir::WalkDir::new(root)
            .follow_links(true)
            .into_iter()
            .filter_entry(|e| !(e.file_type().is_dir() && e.depth() > 0 && is_skipped(e.path())));
        for entry in walker {
            match entry {
                Ok(e) if e.file_type().is_file() => {
                    let id = e.metadata().ok().and_then(|m| file_id(&m));
                    found.push((e.into_path(), id));
                }
                Ok(e) if e.file_type().is_dir() => {}
                Ok(e) => walk.errors.push((
                    e.path().to_path_buf(),
                    fsio::not_regular(e.file_type()).to_string(),
                )),
                Err(e) => {
                    let path = e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| root.clone());
                    walk.errors.push((path, walk_error(&e)));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    let mut by_id: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for (path, id) in found {
        match id {
            Some(id) => by_id.entry(id).or_default().push(path),
            None => walk.files.push(path),
        }
    }
    for (_, mut group) in by_id {
        // The name a user knows a hub file by is its snapshot path; the
        // content-addressed blob is reported only when nothing links to it.
        if group.iter().any(|p| !is_hub_blob(p)) {
            group.retain(|p| !is_hub_blob(p));
        }
        let first = group.remove(0);
        walk.aliases
            .extend(group.into_iter().map(|alias| (alias, first.clone())));
        walk.files.push(first);
    }
    walk.files.sort();
    walk.aliases.sort();
    walk
}

fn walk_error(e: &walkdir::Error) -> String {
    if let Some(ancestor) = e.loop_ancestor() {
        return format!(
            "symlink loop: leads back to {}; not followed",
            ancestor.display()
        );
    }
    match e.io_error() {
        Some(io) if io.kind() == std::io::ErrorKind::NotFound => {
            "dangling symlink: its target does not exist".to_string()
        }
        Some(io) => io.to_string(),
        None => e.to_string(),
    }
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Whether `path` is a blob of a Hugging Face hub cache:
/// `.../models--org--name/blobs/HASH` (also `datasets--` and `spaces--`).
pub fn is_hub_blob(path: &Path) -> bool {
    let mut parts = path.components().rev().skip(1);
    let parent = parts.next().and_then(|c| c.as_os_str().to_str());
    let repo = parts.next().and_then(|c| c.as_os_str().to_str());
    parent == Some("blobs")
        && repo.is_some_and(|r| {
            ["models--", "datasets--", "spaces--"]
                .iter()
                .any(|p| r.starts_with(p))
        })
}

fn is_skipped(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| SKIP_DIRS.contains(&n))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hermetic-walk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn hub_cache_files_are_scanned_once_under_their_snapshot_path() {
        let d = tmp("hub");
        let repo = d.join("models--org--name");
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/def")).unwrap();
        std::fs::write(repo.join("blobs/1234"), b"x").unwrap();
        symlink("../../blobs/1234", repo.join("snapshots/abc/model.pt")).unwrap();
        symlink("../../blobs/1234", repo.join("snapshots/def/model.pt")).unwrap();
        let w = collect(std::slice::from_ref(&d));
        assert_eq!(w.files, vec![repo.join("snapshots/abc/model.pt")]);
        assert_eq!(
            w.aliases,
            vec![(
                repo.join("snapshots/def/model.pt"),
                repo.join("snapshots/abc/model.pt")
            )]
        );
        assert!(w.errors.is_empty());
        // A snapshot file named on the command line is a symlink: scanned.
        let w = collect(&[repo.join("snapshots/abc/model.pt")]);
        assert_eq!(w.files, vec![repo.join("snapshots/abc/model.pt")]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn loops_and_dangling_links_are_reported() {
        let d = tmp("loop");
        std::fs::create_dir_all(d.join("a")).unwrap();
        symlink("..", d.join("a/up")).unwrap();
        symlink("missing", d.join("gone.pt")).unwrap();
        let w = collect(std::slice::from_ref(&d));
        let reasons: Vec<&str> = w.errors.iter().map(|(_, r)| r.as_str()).collect();
        assert!(
            reasons.iter().any(|r| r.contains("symlink loop")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains("dangling")),
            "{reasons:?}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// What a scan of many files found, for the footer and `--format json`.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub files_scanned: usize,
    /// Files in a format hermetic recognises (pickles, checkpoints, npy, safetensors ...).
    pub files_recognised: usize,
    pub files_with_pickles: usize,
    pub safe: usize,
    pub suspicious: usize,
    pub dangerous: usize,
    pub errors: usize,
    pub verdict: Option<Verdict>,
}

/// Scans every file under `paths` in parallel; reports come back sorted by
/// path, followed by paths that could not be read.
pub fn scan_paths(
    paths: &[std::path::PathBuf],
    policy: &Policy,
    jobs: Option<usize>,
) -> Result<(Vec<FileReport>, Summary), rayon::ThreadPoolBuildError> {
    scan_paths_with(paths, policy, jobs, None)
}

/// [`scan_paths`], calling `progress(done, total)` as files finish.
pub fn scan_paths_with(
    paths: &[std::path::PathBuf],
    policy: &Policy,
    jobs: Option<usize>,
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
) -> Result<(Vec<FileReport>, Summary), rayon::ThreadPoolBuildError> {
    let walk = collect(paths);
    let files = &walk.files;
    let limits = Limits::default();
    let total = files.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let scan = || -> Vec<FileReport> {
        files
            .par_iter()
            .map(|f| {
                let r = scan_file(f, policy, &limits);
                if let Some(p) = progress {
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    p(n, total);
                }
                r
            })
            .collect()
    };
    let mut reports = match jobs {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()?
            .install(scan),
        None => scan(),
    };
    // A torch.distributed.checkpoint folder is judged as DCP reads it.
    for (meta, beside) in crate::dcp::folders(files) {
        crate::dcp::check_folder(files, &mut reports, meta, &beside, policy, &limits);
    }
    // A file reached by several paths was scanned once; each path is reported.
    let by_path: std::collections::HashMap<&std::path::Path, usize> = files
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_path(), i))
        .collect();
    let mut aliased = Vec::new();
    for (alias, scanned) in &walk.aliases {
        if let Some(&i) = by_path.get(scanned.as_path()) {
            let mut r = reports[i].clone();
            r.path = alias.display().to_string();
            aliased.push(r);
        }
    }
    reports.extend(aliased);
    reports.sort_by(|a, b| a.path.cmp(&b.path));
    for (path, err) in walk.errors {
        reports.push(FileReport::unreadable(path.display().to_string(), err));
    }
    let mut summary = Summary {
        files_scanned: files.len() + walk.aliases.len(),
        ..Summary::default()
    };
    for r in &reports {
        summary.verdict = summary.verdict.max(Some(r.verdict));
        if r.verdict == Verdict::Error {
            summary.errors += 1;
            continue;
        }
        if r.format == "none" {
            continue;
        }
        summary.files_recognised += 1;
        summary.files_with_pickles += usize::from(r.has_pickle());
        match r.verdict {
            Verdict::Safe => summary.safe += 1,
            Verdict::Suspicious => summary.suspicious += 1,
            Verdict::Dangerous | Verdict::Error => summary.dangerous += 1,
        }
    }
    Ok((reports, summary))
}
