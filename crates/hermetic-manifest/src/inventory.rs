//! The inventory: JSON lines that `record` and `warn` modes append, one
//! object per event, and the `freeze` step that turns loads into manifest
//! entries. See docs/SPEC.md, section "Inventory".

use crate::blob::BlobId;
use crate::glob::CallerPattern;
use crate::manifest::Entry;
use crate::ManifestError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;

/// The inventory format version written in every record's `v` field.
pub const INVENTORY_VERSION: u32 = 1;

/// One unpickle that happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    pub blob: BlobId,
    pub size: u64,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub entry_point: Option<String>,
    /// `module:qualname` of the call site.
    #[serde(default)]
    pub call_site: Option<String>,
    /// `path.py:line` of the call site.
    #[serde(default)]
    pub location: Option<String>,
    /// What the manifest in force said (`listed`, `rule:<name>`, `unlisted`, ...).
    #[serde(default)]
    pub judgement: Option<String>,
    /// The scanner's verdict: `safe`, `suspicious`, `dangerous`.
    #[serde(default)]
    pub verdict: Option<String>,
    /// `module.name` of every global the blob imports.
    #[serde(default)]
    pub imports: Vec<String>,
    /// The scanner's finding codes.
    #[serde(default)]
    pub findings: Vec<String>,
}

/// A call site that wrote a pickle: a place to migrate to a safe format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpRecord {
    #[serde(default)]
    pub entry_point: Option<String>,
    #[serde(default)]
    pub call_site: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    /// `rule:<name>` when a call-site rule covers the writer (inter-process
    /// pickling), else absent.
    #[serde(default)]
    pub judgement: Option<String>,
}

/// An unpickler resolved a global outside any load the firewall saw
/// (a reference to the unpickler taken before the firewall started).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalRecord {
    pub global: String,
    #[serde(default)]
    pub call_site: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Load(LoadRecord),
    Dump(DumpRecord),
    Global(GlobalRecord),
}

/// One inventory line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    #[serde(default)]
    pub pid: Option<u64>,
    /// Seconds since the Unix epoch.
    #[serde(default)]
    pub time: Option<f64>,
    #[serde(flatten)]
    pub event: Event,
}

/// Reads an inventory. Blank lines are skipped; any other line that is not
/// a valid record is an error naming its line number, since a corrupt
/// inventory must not freeze into a manifest silently.
pub fn read_inventory<R: BufRead>(reader: R) -> Result<Vec<Record>, ManifestError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| ManifestError::Io {
            path: "inventory".into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Record = serde_json::from_str(&line).map_err(|e| ManifestError::Inventory {
            line: i + 1,
            message: e.to_string(),
        })?;
        if rec.v != INVENTORY_VERSION {
            return Err(ManifestError::Inventory {
                line: i + 1,
                message: format!("unsupported inventory version {}", rec.v),
            });
        }
        out.push(rec);
    }
    Ok(out)
}

/// How `freeze` turns loads into entries.
#[derive(Clone, Copy, Debug, Default)]
pub struct FreezeOptions {
    /// Leave out `callers`, so each blob may load from any call site.
    pub any_caller: bool,
}

/// What `freeze` found in an inventory.
#[derive(Debug, Default)]
pub struct Frozen {
    /// The entries, one per blob.
    pub entries: Vec<(BlobId, Entry)>,
    /// Loads that a call-site rule already covers (not listed), by rule.
    pub covered_by_rules: BTreeMap<String, usize>,
    /// Call sites that wrote pickles: `(entry point, call site, location)` and count.
    pub writers: BTreeMap<(String, String, String), usize>,
    /// Globals resolved outside any guarded load.
    pub unguarded: BTreeMap<(String, String), usize>,
}

/// Groups the loads of an inventory by blob. Loads a call-site rule allowed
/// are left to the rule; every other blob becomes an entry whose `callers`
/// are the exact call sites it was loaded from.
pub fn freeze(records: &[Record], opts: FreezeOptions) -> Result<Frozen, ManifestError> {
    // Sets, not lists: 100,000 records of one blob from as many call sites
    // or files must not cost 100,000 squared comparisons.
    struct Acc {
        size: u64,
        callers: Option<std::collections::BTreeSet<String>>,
        sources: Vec<String>,
        seen_sources: std::collections::HashSet<String>,
        verdict: Option<String>,
        imports: Vec<String>,
    }
    let mut acc: BTreeMap<BlobId, Acc> = BTreeMap::new();
    let mut out = Frozen::default();
    for r in records {
        match &r.event {
            Event::Load(l) => {
                if let Some(rule) = l.judgement.as_deref().and_then(|j| j.strip_prefix("rule:")) {
                    *out.covered_by_rules.entry(rule.to_string()).or_default() += 1;
                    continue;
                }
                let a = acc.entry(l.blob).or_insert_with(|| Acc {
                    size: l.size,
                    callers: Some(Default::default()),
                    sources: Vec::new(),
                    seen_sources: Default::default(),
                    verdict: l.verdict.clone(),
                    imports: l.imports.clone(),
                });
                if a.size != l.size {
                    return Err(ManifestError::Invalid(format!(
                        "inventory gives blob {} two sizes, {} and {}",
                        l.blob, a.size, l.size
                    )));
                }
                if let Some(site) = &l.call_site {
                    // A recorded call site is one frame; frozen, it becomes a
                    // pattern. A glob character in it would widen the entry
                    // (a forged `"*:*"` allows every caller).
                    if site.contains(['*', '?']) {
                        return Err(ManifestError::Invalid(format!(
                            "inventory gives blob {} the call site {:?}, which holds a glob \
                             character (`*` or `?`): a recorded call site is one frame, not a \
                             pattern; review the inventory (it may have been written by \
                             someone else) or freeze with --any-caller",
                            l.blob,
                            crate::text::display(site)
                        )));
                    }
                }
                match (&mut a.callers, &l.call_site) {
                    (Some(set), Some(site)) if CallerPattern::parse(site).is_ok() => {
                        set.insert(site.clone());
                    }
                    // An unknown or unusable call site: allow any.
                    _ => a.callers = None,
                }
                if let Some(f) = &l.file {
                    if a.seen_sources.insert(f.clone()) {
                        a.sources.push(f.clone());
                    }
                }
            }
            Event::Dump(d)
                if d.judgement
                    .as_deref()
                    .is_some_and(|j| j.starts_with("rule:")) =>
            {
                // Inter-process pickling: not a place to migrate.
            }
            Event::Dump(d) => {
                let key = (
                    d.entry_point.clone().unwrap_or_default(),
                    d.call_site.clone().unwrap_or_default(),
                    d.location.clone().unwrap_or_default(),
                );
                *out.writers.entry(key).or_default() += 1;
            }
            Event::Global(g) => {
                let key = (g.global.clone(), g.call_site.clone().unwrap_or_default());
                *out.unguarded.entry(key).or_default() += 1;
            }
        }
    }
    for (id, a) in acc {
        let callers = if opts.any_caller {
            None
        } else {
            a.callers.map(|set| {
                set.iter()
                    .map(|s| CallerPattern::parse(s).expect("checked above"))
                    .collect()
            })
        };
        let mut note = match &a.verdict {
            Some(v) => format!("recorded; scanner: {v}"),
            None => "recorded".to_string(),
        };
        if !a.imports.is_empty() {
            note.push_str(&format!("; imports: {}", a.imports.join(", ")));
        }
        out.entries.push((
            id,
            Entry {
                size: Some(a.size),
                callers,
                source: if a.sources.is_empty() {
                    None
                } else {
                    Some(a.sources.join(", "))
                },
                note: Some(note),
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(blob: &BlobId, site: &str, judgement: &str, file: Option<&str>) -> String {
        serde_json::json!({
            "v": 1, "event": "load", "pid": 7, "time": 1.5,
            "blob": blob.to_string(), "size": 10, "file": file,
            "entry_point": "pickle.load", "call_site": site, "location": "a.py:1",
            "judgement": judgement, "verdict": "safe", "imports": ["collections.OrderedDict"],
            "findings": [], "future_field": true,
        })
        .to_string()
    }

    #[test]
    fn reads_and_freezes() {
        let a = BlobId::of(b"a");
        let b = BlobId::of(b"b");
        let text = [
            load(&a, "app:main", "unlisted", Some("/m/a.pkl")),
            String::new(),
            load(&a, "app:eval", "unlisted", Some("/m/a.pkl")),
            load(&b, "multiprocessing.queues:Queue.get", "rule:python-ipc", None),
            r#"{"v":1,"event":"dump","pid":7,"entry_point":"pickle.dump","call_site":"app:save","location":"a.py:9"}"#.to_string(),
            r#"{"v":1,"event":"dump","pid":7,"entry_point":"pickle.Pickler","call_site":"multiprocessing.reduction:ForkingPickler.dumps","judgement":"rule:python-ipc"}"#.to_string(),
            r#"{"v":1,"event":"global","global":"os.system","call_site":"app:x"}"#.to_string(),
        ]
        .join("\n");
        let recs = read_inventory(text.as_bytes()).unwrap();
        assert_eq!(recs.len(), 6);
        let f = freeze(&recs, FreezeOptions::default()).unwrap();
        assert_eq!(f.entries.len(), 1);
        let (id, e) = &f.entries[0];
        assert_eq!(id, &a);
        assert_eq!(e.size, Some(10));
        let callers: Vec<_> = e
            .callers
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(callers, ["app:eval", "app:main"]);
        assert_eq!(e.source.as_deref(), Some("/m/a.pkl"));
        assert!(e.note.as_ref().unwrap().contains("collections.OrderedDict"));
        assert_eq!(f.covered_by_rules["python-ipc"], 1);
        assert_eq!(f.writers.len(), 1);
        assert_eq!(f.unguarded.len(), 1);
        let any = freeze(&recs, FreezeOptions { any_caller: true }).unwrap();
        assert!(any.entries[0].1.callers.is_none());
    }

    #[test]
    fn corrupt_lines_are_errors_with_line_numbers() {
        let a = BlobId::of(b"a");
        let text = format!(
            "{}\n{{\"v\":1,\"event\":\"load\",\"blob\":\"sha",
            load(&a, "x:y", "unlisted", None)
        );
        match read_inventory(text.as_bytes()) {
            Err(ManifestError::Inventory { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
        assert!(read_inventory("{\"v\":2,\"event\":\"dump\"}".as_bytes()).is_err());
        assert!(read_inventory("{\"v\":1,\"event\":\"teleport\"}".as_bytes()).is_err());
    }

    #[test]
    fn record_round_trip() {
        let r = Record {
            v: 1,
            pid: Some(1),
            time: Some(2.0),
            event: Event::Dump(DumpRecord {
                entry_point: Some("torch.save".into()),
                call_site: Some("app:save".into()),
                location: None,
                judgement: None,
            }),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"event\":\"dump\""));
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }
}
