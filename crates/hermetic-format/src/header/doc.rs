//! The `__hermetic__` document: parsed in one pass with serde seeds, so
//! duplicate keys and unknown members are errors and digests are checked
//! against the entries as they are read.

use super::*;

/// Parses the hermetic document (the value of [`HERMETIC_KEY`]) of a file
/// with these entries (`by_name` indexes `entries`), and checks every tensor
/// reference of its tree against them.
pub fn parse_doc(
    json: &str,
    file: &str,
    entries: &[EntryInfo],
    by_name: &HashMap<String, usize>,
) -> Result<Doc> {
    finish_doc(parse_early(json.to_string(), file)?, file, entries, by_name)
}

/// The part of a document that needs no entries: its members, and the tree.
pub(super) struct EarlyDoc {
    json: String,
    version: u64,
    /// Where the `digests` object lies in `json`.
    digests: Option<std::ops::Range<usize>>,
    tree: Option<Tree>,
}

pub(super) fn parse_early(json: String, file: &str) -> Result<EarlyDoc> {
    let raw = parse_raw_doc(&json, file, false)?;
    let digests = raw.digests.map(|d| {
        let start = d.get().as_ptr() as usize - json.as_ptr() as usize;
        start..start + d.get().len()
    });
    let tree = raw
        .tree
        .map(|t| parse_tree(t.get(), file, raw.version))
        .transpose()?;
    let version = raw.version;
    Ok(EarlyDoc {
        json,
        version,
        digests,
        tree,
    })
}

/// Reads the digests and checks the tree against the entries, side by side.
pub(super) fn finish_doc(
    early: EarlyDoc,
    file: &str,
    entries: &[EntryInfo],
    by_name: &HashMap<String, usize>,
) -> Result<Doc> {
    let digests_json = early.digests.map_or("{}", |r| &early.json[r]);
    let tree = early.tree;
    let (digests, checked) = rayon::join(
        || parse_digests(digests_json, file, entries, by_name),
        || match &tree {
            Some(t) => {
                let lookup = |name: &str| by_name.get(name).map(|&i| &entries[i]);
                check_tree(t, file, &lookup)
            }
            None => Ok(()),
        },
    );
    let digests = digests?;
    checked?;
    Ok(Doc {
        version: early.version,
        digests,
        tree,
    })
}

/// Parses the `hermetic` member of a shard index: `{"version": 1, "tree": ...}`.
pub fn parse_doc_members(json: &str, file: &str) -> Result<(u64, Option<Tree>)> {
    let raw = parse_raw_doc(json, file, true)?;
    let tree = raw
        .tree
        .map(|t| parse_tree(t.get(), file, raw.version))
        .transpose()?;
    Ok((raw.version, tree))
}

pub(super) fn parse_tree(json: &str, file: &str, version: u64) -> Result<Tree> {
    let tree = Tree::from_json(json, file)?;
    let needs = tree.required_version();
    if needs > version {
        return Err(FormatError::tree(
            file,
            "version",
            format!(
                "the tree uses version-{needs} nodes (class records, callables or \
                 standard-library values for 2, tensors with `base` for 3) in a \
                 version-{version} document"
            ),
        ));
    }
    Ok(tree)
}

/// The document's members, checked for presence and kind, with the digests
/// and the tree still as JSON text.
pub(super) struct RawDoc<'de> {
    version: u64,
    digests: Option<&'de serde_json::value::RawValue>,
    tree: Option<&'de serde_json::value::RawValue>,
}

pub(super) fn parse_raw_doc<'de>(json: &'de str, file: &str, index: bool) -> Result<RawDoc<'de>> {
    let place = if index { "hermetic" } else { HERMETIC_KEY };
    let mut de = serde_json::Deserializer::from_str(json);
    let mut err = None;
    let doc = DocSeed {
        file,
        err: &mut err,
        index,
    }
    .deserialize(&mut de);
    let doc = match doc {
        Ok(d) => d,
        Err(e) => return Err(err.unwrap_or_else(|| FormatError::tree(file, place, e.to_string()))),
    };
    de.end()
        .map_err(|e| FormatError::tree(file, place, e.to_string()))?;
    Ok(doc)
}

pub(super) struct DocSeed<'a> {
    file: &'a str,
    err: &'a mut Option<FormatError>,
    /// The `hermetic` member of a shard index: version and tree only.
    index: bool,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = RawDoc<'de>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<RawDoc<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = RawDoc<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the hermetic document object")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<RawDoc<'de>, A::Error> {
        let file = self.file;
        let mut doc = RawDoc {
            version: 0,
            digests: None,
            tree: None,
        };
        let mut seen = std::collections::HashSet::new();
        let fail = |err: &mut Option<FormatError>, place: &str, d: String| {
            *err = Some(FormatError::tree(file, place, d.clone()));
            <A::Error as de::Error>::custom(d)
        };
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(fail(
                    self.err,
                    HERMETIC_KEY,
                    format!("duplicate member `{key}`"),
                ));
            }
            if self.index && key.starts_with("digest") {
                return Err(fail(
                    self.err,
                    "hermetic",
                    format!("unexpected member `{key}`"),
                ));
            }
            match key.as_str() {
                "version" => {
                    doc.version = map.next_value()?;
                    if !(FORMAT_VERSION..=ATTRS_VERSION).contains(&doc.version) {
                        return Err(fail(
                            self.err,
                            "version",
                            format!(
                                "version {} is not supported (this reader knows versions {FORMAT_VERSION} to {ATTRS_VERSION})",
                                doc.version
                            ),
                        ));
                    }
                }
                "digest" => {
                    let alg: String = map.next_value()?;
                    if alg != DIGEST_ALGORITHM {
                        return Err(fail(
                            self.err,
                            "digest",
                            format!(
                                "unknown digest algorithm `{alg}` (expected {DIGEST_ALGORITHM})"
                            ),
                        ));
                    }
                }
                "digests" => doc.digests = Some(map.next_value()?),
                "tree" => doc.tree = Some(map.next_value()?),
                other => {
                    return Err(fail(
                        self.err,
                        HERMETIC_KEY,
                        format!("unknown member `{other}`"),
                    ))
                }
            }
        }
        let required: &[&str] = if self.index {
            &["version", "tree"]
        } else {
            &["version", "digest", "digests"]
        };
        for &required in required {
            if !seen.contains(required) {
                return Err(fail(
                    self.err,
                    HERMETIC_KEY,
                    format!("missing member `{required}`"),
                ));
            }
        }
        Ok(doc)
    }
}

/// Reads `digests` into one digest per entry, in entry order.
pub(super) fn parse_digests(
    json: &str,
    file: &str,
    entries: &[EntryInfo],
    by_name: &HashMap<String, usize>,
) -> Result<Vec<u128>> {
    let mut de = serde_json::Deserializer::from_str(json);
    let mut bad = None;
    let d = DigestsSeed(by_name, &mut bad).deserialize(&mut de);
    if let Some((place, detail)) = bad {
        return Err(FormatError::tree(file, place, detail));
    }
    let d = d.map_err(|e| FormatError::tree(file, "digests", e.to_string()))?;
    if let Some(i) = d.iter().position(Option::is_none) {
        return Err(FormatError::tree(
            file,
            "digests",
            format!("no digest for entry `{}`", entries[i].name),
        ));
    }
    Ok(d.into_iter().flatten().collect())
}

/// The `digests` object, read straight into one slot per entry: no
/// per-digest allocation, and an unknown, repeated or malformed digest is
/// caught as it is read. Holds the entries by name, and where a
/// (place, detail) error goes.
pub(super) struct DigestsSeed<'a, 'b>(&'a HashMap<String, usize>, &'b mut Option<(String, String)>);

impl<'de> DeserializeSeed<'de> for DigestsSeed<'_, '_> {
    type Value = Vec<Option<u128>>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DigestsSeed<'_, '_> {
    type Value = Vec<Option<u128>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of entry name -> digest")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Self::Value, A::Error> {
        let DigestsSeed(by_name, bad) = self;
        let mut out = vec![None; by_name.len()];
        let mut fail = |place: String, detail: String| {
            *bad = Some((place, detail.clone()));
            <A::Error as de::Error>::custom(detail)
        };
        while let Some(crate::st_header::Key(name)) = m.next_key()? {
            let crate::st_header::Key(value) = m.next_value()?;
            let Some(&i) = by_name.get(&*name) else {
                return Err(fail(
                    "digests".into(),
                    format!("digest for `{name}`, which is not an entry"),
                ));
            };
            if out[i].is_some() {
                return Err(fail(
                    "digests".into(),
                    format!("duplicate digest for `{name}`"),
                ));
            }
            match parse_digest(&value) {
                Some(d) => out[i] = Some(d),
                None => {
                    return Err(fail(
                        format!("digests[{name:?}]"),
                        "a digest must be 32 lowercase hex digits".into(),
                    ))
                }
            }
        }
        Ok(out)
    }
}
