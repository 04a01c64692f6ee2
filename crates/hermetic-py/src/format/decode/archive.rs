//! The `Archive` class Python sees: its listing, verification, and the
//! builds of a whole tree, a path in it, or one entry.

use super::*;

#[pymethods]
impl PyArchive {
    /// The data files, in the order `file` numbers them.
    fn paths(&self) -> Vec<String> {
        self.inner
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect()
    }

    /// `__metadata__` (or the index's metadata) without hermetic's own key.
    fn metadata(&self) -> BTreeMap<String, String> {
        self.inner.metadata()
    }

    /// Whether the file carries a hermetic tree.
    fn has_tree(&self) -> bool {
        self.inner.has_tree()
    }

    /// Whether the tree holds class records, enums, callables or
    /// standard-library values (docs/SPEC.md, section 10).
    fn is_typed(&self) -> bool {
        self.typed
    }

    /// (name, safetensors dtype, shape, file, start, nbytes) of every entry, in file order.
    #[allow(clippy::type_complexity)]
    fn entries(&self) -> Vec<(String, String, Vec<u64>, usize, u64, u64)> {
        self.inner
            .files
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                f.header.entries.iter().map(move |e| {
                    (
                        e.name.clone(),
                        e.st_dtype.to_string(),
                        e.shape.clone(),
                        i,
                        e.start,
                        e.nbytes,
                    )
                })
            })
            .collect()
    }

    /// Checks digests (of the named entries, or all); raises FormatError on a mismatch.
    #[pyo3(signature = (names=None))]
    fn verify(&self, py: Python<'_>, names: Option<Vec<String>>) -> PyResult<()> {
        py.allow_threads(|| {
            let only: Option<Vec<&str>> = names
                .as_ref()
                .map(|n| n.iter().map(String::as_str).collect());
            self.inner.verify(only.as_deref())
        })
        .map_err(format_error)
    }

    /// Builds the subtree at key path `path`, making tensors with `maker`
    /// and class records, enums and callables with `hooks`.
    #[pyo3(signature = (path, maker, hooks=None))]
    fn build<'py>(
        &self,
        py: Python<'py>,
        path: Vec<Bound<'py, PyAny>>,
        maker: Bound<'py, PyAny>,
        hooks: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let tree = self.inner.tree();
        let direct = match &hooks {
            Some(h) => match (h.getattr_opt("record_class")?, h.getattr_opt("enum_class")?) {
                (Some(r), Some(e)) if !r.is_none() && !e.is_none() => Some((r, e)),
                _ => None,
            },
            None => None,
        };
        let shared_ids = match &hooks {
            Some(h) => match h.getattr_opt("shared_ids")? {
                Some(s) if !s.is_none() => Some(s.downcast_into::<PySet>()?),
                _ => None,
            },
            None => None,
        };
        let mut b = self.builder(py, tree, &maker, hooks);
        b.direct = direct;
        b.shared_ids = shared_ids;
        b.memo = vec![None; tree.memo.len()];
        let id = b.navigate(&path)?;
        b.build(id)
    }

    /// The classes, enums and callables the subtree at `path` names:
    /// (kind, `module:qualname`, count, field names of the first record).
    #[allow(clippy::type_complexity)]
    fn named_refs<'py>(
        &self,
        py: Python<'py>,
        path: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<(&'static str, String, usize, Vec<String>)>> {
        let tree = self.inner.tree();
        let maker = py.None().into_bound(py);
        let mut b = self.builder(py, tree, &maker, None);
        b.memo = vec![None; tree.memo.len()];
        let id = b.navigate(&path)?;
        Ok(tree
            .named_refs(id)
            .into_iter()
            .map(|r| (r.kind.as_str(), r.name, r.count, r.fields))
            .collect())
    }

    /// The whole entry `name` as one tensor (its own dtype and shape).
    fn entry_tensor<'py>(
        &self,
        py: Python<'py>,
        name: String,
        maker: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.inner.locate(&name).is_none() {
            return Err(PyKeyError::new_err((name,)));
        }
        let kind = match self.inner.metadata().get("format").map(String::as_str) {
            Some("np") | Some("numpy") => TensorKind::Numpy,
            _ => TensorKind::Torch,
        };
        let t = TensorRef {
            kind,
            entry: name,
            view: None,
            requires_grad: None,
            np_dtype: None,
            device: None,
            base: None,
        };
        let tree = self.inner.tree();
        let mut b = self.builder(py, tree, &maker, None);
        b.path = vec![Seg::Text(format!("[{:?}]", t.entry))];
        b.tensor(&t).map_err(|e| b.wrap(e))
    }
}

impl PyArchive {
    fn builder<'a, 'py>(
        &'a self,
        py: Python<'py>,
        tree: &'a Tree,
        maker: &'a Bound<'py, PyAny>,
        hooks: Option<Bound<'py, PyAny>>,
    ) -> Builder<'a, 'py> {
        Builder {
            py,
            ar: &self.inner,
            tree,
            memo_of: &self.memo_of,
            maker,
            whole: maker
                .getattr(intern!(py, "make_whole"))
                .ok()
                .filter(|w| !w.is_none()),
            helpers: None,
            memo: Vec::new(),
            path: Vec::new(),
            hooks,
            direct: None,
            shared: &self.shared,
            shared_ids: None,
            names: HashMap::new(),
            shape_names: HashMap::new(),
        }
    }
}
