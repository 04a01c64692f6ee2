//! `.metadata` read with the safe evaluator: `Metadata`, its items and
//! storage entries checked field by field against DCP's classes.

use super::*;

/// Reads `.metadata` (named `file` in messages) without running it.
pub fn parse_metadata(data: &[u8], file: &str) -> Result<Metadata, String> {
    let opts = LoadOptions {
        mode: Mode::Strict,
        flavor: Flavor::Any,
        policy: Policy::builtin(),
        limits: Limits::default(),
        allowed: Allowed::none(),
        encoding: None,
        companions: None,
    };
    let loaded = eval::load(data, file, &opts).map_err(|e| e.to_string())?;
    Reader {
        arena: &loaded.arena,
    }
    .metadata(loaded.root)
}

struct Reader<'r, 'a> {
    arena: &'r eval::Arena<'a>,
}

type Fields = Vec<(String, Id)>;

impl Reader<'_, '_> {
    fn get(&self, id: Id) -> &Value<'_> {
        self.arena.get(id)
    }

    /// An object of `module.name` made as the writer makes it: NEWOBJ with
    /// no arguments, nothing but one BUILD.
    fn object(&self, id: Id, module: &str, name: &str) -> Result<Option<Id>, String> {
        let Value::Object(o) = self.get(id) else {
            return Err(format!(
                "{} where a {name} belongs",
                self.get(id).describe()
            ));
        };
        let class_ok = matches!(self.get(o.class), Value::Global(g)
            if matches!(&**g, eval::Global::Foreign { module: m, name: n } if m == module && n == name));
        let no_args = o
            .args
            .is_none_or(|a| matches!(self.get(a), Value::Tuple(t) if t.is_empty()));
        if !class_ok
            || o.made != eval::Made::New
            || !no_args
            || o.kwargs.is_some()
            || !o.list_items.is_empty()
            || !o.dict_items.is_empty()
        {
            return Err(format!(
                "{} is not a {name} as FileSystemWriter pickles it",
                self.get(o.class).describe()
            ));
        }
        Ok(o.state)
    }

    /// The field dict of a dataclass object (the last value of a repeated key).
    fn fields(&self, id: Id, module: &str, name: &str) -> Result<Fields, String> {
        let Some(state) = self.object(id, module, name)? else {
            return Ok(Vec::new());
        };
        let Value::Dict(d) = self.get(state) else {
            return Err(format!("the state of a {name} is not a dict"));
        };
        let mut out: Fields = Vec::new();
        for &(k, v) in &d.items {
            let key = self
                .str(k)
                .map_err(|_| format!("a {name} field name is not a str"))?;
            match out.iter_mut().find(|(n, _)| n == key) {
                Some(slot) => slot.1 = v,
                None => out.push((key.to_string(), v)),
            }
        }
        Ok(out)
    }

    fn str(&self, id: Id) -> Result<&str, String> {
        match self.get(id) {
            Value::Str(s) => s
                .as_str()
                .ok_or_else(|| "a str that is not UTF-8".to_string()),
            v => Err(format!("{} where a str belongs", v.describe())),
        }
    }

    fn uint(&self, id: Id, what: &str) -> Result<u64, String> {
        match self.get(id) {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            v => Err(format!("{what} is {}, not a size", v.describe())),
        }
    }

    fn size(&self, id: Id, what: &str) -> Result<Vec<u64>, String> {
        match self.get(id) {
            Value::TorchSize(d) if d.iter().all(|&x| x >= 0) => {
                Ok(d.iter().map(|&x| x as u64).collect())
            }
            v => Err(format!("{what} is {}, not a torch.Size", v.describe())),
        }
    }

    fn field(fields: &Fields, name: &str) -> Option<Id> {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    fn known(fields: &Fields, class: &str, allowed: &[&str]) -> Result<(), String> {
        match fields.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("a {class} has a field {n:?} torch's has not")),
            None => Ok(()),
        }
    }

    fn metadata(&self, root: Id) -> Result<Metadata, String> {
        let f = self.fields(root, MD, "Metadata")?;
        Self::known(
            &f,
            "Metadata",
            &[
                "state_dict_metadata",
                "planner_data",
                "storage_data",
                "storage_meta",
                "version",
            ],
        )?;
        let sdm = Self::field(&f, "state_dict_metadata").ok_or("no state_dict_metadata")?;
        let Value::Dict(sdm) = self.get(sdm) else {
            return Err("state_dict_metadata is not a dict".into());
        };
        let mut items: Vec<(String, Item)> = Vec::new();
        for &(k, v) in &sdm.items {
            let fqn = self.str(k)?.to_string();
            let item = self.item(v).map_err(|e| format!("{fqn}: {e}"))?;
            match items.iter_mut().find(|(n, _)| *n == fqn) {
                Some(slot) => slot.1 = item,
                None => items.push((fqn, item)),
            }
        }
        let sd = Self::field(&f, "storage_data")
            .ok_or("no storage_data (not written by FileSystemWriter)")?;
        let Value::Dict(sd) = self.get(sd) else {
            return Err("storage_data is not a dict (not written by FileSystemWriter)".into());
        };
        let mut storage: Vec<StorageEntry> = Vec::new();
        for &(k, v) in &sd.items {
            let e = self.storage_entry(k, v)?;
            // A dict keyed by MetadataIndex: equal (fqn, offset) keys are one.
            match storage
                .iter_mut()
                .find(|s| s.fqn == e.fqn && s.chunk == e.chunk)
            {
                Some(slot) => *slot = e,
                None => storage.push(e),
            }
        }
        let mut paths = Vec::new();
        if let Some(pd) = Self::field(&f, "planner_data") {
            match self.get(pd) {
                Value::None => {}
                Value::Dict(d) => {
                    for &(k, v) in &d.items {
                        let fqn = self.str(k)?.to_string();
                        let path = self
                            .path(v)
                            .map_err(|e| format!("planner_data {fqn}: {e}"))?;
                        match paths.iter_mut().find(|(n, _): &&mut (String, _)| *n == fqn) {
                            Some(slot) => slot.1 = path,
                            None => paths.push((fqn, path)),
                        }
                    }
                }
                v => return Err(format!("planner_data is {}", v.describe())),
            }
        }
        let version = match Self::field(&f, "version").map(|v| self.get(v)) {
            None | Some(Value::None) => None,
            Some(Value::Str(s)) => Some(s.lossy().into_owned()),
            Some(v) => return Err(format!("version is {}", v.describe())),
        };
        if let Some(m) = Self::field(&f, "storage_meta") {
            if !matches!(self.get(m), Value::None) {
                let sm = self.fields(m, MD, "StorageMeta")?;
                Self::known(
                    &sm,
                    "StorageMeta",
                    &["checkpoint_id", "save_id", "load_id", "modules"],
                )?;
            }
        }
        Ok(Metadata {
            items,
            storage,
            paths,
            version,
        })
    }

    fn item(&self, id: Id) -> Result<Item, String> {
        if let Ok(f) = self.fields(id, MD, "BytesStorageMetadata") {
            Self::known(&f, "BytesStorageMetadata", &[])?;
            return Ok(Item::Bytes);
        }
        let f = self.fields(id, MD, "TensorStorageMetadata")?;
        Self::known(
            &f,
            "TensorStorageMetadata",
            &["properties", "size", "chunks"],
        )?;
        let props = Self::field(&f, "properties").ok_or("no properties")?;
        let state = self
            .object(props, MD, "TensorProperties")?
            .ok_or("TensorProperties without a state")?;
        // __getstate__: (dtype, layout, requires_grad, memory format
        // encoding, pin_memory[, strides]).
        let dtype = match self.get(state) {
            Value::Tuple(t) if t.len() == 5 || t.len() == 6 => match self.get(t[0]) {
                Value::TorchDtype(d) => *d,
                v => return Err(format!("the dtype is {}", v.describe())),
            },
            _ => return Err("the TensorProperties state is not a 5- or 6-tuple".into()),
        };
        let size = self.size(Self::field(&f, "size").ok_or("no size")?, "size")?;
        let chunks_id = Self::field(&f, "chunks").ok_or("no chunks")?;
        let Value::List(list) = self.get(chunks_id) else {
            return Err("chunks are not a list".into());
        };
        let mut chunks = Vec::new();
        for &c in list {
            let cf = self.fields(c, MD, "ChunkStorageMetadata")?;
            Self::known(&cf, "ChunkStorageMetadata", &["offsets", "sizes"])?;
            let offsets = self.size(
                Self::field(&cf, "offsets").ok_or("no offsets")?,
                "chunk offsets",
            )?;
            let sizes = self.size(Self::field(&cf, "sizes").ok_or("no sizes")?, "chunk sizes")?;
            let inside = offsets.len() == size.len()
                && sizes.len() == size.len()
                && offsets
                    .iter()
                    .zip(&sizes)
                    .zip(&size)
                    .all(|((&o, &s), &d)| o.checked_add(s).is_some_and(|e| e <= d));
            if !inside {
                return Err("a chunk lies outside the tensor".into());
            }
            chunks.push(Chunk { offsets, sizes });
        }
        Ok(Item::Tensor {
            dtype,
            size,
            chunks,
        })
    }

    fn storage_entry(&self, key: Id, value: Id) -> Result<StorageEntry, String> {
        let k = self.fields(key, MD, "MetadataIndex")?;
        Self::known(&k, "MetadataIndex", &["fqn", "offset", "index"])?;
        let fqn = self.str(Self::field(&k, "fqn").ok_or("a MetadataIndex without fqn")?)?;
        let chunk = match Self::field(&k, "offset").map(|o| (o, self.get(o))) {
            None | Some((_, Value::None)) => None,
            Some((o, _)) => Some(self.size(o, "an index offset")?),
        };
        let v = self.fields(value, FS, "_StorageInfo")?;
        Self::known(
            &v,
            "_StorageInfo",
            &["relative_path", "offset", "length", "transform_descriptors"],
        )?;
        let file = self.str(Self::field(&v, "relative_path").ok_or("no relative_path")?)?;
        let offset = self.uint(Self::field(&v, "offset").ok_or("no offset")?, "offset")?;
        let length = self.uint(Self::field(&v, "length").ok_or("no length")?, "length")?;
        let mut transforms = Vec::new();
        if let Some(t) = Self::field(&v, "transform_descriptors") {
            match self.get(t) {
                Value::None => {}
                Value::List(l) | Value::Tuple(l) => {
                    for &s in l {
                        transforms.push(self.str(s)?.to_string());
                    }
                }
                v => return Err(format!("transform_descriptors are {}", v.describe())),
            }
        }
        Ok(StorageEntry {
            fqn: fqn.to_string(),
            chunk,
            file: file.to_string(),
            offset,
            length,
            transforms,
        })
    }

    fn path(&self, id: Id) -> Result<Vec<PathKey>, String> {
        let (Value::Tuple(t) | Value::List(t)) = self.get(id) else {
            return Err(format!("{}, not a tuple", self.get(id).describe()));
        };
        t.iter()
            .map(|&p| match self.get(p) {
                Value::Str(s) => Ok(PathKey::Key(s.lossy().into_owned())),
                Value::Int(i) if *i >= 0 => Ok(PathKey::Index(*i as u64)),
                v => Err(format!("a path step is {}", v.describe())),
            })
            .collect()
    }
}
