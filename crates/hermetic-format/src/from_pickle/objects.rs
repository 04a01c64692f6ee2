//! Objects: standard-library values, plain records, attribute state, and
//! in salvage mode modules as their state dicts and foreign objects as
//! dicts.

use super::*;

impl<'l, 'a> Converter<'l, 'a> {
    /// The attributes a BUILD state gives an OrderedDict (a dict, or a
    /// `(dict, slots)` pair without slots), by name.
    pub(super) fn attr_state(&self, state: Id) -> Res<Vec<(String, Id)>> {
        let a = &self.l.arena;
        let dict = match a.get(state) {
            Value::Tuple(t) if t.len() == 2 => {
                let slots_empty = match a.get(t[1]) {
                    Value::None => true,
                    Value::Dict(d) => d.items.is_empty(),
                    _ => false,
                };
                if !slots_empty {
                    return self.fail("an OrderedDict with slot attributes cannot be stored");
                }
                t[0]
            }
            _ => state,
        };
        let items = match a.get(dict) {
            Value::None => return Ok(Vec::new()),
            Value::Dict(d) => a.dict_items(&d.items),
            other => {
                return self.fail(format!(
                    "an OrderedDict whose attributes are {}",
                    other.describe()
                ))
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            match a.str_of(k) {
                Some(n) if crate::is_identifier(n) && !n.starts_with("__") => {
                    out.push((n.to_string(), v))
                }
                _ => {
                    return self.fail(format!(
                        "an OrderedDict attribute named {} cannot be stored",
                        a.get(k).describe()
                    ))
                }
            }
        }
        Ok(out)
    }

    /// `argparse.Namespace`, `collections.defaultdict` or `collections.deque`:
    /// standard-library classes the format has nodes for (SPEC 10.6).
    pub(super) fn stdlib_class(&self, class: Id) -> Option<&'static str> {
        match self.l.arena.get(class) {
            Value::Global(g) => match &**g {
                Global::Foreign { module, name } => match (module.as_str(), name.as_str()) {
                    ("argparse", "Namespace") => Some("namespace"),
                    ("collections", "defaultdict") => Some("defaultdict"),
                    ("collections", "deque") => Some("deque"),
                    _ => None,
                },
                Global::Known(_) => None,
            },
            _ => None,
        }
    }

    /// One of [`Converter::stdlib_class`]'s objects as its node, from what
    /// its `__reduce__` gave the unpickler (anything else is an error).
    pub(super) fn stdlib_object(&mut self, o: &eval::Object, depth: usize) -> Res<Node> {
        let kind = self.stdlib_class(o.class).unwrap_or_default();
        let a = &self.l.arena;
        let args: Vec<Id> = o.args.and_then(|x| a.seq_of(x)).unwrap_or(&[]).to_vec();
        let no_kwargs = o
            .kwargs
            .is_none_or(|k| matches!(a.get(k), Value::Dict(d) if d.items.is_empty()));
        let odd =
            |what: &str| format!("{what} rebuilt from arguments hermetic does not read as one");
        if !no_kwargs {
            return self.fail(odd(kind));
        }
        match kind {
            "namespace" => {
                if !args.is_empty() || !o.list_items.is_empty() || !o.dict_items.is_empty() {
                    return self.fail(odd("an argparse.Namespace"));
                }
                let attrs = match o.state {
                    Some(s) => self.attr_state(s)?,
                    None => Vec::new(),
                };
                let mut out = Vec::with_capacity(attrs.len());
                for (name, v) in attrs {
                    self.path.push(PathPart::Other(format!(".{name}")));
                    let n = self.walk(v, depth + 1);
                    self.path.pop();
                    out.push((name, n?));
                }
                Ok(Node::Namespace(out))
            }
            "defaultdict" => {
                let state_empty = o.state.is_none_or(|s| matches!(a.get(s), Value::None));
                if args.len() > 1 || !o.list_items.is_empty() || !state_empty {
                    return self.fail(odd("a collections.defaultdict"));
                }
                let factory = match args.first().map(|&f| a.get(f)) {
                    None | Some(Value::None) => None,
                    Some(Value::Global(g)) => {
                        let name = match &**g {
                            Global::Known(k) => {
                                let q = k.qualname();
                                match q.rsplit_once('.') {
                                    Some((m, n)) => format!("{m}:{n}"),
                                    None => q,
                                }
                            }
                            Global::Foreign { module, name } => format!("{module}:{name}"),
                        };
                        if !crate::DEFAULT_FACTORIES.contains(&name.as_str()) {
                            return self.fail(format!(
                                "a defaultdict whose factory is {name}: only builtin types are stored"
                            ));
                        }
                        Some(name)
                    }
                    Some(other) => {
                        return self.fail(format!(
                            "a defaultdict whose factory is {}",
                            other.describe()
                        ))
                    }
                };
                let pairs = self.pairs(&o.dict_items, depth)?;
                Ok(Node::DefaultDict { factory, pairs })
            }
            _ => {
                // deque: `(deque, ())` or `(deque, ((), maxlen))`, items by APPENDS.
                let state_empty = o.state.is_none_or(|s| matches!(a.get(s), Value::None));
                if !o.dict_items.is_empty() || !state_empty || args.len() > 2 {
                    return self.fail(odd("a collections.deque"));
                }
                let first_empty = args
                    .first()
                    .is_none_or(|&f| a.seq_of(f).is_some_and(|s| s.is_empty()));
                let maxlen = match args.get(1).map(|&m| a.get(m)) {
                    None | Some(Value::None) => None,
                    Some(Value::Int(m)) if *m >= 0 => Some(*m as u64),
                    _ => return self.fail(odd("a collections.deque")),
                };
                if !first_empty || maxlen.is_some_and(|m| o.list_items.len() as u64 > m) {
                    return self.fail(odd("a collections.deque"));
                }
                let items = self.items(&o.list_items, depth)?;
                Ok(Node::Deque { maxlen, items })
            }
        }
    }

    /// Whether `class` (a global node) is one `Foreign::Records` trusts.
    pub(super) fn is_record(&self, class: Id) -> bool {
        let Some(allowed) = &self.records else {
            return false;
        };
        match self.l.arena.get(class) {
            Value::Global(g) => match &**g {
                Global::Foreign { module, name } => {
                    allowed.permits(module, name) && !eval::Allowed::is_forwarder(module, name)
                }
                Global::Known(_) => false,
            },
            _ => false,
        }
    }

    /// An allowed object as `plain=True` gives it: `$class`, `$args` and
    /// `$kwargs` when non-empty, `$items`, then the SETITEMS keys and the
    /// BUILD state merged in when that loses nothing (every key a str not
    /// starting with `$` and new), else whole as `$dictitems` / `$state`.
    pub(super) fn plain_record(&mut self, o: &eval::Object, depth: usize) -> Res<Node> {
        let a = &self.l.arena;
        let class = match a.get(o.class) {
            Value::Global(g) => match &**g {
                Global::Foreign { module, name } => format!("{module}:{name}"),
                Global::Known(k) => k.qualname(),
            },
            other => return self.fail(format!("an object made by {}", other.describe())),
        };
        let mut pairs = vec![(self.str_node("$class"), self.str_node(&class))];
        let mut keys: HashSet<String> = HashSet::from(["$class".to_string()]);
        let truthy = |id: Id| match a.get(id) {
            Value::None => false,
            Value::Tuple(v) | Value::List(v) => !v.is_empty(),
            Value::Dict(d) => !d.items.is_empty(),
            _ => true,
        };
        for (key, part) in [("$args", o.args), ("$kwargs", o.kwargs)] {
            if let Some(v) = part.filter(|&v| truthy(v)) {
                self.field(&mut pairs, key, v, depth)?;
                keys.insert(key.to_string());
            }
        }
        if !o.list_items.is_empty() {
            let k = self.str_node("$items");
            self.path.push(PathPart::Key("$items".into()));
            let items = self.items(&o.list_items, depth);
            self.path.pop();
            let node = self.push(Node::List(items?));
            pairs.push((k, node));
            keys.insert("$items".into());
        }
        if !o.dict_items.is_empty() {
            let items = self.l.arena.dict_items(&o.dict_items);
            if !self.merge(&mut pairs, &mut keys, &[items.as_slice()], depth)? {
                let k = self.str_node("$dictitems");
                self.path.push(PathPart::Key("$dictitems".into()));
                let dict = self.pairs(&items, depth);
                self.path.pop();
                let node = self.push(Node::Dict(dict?));
                pairs.push((k, node));
                keys.insert("$dictitems".into());
            }
        }
        if let Some(state) = o.state {
            let parts: Vec<Id> = match a.get(state) {
                Value::Tuple(v) if v.len() == 2 => v.clone(),
                _ => vec![state],
            };
            let mut dicts: Vec<Vec<(Id, Id)>> = Vec::new();
            let mut plain = true;
            for p in parts {
                match a.get(p) {
                    Value::None => {}
                    Value::Dict(d)
                        if matches!(d.kind, DictKind::Dict | DictKind::OrderedDict)
                            && d.state.is_none() =>
                    {
                        dicts.push(a.dict_items(&d.items))
                    }
                    _ => plain = false,
                }
            }
            let slices: Vec<&[(Id, Id)]> = dicts.iter().map(Vec::as_slice).collect();
            if !(plain && self.merge(&mut pairs, &mut keys, &slices, depth)?) {
                self.field(&mut pairs, "$state", state, depth)?;
            }
        }
        Ok(Node::Dict(pairs))
    }

    pub(super) fn field(
        &mut self,
        pairs: &mut Vec<(NodeId, NodeId)>,
        key: &str,
        v: Id,
        depth: usize,
    ) -> Res<()> {
        let k = self.str_node(key);
        self.path.push(PathPart::Key(key.to_string()));
        let n = self.walk(v, depth + 1);
        self.path.pop();
        pairs.push((k, n?));
        Ok(())
    }

    /// Merges dict entries into a record when every key is a str that does
    /// not start with `$` (a file cannot forge `$class`) and none is there
    /// yet; `false` (nothing merged) otherwise.
    pub(super) fn merge(
        &mut self,
        pairs: &mut Vec<(NodeId, NodeId)>,
        keys: &mut HashSet<String>,
        parts: &[&[(Id, Id)]],
        depth: usize,
    ) -> Res<bool> {
        let mut new: HashSet<&str> = HashSet::new();
        for part in parts {
            for &(k, _) in *part {
                match self.l.arena.get(k) {
                    Value::Str(s) => match s.as_str() {
                        Some(t) if !t.starts_with('$') && !keys.contains(t) && new.insert(t) => {}
                        _ => return Ok(false),
                    },
                    _ => return Ok(false),
                }
            }
        }
        let names: Vec<String> = new.iter().map(|s| s.to_string()).collect();
        for part in parts {
            for &(k, v) in *part {
                let key = self.l.arena.str_of(k).unwrap_or_default().to_string();
                self.field(pairs, &key, v, depth)?;
            }
        }
        keys.extend(names);
        Ok(true)
    }

    /// A foreign object in salvage mode: a module becomes its state dict,
    /// anything else a dict record of its class, arguments and state.
    pub(super) fn object(&mut self, id: Id, o: &eval::Object, depth: usize) -> Res<Node> {
        if let Some(entries) = self.module_state(id) {
            let mut pairs = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let kn = self.str_node(&k);
                self.path.push(PathPart::Key(k));
                let vn = self.walk(v, depth + 1);
                self.path.pop();
                pairs.push((kn, vn?));
            }
            return Ok(Node::ODict(pairs));
        }
        let class = match self.l.arena.get(o.class) {
            Value::Global(g) => match &**g {
                Global::Known(k) => k.qualname(),
                Global::Foreign { module, name } => format!("{module}.{name}"),
            },
            other => format!("<{}>", other.describe()),
        };
        let mut pairs = vec![(self.str_node("__class__"), self.str_node(&class))];
        let mut field = |c: &mut Self, name: &str, v: Id| -> Res<()> {
            let kn = c.str_node(name);
            c.path.push(PathPart::Key(name.to_string()));
            let vn = c.walk(v, depth + 1);
            c.path.pop();
            pairs.push((kn, vn?));
            Ok(())
        };
        if let Some(a) = o.args {
            field(self, "args", a)?;
        }
        if let Some(k) = o.kwargs {
            field(self, "kwargs", k)?;
        }
        if let Some(s) = o.state {
            field(self, "state", s)?;
        }
        if !o.list_items.is_empty() {
            let k = self.str_node("items");
            let items = self.items(&o.list_items, depth)?;
            let node = self.push(Node::List(items));
            pairs.push((k, node));
        }
        if !o.dict_items.is_empty() {
            let k = self.str_node("dictitems");
            let items = self.pairs(&o.dict_items, depth)?;
            let node = self.push(Node::Dict(items));
            pairs.push((k, node));
        }
        Ok(Node::Dict(pairs))
    }

    /// When `id` is a pickled `nn.Module`: its state dict entries (name,
    /// tensor) in `Module.state_dict()` order, submodules flattened.
    pub(super) fn module_state(&self, id: Id) -> Option<Vec<(String, Id)>> {
        let a = &self.l.arena;
        let fields = |oid: Id| -> Option<HashMap<String, Id>> {
            let Value::Object(o) = a.get(oid) else {
                return None;
            };
            let Value::Dict(d) = a.get(o.state?) else {
                return None;
            };
            let map: HashMap<String, Id> = a
                .dict_items(&d.items)
                .into_iter()
                .filter_map(|(k, v)| Some((a.str_of(k)?.to_string(), v)))
                .collect();
            (map.contains_key("_parameters") && map.contains_key("_modules")).then_some(map)
        };
        fields(id)?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![(id, String::new())];
        while let Some((oid, prefix)) = stack.pop() {
            if !seen.insert(oid) {
                continue;
            }
            let Some(f) = fields(oid) else { continue };
            let dict = |name: &str| -> Vec<(Id, Id)> {
                match f.get(name).map(|&v| a.get(v)) {
                    Some(Value::Dict(d)) => a.dict_items(&d.items),
                    _ => Vec::new(),
                }
            };
            let skip: HashSet<&str> = match f.get("_non_persistent_buffers_set").map(|&v| a.get(v))
            {
                Some(Value::Set(v)) => v.iter().filter_map(|&x| a.str_of(x)).collect(),
                _ => HashSet::new(),
            };
            for (k, v) in dict("_parameters") {
                if let (Some(k), false) = (a.str_of(k), v == eval::NONE) {
                    out.push((format!("{prefix}{k}"), v));
                }
            }
            for (k, v) in dict("_buffers") {
                if let (Some(k), false) = (a.str_of(k), v == eval::NONE) {
                    if !skip.contains(k) {
                        out.push((format!("{prefix}{k}"), v));
                    }
                }
            }
            for (k, v) in dict("_modules").into_iter().rev() {
                if let Some(k) = a.str_of(k) {
                    stack.push((v, format!("{prefix}{k}.")));
                }
            }
        }
        Some(out)
    }
}
