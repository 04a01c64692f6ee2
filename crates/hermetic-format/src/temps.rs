//! Temporary files of saves, and the ones interrupted saves left behind.
//!
//! A save writes `.NAME.XXXXXX.tmp` beside `NAME` and renames it into place
//! when complete (SPEC 2). A save killed before the rename leaves its
//! temporary behind; preempted training jobs would pile them up. So each
//! writer holds an exclusive `flock` on its temporary for as long as it
//! writes, and the next save to `NAME` removes every temporary whose lock it
//! can take: the kernel drops a lock when its holder's process dies (even by
//! `SIGKILL`), so a lockable temporary belongs to no live writer. A writer
//! that finds its temporary removed between creating and locking it (a
//! cleaner took the lock first) makes a new one.

use std::fs::File;
use std::path::{Path, PathBuf};

/// How many random characters `tempfile` puts in a name (its default).
const RAND_LEN: usize = 6;

/// A fresh temporary for `path`, locked for this writer.
pub(crate) fn create(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let (dir, name) = split(path);
    let prefix = format!(".{name}.");
    for _ in 0..16 {
        let mut b = tempfile::Builder::new();
        b.prefix(&prefix).suffix(".tmp").rand_bytes(RAND_LEN);
        // The saved file gets the mode any new file gets (0666 less the
        // umask), as `safetensors` and `torch.save` give theirs, not the
        // private 0600 of a temporary: checkpoints are shared.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            b.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = b.tempfile_in(&dir)?;
        if !try_lock(tmp.as_file())? {
            continue; // cannot happen for a new file; never write into another's
        }
        // Still ours? A cleaner may have locked and removed it in between.
        if same_file(tmp.path(), tmp.as_file()) {
            return Ok(tmp);
        }
    }
    Err(std::io::Error::other(format!(
        "could not create a temporary file for {} that stayed in place",
        path.display()
    )))
}

/// Temporaries of earlier saves to `path` that no live writer holds.
pub fn stale(path: &Path) -> Vec<PathBuf> {
    let (dir, name) = split(path);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let file_name = ent.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if !is_temp_of(n, &name) {
            continue;
        }
        let p = ent.path();
        // A symlink or anything but a regular file is not a temporary of ours.
        if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()) {
            continue;
        }
        if let Ok(f) = open_no_follow(&p) {
            if try_lock(&f).unwrap_or(false) && same_file(&p, &f) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Removes the temporaries [`stale`] finds; returns those removed. Each is
/// removed while this process holds its lock, so a writer that just created
/// it sees it gone and makes another.
pub fn remove_stale(path: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for p in stale(path) {
        if let Ok(f) = open_no_follow(&p) {
            if try_lock(&f).unwrap_or(false)
                && same_file(&p, &f)
                && std::fs::remove_file(&p).is_ok()
            {
                removed.push(p);
            }
        }
    }
    removed
}

fn split(path: &Path) -> (PathBuf, String) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

/// `.NAME.XXXXXX.tmp`, with exactly `tempfile`'s random part.
fn is_temp_of(file_name: &str, name: &str) -> bool {
    file_name
        .strip_prefix('.')
        .and_then(|r| r.strip_prefix(name))
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(".tmp"))
        .is_some_and(|rand| {
            rand.len() == RAND_LEN && rand.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(unix)]
fn open_no_follow(p: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
}

#[cfg(not(unix))]
fn open_no_follow(p: &Path) -> std::io::Result<File> {
    File::open(p)
}

/// Whether `path` still names the file open as `f`.
#[cfg(unix)]
fn same_file(path: &Path, f: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(path: &Path, _: &File) -> bool {
    path.exists()
}

/// Takes an exclusive lock without waiting: `Ok(false)` if another holds it.
#[cfg(unix)]
#[allow(unsafe_code)]
fn try_lock(f: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock only reads the descriptor number, which `f` keeps open
    // for the duration of the call; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Without `flock`, no temporary can be told dead: none is removed.
#[cfg(not(unix))]
fn try_lock(_: &File) -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_temp_of(".m.safetensors.Ab3xY9.tmp", "m.safetensors"));
        assert!(!is_temp_of(".m.safetensors.bak.tmp", "m.safetensors"));
        assert!(!is_temp_of(".m.safetensors.Ab3-Y9.tmp", "m.safetensors"));
        assert!(!is_temp_of(".m.safetensors.Ab3xY9.tmp", "m"));
        assert!(!is_temp_of("m.safetensors.Ab3xY9.tmp", "m.safetensors"));
    }

    #[cfg(unix)]
    #[test]
    fn live_temporaries_stay_dead_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let live = create(&path).unwrap();
        // A dead writer's: the same name pattern, no lock held.
        let dead = dir.path().join(".m.safetensors.dead00.tmp");
        std::fs::write(&dead, b"x").unwrap();
        // Not ours at all.
        let other = dir.path().join(".m.safetensors.keep.tmp");
        std::fs::write(&other, b"x").unwrap();
        let link = dir.path().join(".m.safetensors.link00.tmp");
        std::os::unix::fs::symlink(&other, &link).unwrap();
        assert_eq!(stale(&path), vec![dead.clone()]);
        assert_eq!(remove_stale(&path), vec![dead.clone()]);
        assert!(!dead.exists() && live.path().exists() && other.exists());
        assert!(link.symlink_metadata().is_ok());
        drop(live);
    }
}
