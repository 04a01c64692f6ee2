//! Typed values: class records through the helpers' class info (asked
//! once per class), enums, callables by reference, names checked as the
//! format requires, standard-library values and text.

use super::*;

impl<'py> Encoder<'py> {
    /// Calls a helper, turning its exception into a save error at this place.
    pub(super) fn helper(
        &self,
        name: &str,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.helpers
            .call_method1(name, (obj,))
            .map_err(|e| self.fail(e.value(self.py).to_string()))
    }

    /// The cached storage rule for instances of `t`.
    pub(super) fn class_info(&mut self, t: &Bound<'py, PyType>) -> PyResult<usize> {
        let key = t.as_ptr() as usize;
        if let Some((_, i)) = self.classes.get(&key) {
            return Ok(*i);
        }
        let info = self.helper("_class_info", t.as_any())?;
        let info = if info.is_none() {
            ClassInfo::Unsupported
        } else {
            let kind: String = info.get_item(0)?.extract()?;
            match kind.as_str() {
                "object" => {
                    let name: String = info.get_item(1)?.extract()?;
                    self.check_name(&name, false)?;
                    let mut fields = Vec::new();
                    let mut attrs = Vec::new();
                    for f in info.get_item(2)?.try_iter()? {
                        let f = f?;
                        let s: String = f.extract()?;
                        if !is_identifier(&s) || fields.contains(&s) {
                            return Err(self.fail(format!(
                                "{name}: field {s:?} is not an identifier, or appears twice"
                            )));
                        }
                        fields.push(s);
                        attrs.push(f.downcast_into::<PyString>()?);
                    }
                    ClassInfo::Object {
                        shape: Shape::new(name, fields),
                        attrs,
                    }
                }
                "enum" => {
                    let name: String = info.get_item(1)?.extract()?;
                    self.check_name(&name, false)?;
                    ClassInfo::Enum {
                        name: Arc::from(name),
                    }
                }
                "ref" => ClassInfo::ByRef,
                "partial" => ClassInfo::Partial,
                "datetime" => ClassInfo::Datetime,
                "date" => ClassInfo::Date,
                "timedelta" => ClassInfo::Timedelta,
                "path" => ClassInfo::Path,
                "uuid" => ClassInfo::Uuid,
                "decimal" => ClassInfo::Decimal,
                "time" => ClassInfo::Time,
                "timezone" => ClassInfo::Timezone,
                "pure_posix_path" => ClassInfo::PurePath(false),
                "pure_windows_path" => ClassInfo::PurePath(true),
                other => return Err(self.fail(format!("unknown class kind {other:?}"))),
            }
        };
        self.class_infos.push(Rc::new(info));
        let i = self.class_infos.len() - 1;
        self.classes.insert(key, (t.clone(), i));
        Ok(i)
    }

    pub(super) fn check_name(&self, name: &str, importable: bool) -> PyResult<()> {
        let ok = if importable {
            is_import_name(name)
        } else {
            is_class_name(name)
        };
        if ok {
            Ok(())
        } else {
            Err(self.fail(format!(
                "{name:?} is not a `module:qualname` of identifiers, so it cannot be recorded"
            )))
        }
    }

    /// The `module:qualname` of a function or class stored by reference.
    pub(super) fn callable_name(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<String> {
        let key = obj.as_ptr() as usize;
        if let Some((_, name)) = self.callables.get(&key) {
            return Ok(name.clone());
        }
        let name: String = self.helper("_callable_name", obj)?.extract()?;
        self.check_name(&name, true)?;
        self.callables.insert(key, (obj.clone(), name.clone()));
        Ok(name)
    }

    /// Reads the text form of a standard-library value and checks it.
    pub(super) fn text(
        &self,
        obj: &Bound<'py, PyAny>,
        helper: Option<&str>,
        ok: fn(&str) -> bool,
        what: &str,
    ) -> PyResult<String> {
        let s = match helper {
            Some(h) => self.helper(h, obj)?,
            None => obj.str()?.into_any(),
        };
        let s: String = s
            .downcast::<PyString>()?
            .to_str()
            .map_err(|_| self.fail(format!("the {what} is not valid Unicode")))?
            .to_string();
        if !ok(&s) {
            return Err(self.fail(format!("{what} {s:?} has no representation in the format")));
        }
        Ok(s)
    }

    /// Version-2 values: class records, enums, callables, partials and
    /// standard-library values. `None` if `obj` is none of those.
    pub(super) fn typed(
        &mut self,
        obj: &Bound<'py, PyAny>,
        t: &Bound<'py, PyType>,
        depth: usize,
    ) -> PyResult<Option<NodeId>> {
        let i = self.class_info(t)?;
        let info = self.class_infos[i].clone();
        let node = match &*info {
            ClassInfo::Unsupported => return Ok(None),
            ClassInfo::Object { shape, attrs } => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.fail(format!("containers nest deeper than {MAX_DEPTH} levels"))
                    );
                }
                if let Err(r) = self.memoize(obj, true)? {
                    return Ok(Some(r));
                }
                let mut values = Vec::with_capacity(attrs.len());
                for (f, attr) in shape.fields.iter().zip(attrs) {
                    let value = obj.getattr(attr).map_err(|e| {
                        self.fail(format!(
                            "{}: cannot read field `{f}`: {}",
                            shape.class,
                            e.value(self.py)
                        ))
                    })?;
                    self.path.push(PathPart::Key(f.clone()));
                    let r = self.walk(&value, depth + 1);
                    self.path.pop();
                    values.push(r?);
                }
                self.close(obj);
                Node::Object {
                    shape: shape.clone(),
                    values,
                }
            }
            ClassInfo::Enum { name } => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.fail(format!("containers nest deeper than {MAX_DEPTH} levels"))
                    );
                }
                let class = name.clone();
                let value = obj.getattr(intern!(self.py, "_value_"))?;
                let value = self.walk(&value, depth + 1)?;
                Node::Enum { class, value }
            }
            ClassInfo::ByRef => Node::Callable(self.callable_name(obj)?),
            ClassInfo::Partial => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.fail(format!("containers nest deeper than {MAX_DEPTH} levels"))
                    );
                }
                // Checks the partial has nothing but a function, args and keywords.
                self.helper("_check_partial", obj)?;
                let func = self.callable_name(&obj.getattr(intern!(self.py, "func"))?)?;
                if let Err(r) = self.memoize(obj, true)? {
                    return Ok(Some(r));
                }
                let args = obj.getattr(intern!(self.py, "args"))?;
                let mut arg_ids = Vec::new();
                for (i, a) in args.try_iter()?.enumerate() {
                    self.path.push(PathPart::Other(format!("args[{i}]")));
                    let r = self.walk(&a?, depth + 1);
                    self.path.pop();
                    arg_ids.push(r?);
                }
                let kw = obj.getattr(intern!(self.py, "keywords"))?;
                let kw = kw.downcast::<PyDict>()?;
                let mut keywords = Vec::with_capacity(kw.len());
                for (k, v) in kw.iter() {
                    let k: String = k.extract()?;
                    if !is_identifier(&k) {
                        return Err(
                            self.fail(format!("partial keyword {k:?} is not an identifier"))
                        );
                    }
                    self.path.push(PathPart::Key(k.clone()));
                    let r = self.walk(&v, depth + 1);
                    self.path.pop();
                    keywords.push((k, r?));
                }
                self.close(obj);
                Node::Partial {
                    func,
                    args: arg_ids,
                    keywords,
                }
            }
            ClassInfo::Datetime => {
                Node::Datetime(self.text(obj, Some("_datetime_text"), is_datetime, "datetime")?)
            }
            ClassInfo::Date => Node::Date(self.text(obj, None, is_date, "date")?),
            ClassInfo::Timedelta => {
                let (days, seconds, microseconds): (i64, i64, i64) = (
                    obj.getattr(intern!(self.py, "days"))?.extract()?,
                    obj.getattr(intern!(self.py, "seconds"))?.extract()?,
                    obj.getattr(intern!(self.py, "microseconds"))?.extract()?,
                );
                Node::Timedelta {
                    days,
                    seconds,
                    microseconds,
                }
            }
            ClassInfo::Path => Node::Path(self.text(obj, None, |_| true, "path")?),
            ClassInfo::PurePath(windows) => Node::PurePath {
                windows: *windows,
                text: self.text(obj, None, |_| true, "path")?,
            },
            ClassInfo::Time => {
                Node::Time(self.text(obj, Some("_time_text"), hermetic_format::is_time, "time")?)
            }
            ClassInfo::Timezone => {
                let (offset, name): (String, Option<String>) =
                    self.helper("_timezone_info", obj)?.extract()?;
                if !hermetic_format::is_utc_offset(&offset)
                    || name.as_ref().is_some_and(|n| n.len() > 255)
                {
                    return Err(self.fail(format!(
                        "timezone {offset:?} {name:?} has no representation in the format"
                    )));
                }
                Node::Timezone { offset, name }
            }
            ClassInfo::Uuid => Node::Uuid(self.text(obj, None, is_uuid, "UUID")?),
            ClassInfo::Decimal => Node::Decimal(self.text(obj, None, is_decimal, "Decimal")?),
        };
        Ok(Some(self.push(node)))
    }

    /// `argparse.Namespace`, `defaultdict`, `Counter`, `deque`, `slice` and
    /// `range` (exact types; SPEC 10.6), or `None` for anything else.
    pub(super) fn stdlib(
        &mut self,
        obj: &Bound<'py, PyAny>,
        t: &Bound<'py, PyType>,
        depth: usize,
    ) -> PyResult<Option<NodeId>> {
        let py = self.py;
        let ty = &self.types;
        let mutable =
            t.is(&ty.namespace) || t.is(&ty.defaultdict) || t.is(&ty.counter) || t.is(&ty.deque);
        if t.is(&ty.range) {
            let part = |n: &str| -> PyResult<i64> {
                obj.getattr(n)?.extract::<i64>().map_err(|_| {
                    self.fail("a range whose bounds do not fit in 64 bits cannot be stored")
                })
            };
            let r = [part("start")?, part("stop")?, part("step")?];
            return Ok(Some(self.push(Node::Range(r))));
        }
        if t.is(&ty.slice) {
            let mut parts = [0; 3];
            for (i, n) in ["start", "stop", "step"].iter().enumerate() {
                self.path.push(PathPart::Other(format!(".{n}")));
                let r = self.walk(&obj.getattr(*n)?, depth + 1);
                self.path.pop();
                parts[i] = r?;
            }
            return Ok(Some(self.push(Node::Slice(parts))));
        }
        if !mutable {
            return Ok(None);
        }
        if depth >= MAX_DEPTH {
            return Err(self.fail(format!("containers nest deeper than {MAX_DEPTH} levels")));
        }
        if let Err(r) = self.memoize(obj, false)? {
            return Ok(Some(r));
        }
        let node = if t.is(&self.types.namespace) {
            let vars = obj.getattr(intern!(py, "__dict__"))?;
            let vars = vars.downcast::<PyDict>()?;
            let mut attrs = Vec::with_capacity(vars.len());
            for (k, v) in vars.iter() {
                let name = match k.extract::<String>() {
                    Ok(n) if is_identifier(&n) && !n.starts_with("__") => n,
                    _ => {
                        return Err(self.fail(format!(
                            "the Namespace attribute {} is not an identifier; store vars(args) \
                             (a dict) instead",
                            k.repr()?
                        )))
                    }
                };
                self.path.push(PathPart::Other(format!(".{name}")));
                let r = self.walk(&v, depth + 1);
                self.path.pop();
                attrs.push((name, r?));
            }
            Node::Namespace(attrs)
        } else if t.is(&self.types.deque) {
            let maxlen = obj.getattr(intern!(py, "maxlen"))?;
            let maxlen = if maxlen.is_none() {
                None
            } else {
                Some(maxlen.extract::<u64>()?)
            };
            let items = self.walk_items(obj, depth + 1)?;
            Node::Deque { maxlen, items }
        } else {
            let factory = if t.is(&self.types.defaultdict) {
                let f = obj.getattr(intern!(py, "default_factory"))?;
                if f.is_none() {
                    Some(None)
                } else {
                    let name = self.callable_name(&f).ok();
                    match name.filter(|n| DEFAULT_FACTORIES.contains(&n.as_str())) {
                        Some(n) => Some(Some(n)),
                        None => {
                            return Err(self.fail(format!(
                                "a defaultdict whose factory is {}: only builtin types ({}) \
                                 are stored, since loading one must call nothing else; store \
                                 dict(d) instead",
                                f.repr()?,
                                DEFAULT_FACTORIES.join(", ")
                            )))
                        }
                    }
                }
            } else {
                None
            };
            let dict = obj.downcast::<PyDict>()?;
            let mut pairs = Vec::with_capacity(dict.len());
            for (k, v) in dict.iter() {
                let part = self.key_part(&k)?;
                self.path.push(PathPart::Other("<key>".into()));
                let kid = self.walk(&k, depth + 1);
                self.path.pop();
                let kid = kid?;
                self.path.push(part);
                let vid = self.walk(&v, depth + 1);
                self.path.pop();
                pairs.push((kid, vid?));
            }
            match factory {
                Some(factory) => Node::DefaultDict { factory, pairs },
                None => Node::Counter(pairs),
            }
        };
        self.close(obj);
        Ok(Some(self.push(node)))
    }

    /// An OrderedDict's instance attributes (torch keeps a state dict's
    /// `_metadata` version table there): a `$attrs` node around it, or an
    /// error naming any attribute that cannot be stored; never dropped.
    pub(super) fn odict_attrs(
        &mut self,
        obj: &Bound<'py, PyAny>,
        id: NodeId,
        depth: usize,
    ) -> PyResult<NodeId> {
        let Ok(vars) = obj.getattr(intern!(self.py, "__dict__")) else {
            return Ok(id);
        };
        let vars = vars.downcast::<PyDict>()?;
        if vars.is_empty() {
            return Ok(id);
        }
        let mut attrs = Vec::with_capacity(vars.len());
        for (k, v) in vars.iter() {
            let name: String = match k.extract::<String>() {
                Ok(n) if is_identifier(&n) && !n.starts_with("__") => n,
                _ => {
                    return Err(self.fail(format!(
                        "the OrderedDict has an attribute {} that cannot be stored \
                         (an identifier not starting with `__` is needed)",
                        k.repr()?
                    )))
                }
            };
            self.path.push(PathPart::Other(format!(".{name}")));
            let r = self.walk(&v, depth + 1);
            self.path.pop();
            attrs.push((name, r?));
        }
        Ok(self.push(Node::Attrs { target: id, attrs }))
    }
}
