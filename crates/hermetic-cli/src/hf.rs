//! `hermetic scan --hf-cache`: a Hugging Face hub cache reported by
//! repository and revision.
//!
//! The layout is huggingface_hub's (`file_download.py`, `_cache_manager.py`):
//! `{models,datasets,spaces}--ORG--NAME/` holds `blobs/HASH` (the content),
//! `snapshots/REVISION/FILE` (symlinks to `../../blobs/HASH`) and
//! `refs/NAME` (a file holding the revision a branch or tag points to). The
//! walk follows the links and scans every blob once; here each scanned file
//! is put back under the `org/name@revision` it belongs to.

use hermetic_pickle::{FileReport, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The cache `huggingface_hub` uses (`constants.py`): `HF_HUB_CACHE`, then the
/// legacy `HUGGINGFACE_HUB_CACHE`, then `HF_HOME/hub`, then
/// `$XDG_CACHE_HOME/huggingface/hub`, then `~/.cache/huggingface/hub`.
pub fn default_cache() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(expand_user)
    };
    if let Some(p) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    let home = var("HF_HOME").unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .unwrap_or_else(|| home_dir().join(".cache"))
            .join("huggingface")
    });
    home.join("hub")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `~` and `~/...` as `os.path.expanduser` reads them.
fn expand_user(v: std::ffi::OsString) -> PathBuf {
    let p = PathBuf::from(v);
    match p.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => p,
    }
}

/// One file of a snapshot.
#[derive(Debug, Serialize)]
pub struct HubFile {
    /// The file's name in the repository (`subdir/model.safetensors`).
    pub file: String,
    /// The path it was scanned under.
    pub path: String,
    pub format: String,
    pub verdict: Verdict,
    /// The blob the snapshot links to (its name is the content hash).
    pub blob: Option<String>,
}

/// One revision of one repository.
#[derive(Debug, Serialize)]
pub struct HubRevision {
    /// `model`, `dataset` or `space`.
    pub repo_type: String,
    /// `org/name`.
    pub repo_id: String,
    /// The snapshot's commit; `None` for blobs no snapshot links to.
    pub revision: Option<String>,
    /// The branches and tags (`refs/...`) that point to it.
    pub refs: Vec<String>,
    /// The worst verdict of its files (`safe` when it has none).
    pub verdict: Verdict,
    pub files: Vec<HubFile>,
}

impl HubRevision {
    /// `org/name@revision`.
    pub fn name(&self) -> String {
        match &self.revision {
            Some(r) => format!("{}@{r}", self.repo_id),
            None => format!("{} (blobs no snapshot links to)", self.repo_id),
        }
    }
}

/// `models--org--name` -> (`model`, `org/name`), as huggingface_hub splits it.
fn parse_repo_folder(name: &str) -> Option<(String, String)> {
    let (kind, id) = name.split_once("--")?;
    let kind = match kind {
        "models" => "model",
        "datasets" => "dataset",
        "spaces" => "space",
        _ => return None,
    };
    Some((kind.to_string(), id.replace("--", "/")))
}

/// Which refs point to which revision, in one repository folder.
fn read_refs(repo: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let refs = repo.join("refs");
    for entry in walkdir::WalkDir::new(&refs).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rev) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Ok(name) = entry.path().strip_prefix(&refs) {
            let name = name
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.entry(rev.trim().to_string()).or_default().push(name);
        }
    }
    out
}

/// The reports under `cache`, grouped by repository and revision. Files
/// outside any repository folder (`.locks`, `version.txt`) are left out.
pub fn group(cache: &Path, reports: &[&FileReport]) -> Vec<HubRevision> {
    let mut by_rev: BTreeMap<(String, Option<String>), HubRevision> = BTreeMap::new();
    let mut refs_of: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for r in reports {
        let path = Path::new(&r.path);
        let Ok(rel) = path.strip_prefix(cache) else {
            continue;
        };
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let Some((repo_type, repo_id)) = parts.first().and_then(|f| parse_repo_folder(f)) else {
            continue;
        };
        let (revision, file) = match parts.get(1).map(String::as_str) {
            Some("snapshots") if parts.len() >= 4 => (Some(parts[2].clone()), parts[3..].join("/")),
            Some("blobs") if parts.len() == 3 => (None, parts[1..].join("/")),
            _ => continue,
        };
        let refs = refs_of
            .entry(parts[0].clone())
            .or_insert_with(|| read_refs(&cache.join(&parts[0])));
        let entry = by_rev
            .entry((parts[0].clone(), revision.clone()))
            .or_insert_with(|| HubRevision {
                repo_type,
                repo_id,
                refs: revision
                    .as_ref()
                    .and_then(|rev| refs.get(rev).cloned())
                    .unwrap_or_default(),
                revision,
                verdict: Verdict::Safe,
                files: Vec::new(),
            });
        entry.verdict = entry.verdict.max(r.verdict);
        let blob = std::fs::canonicalize(path)
            .ok()
            .filter(|p| hermetic_pickle::walk::is_hub_blob(p))
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        entry.files.push(HubFile {
            file,
            path: r.path.clone(),
            format: r.format.clone(),
            verdict: r.verdict,
            blob,
        });
    }
    by_rev.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_folders_split_as_huggingface_hub_splits_them() {
        assert_eq!(
            parse_repo_folder("models--org--name"),
            Some(("model".into(), "org/name".into()))
        );
        assert_eq!(
            parse_repo_folder("datasets--squad"),
            Some(("dataset".into(), "squad".into()))
        );
        assert_eq!(parse_repo_folder(".locks"), None);
        assert_eq!(parse_repo_folder("other--x"), None);
    }
}
