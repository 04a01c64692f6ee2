//! Expanding the command line's paths into the files to scan.

use std::path::{Path, PathBuf};

/// Folders no model lives in, whose contents (compressed VCS objects) would
/// only cost time.
const SKIP_DIRS: &[&str] = &[".git", ".hg", ".svn"];

/// Every regular file under `paths`, sorted; symlinks are not followed.
/// Paths that do not exist come back as errors.
pub fn collect(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for root in paths {
        if !root.exists() {
            errors.push((root.clone(), "no such file or directory".to_string()));
            continue;
        }
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| !(e.file_type().is_dir() && e.depth() > 0 && is_skipped(e.path())));
        for entry in walker {
            match entry {
                Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
                Ok(_) => {}
                Err(e) => {
                    let path = e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| root.clone());
                    errors.push((path, e.to_string()));
                }
            }
        }
    }
    files.sort();
    files.dedup();
    (files, errors)
}

fn is_skipped(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| SKIP_DIRS.contains(&n))
}
