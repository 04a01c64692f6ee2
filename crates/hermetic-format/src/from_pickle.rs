//! Pickled checkpoints into the tensor-tree format (feature `pickle`).
//!
//! A value graph from `hermetic_pickle`'s safe evaluator is walked into a
//! [`Planner`] tree: shared objects become `$ref`s, tensors of one storage
//! become views of one entry, numpy arrays keep their dtype (byte order
//! included), big ints their exact value. Entry names are the tree paths
//! joined with `.`, so a state dict's tensors keep their keys. The data is
//! then streamed by the format's writer straight from the evaluator's
//! (usually mapped) input. In salvage mode an `nn.Module` record becomes its
//! state dict and any other foreign object a dict with its `__class__`,
//! arguments and state.

use crate::{
    Dtype, EntryOrigin, EntrySource, FormatError, Node, NodeId, PathPart, Plan, Planner,
    TensorKind, ViewSpec, INLINE_BYTES_MAX, MAX_DEPTH,
};
use hermetic_pickle::eval::{
    self, byteswap, ArrayData, ByteOrder, DictKind, Global, Id, Loaded, NpDtype, Value,
};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// A checkpoint's value planned as a tensor tree, ready to write with
/// [`crate::write_file`]`(path, &c.plan, &mut c.data, opts)`.
pub struct Converted<'l, 'a> {
    pub plan: Plan,
    /// The entries' bytes, borrowed from the evaluated input.
    pub data: ConvertedData<'l, 'a>,
    /// How many tensors and arrays the tree holds (views included).
    pub tensors: usize,
    /// Places whose Python attributes the format has no room for (a state
    /// dict's `_metadata` version table, attributes set on a tensor): not
    /// carried over, and to be named to the user.
    pub not_carried: Vec<String>,
}

/// What becomes of foreign objects (classes outside hermetic's data
/// constructors) the evaluator let through.
#[derive(Clone, Debug)]
pub enum Foreign {
    /// They are an error (a data-only load lets none through).
    Refuse,
    /// Salvage mode: a module becomes its state dict, anything else a dict
    /// with its `__class__`, arguments and state.
    Salvage,
    /// Those of the allowed classes become the records `plain=True` loads
    /// give (`{"$class": "module:qualname", ...}`), so that `hermetic.load`
    /// of the output equals `hermetic.torch.load(input, plain=True)`.
    Records(eval::Allowed),
}

/// Converts an evaluated checkpoint. `salvage` must match the mode it was
/// evaluated in (foreign objects are an error otherwise). The file's
/// metadata records `source_format`.
pub fn convert<'l, 'a>(loaded: &'l Loaded<'a>, salvage: bool) -> crate::Result<Converted<'l, 'a>> {
    convert_with(
        loaded,
        if salvage {
            Foreign::Salvage
        } else {
            Foreign::Refuse
        },
    )
}

/// [`convert`], saying what to make of foreign objects.
pub fn convert_with<'l, 'a>(
    loaded: &'l Loaded<'a>,
    foreign: Foreign,
) -> crate::Result<Converted<'l, 'a>> {
    let fail = |detail: String| FormatError::Convert { detail };
    let salvage = matches!(foreign, Foreign::Salvage);
    let mut conv = Converter::new(loaded, salvage);
    if let Foreign::Records(a) = foreign {
        conv.records = Some(a);
    }
    let root = conv
        .walk(loaded.root, 0)
        .and_then(|r| conv.number_refs(r).map(|()| r))
        .map_err(fail)?;
    let Converter {
        planner,
        arrays,
        bytes,
        tensors,
        not_carried,
        ..
    } = conv;
    let metadata = vec![(
        "source_format".to_string(),
        loaded.format.as_str().to_string(),
    )];
    let (plan, origins) = planner.finish(root, metadata)?;
    Ok(Converted {
        plan,
        data: ConvertedData {
            loaded,
            origins,
            arrays,
            bytes,
        },
        tensors,
        not_carried,
    })
}

/// Storage keys of numpy arrays (torch storages use their index).
const ARRAY_KEY: u64 = 1 << 62;

struct Memo {
    /// The node made for it (reserved before its children are walked).
    node: NodeId,
    open: bool,
    immutable: bool,
}

struct Converter<'l, 'a> {
    l: &'l Loaded<'a>,
    salvage: bool,
    /// `Foreign::Records`: the classes whose objects become plain records.
    records: Option<eval::Allowed>,
    planner: Planner,
    path: Vec<PathPart>,
    memo: HashMap<Id, Memo>,
    /// `Node::Ref`s whose number is still the target's node id.
    refs: Vec<NodeId>,
    /// Array bytes by storage key (byte-swapped copies where needed).
    arrays: HashMap<u64, Cow<'l, [u8]>>,
    /// Large bytes by slot.
    bytes: Vec<&'l [u8]>,
    tensors: usize,
    /// Places whose Python attributes (a state dict's `_metadata` version
    /// table, attributes set on a tensor) the format has no room for; named
    /// to the user, never dropped silently.
    not_carried: Vec<String>,
}

type Res<T> = std::result::Result<T, String>;

impl<'l, 'a> Converter<'l, 'a> {
    fn new(l: &'l Loaded<'a>, salvage: bool) -> Self {
        Converter {
            l,
            salvage,
            records: None,
            planner: Planner::new(),
            path: Vec::new(),
            memo: HashMap::new(),
            refs: Vec::new(),
            arrays: HashMap::new(),
            bytes: Vec::new(),
            tensors: 0,
            not_carried: Vec::new(),
        }
    }

    fn place(&self) -> String {
        crate::path_place(&self.path)
    }

    fn fail<T>(&self, what: impl std::fmt::Display) -> Res<T> {
        Err(format!("at {}: {what}", self.place()))
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.planner.tree.push(n)
    }

    /// A later appearance of an object already converted: a `$ref` to it.
    fn memo_ref(&mut self, id: Id) -> Res<Option<NodeId>> {
        let Some(m) = self.memo.get(&id) else {
            return Ok(None);
        };
        if m.open && m.immutable {
            return self.fail("a tuple or set that contains itself");
        }
        let target = m.node;
        let r = self.push(Node::Ref(target));
        self.refs.push(r);
        Ok(Some(r))
    }

    /// The first appearance of a container: reserves its node, so that
    /// references from inside it (cycles) can point at it.
    fn memo_open(&mut self, id: Id, immutable: bool) -> NodeId {
        let node = self.push(Node::None);
        self.memo.insert(
            id,
            Memo {
                node,
                open: true,
                immutable,
            },
        );
        node
    }

    fn memo_close(&mut self, id: Id, node: NodeId, n: Node) -> NodeId {
        self.planner.tree.nodes[node] = n;
        if let Some(m) = self.memo.get_mut(&id) {
            m.open = false;
        }
        node
    }

    fn memo_leaf(&mut self, id: Id, node: NodeId) -> NodeId {
        self.memo.insert(
            id,
            Memo {
                node,
                open: false,
                immutable: true,
            },
        );
        node
    }

    /// Turns the reference placeholders into memo numbers: memoizable nodes
    /// are numbered in document order, as readers number them.
    fn number_refs(&mut self, root: NodeId) -> Res<()> {
        let tree = &mut self.planner.tree;
        let mut number: HashMap<NodeId, usize> = HashMap::new();
        let mut stack = vec![root];
        let mut count = 0usize;
        let placeholders: HashSet<NodeId> = self.refs.iter().copied().collect();
        while let Some(n) = stack.pop() {
            if placeholders.contains(&n) {
                let Node::Ref(target) = tree.nodes[n] else {
                    continue;
                };
                let k = *number
                    .get(&target)
                    .ok_or("a reference precedes its object in document order")?;
                tree.nodes[n] = Node::Ref(k);
                continue;
            }
            if tree.nodes[n].is_memoizable() {
                number.insert(n, count);
                count += 1;
            }
            for c in tree.children(n).into_iter().rev() {
                stack.push(c);
            }
        }
        Ok(())
    }

    fn key_part(&self, k: Id) -> PathPart {
        let a = &self.l.arena;
        match a.get(k) {
            Value::Str(s) => PathPart::Key(s.lossy().into_owned()),
            Value::Int(i) => PathPart::Index(*i),
            Value::Bool(b) => PathPart::Index(*b as i64),
            Value::None => PathPart::Other("None".into()),
            Value::Float(f) => PathPart::Other(format!("{f:?}")),
            other => PathPart::Other(format!("<{}>", other.describe())),
        }
    }

    fn items(&mut self, ids: &[Id], depth: usize) -> Res<Vec<NodeId>> {
        let mut out = Vec::with_capacity(ids.len());
        for (i, &c) in ids.iter().enumerate() {
            self.path.push(PathPart::Index(i as i64));
            let n = self.walk(c, depth + 1);
            self.path.pop();
            out.push(n?);
        }
        Ok(out)
    }

    fn pairs(&mut self, items: &[(Id, Id)], depth: usize) -> Res<Vec<(NodeId, NodeId)>> {
        let items = self.l.arena.dict_items(items);
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            let kn = self.walk(k, depth + 1)?;
            self.path.push(self.key_part(k));
            let vn = self.walk(v, depth + 1);
            self.path.pop();
            out.push((kn, vn?));
        }
        Ok(out)
    }

    fn str_node(&mut self, s: &str) -> NodeId {
        self.push(Node::Str(s.to_string()))
    }

    /// Only in salvage mode: what the format cannot hold as itself, as a
    /// dict naming its class.
    fn record(&mut self, class: &str, fields: Vec<(&str, NodeId)>) -> Res<NodeId> {
        let mut pairs = vec![(self.str_node("__class__"), self.str_node(class))];
        for (k, v) in fields {
            pairs.push((self.str_node(k), v));
        }
        Ok(self.push(Node::Dict(pairs)))
    }

    fn walk(&mut self, id: Id, depth: usize) -> Res<NodeId> {
        if depth > MAX_DEPTH {
            return self.fail(format!("nesting deeper than {MAX_DEPTH}"));
        }
        let l = self.l;
        let a = &l.arena;
        let value = a.get(id);
        Ok(match value {
            Value::None => self.push(Node::None),
            Value::Bool(b) => self.push(Node::Bool(*b)),
            Value::Int(i) => self.push(Node::Int(*i)),
            Value::BigInt(b) => self.push(Node::BigInt(big_hex(b))),
            Value::Float(f) => self.push(Node::Float(*f)),
            Value::Complex(re, im) => self.push(Node::Complex(*re, *im)),
            Value::Str(s) => match s.as_str() {
                Some(t) => self.str_node(t),
                None => return self.fail("a str with a lone surrogate"),
            },
            Value::Bytes(b) | Value::ByteArray(b) => {
                if let Some(r) = self.memo_ref(id)? {
                    return Ok(r);
                }
                let node = if b.len() <= INLINE_BYTES_MAX {
                    self.push(Node::Bytes(b.to_vec()))
                } else {
                    let name = crate::path_name(&self.path);
                    let (node, slot) = self.planner.add_bytes(name, b.len() as u64);
                    if slot != self.bytes.len() {
                        return self.fail("bytes slots out of order");
                    }
                    let bytes: &'l [u8] = match value {
                        Value::Bytes(x) | Value::ByteArray(x) => x,
                        _ => &[],
                    };
                    self.bytes.push(bytes);
                    node
                };
                self.memo_leaf(id, node)
            }
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                let immutable = !matches!(value, Value::List(_));
                if let Some(r) = self.memo_ref(id)? {
                    return Ok(r);
                }
                let node = self.memo_open(id, immutable);
                let ids = match value {
                    Value::Set(_) | Value::FrozenSet(_) => a.set_items(v),
                    _ => v.clone(),
                };
                let items = self.items(&ids, depth)?;
                let n = match value {
                    Value::List(_) => Node::List(items),
                    Value::Tuple(_) => Node::Tuple(items),
                    Value::Set(_) => Node::Set(items),
                    _ => Node::FrozenSet(items),
                };
                self.memo_close(id, node, n)
            }
            Value::Dict(d) => {
                if let Some(r) = self.memo_ref(id)? {
                    return Ok(r);
                }
                let attrs = match (d.kind, d.state) {
                    (_, None) => None,
                    (DictKind::OrderedDict, Some(state)) => Some(self.attr_state(state)?),
                    (_, Some(_)) if self.salvage => None,
                    (_, Some(_)) => {
                        return self.fail("a dict with instance attributes (only an OrderedDict's are stored)")
                    }
                };
                let node = self.memo_open(id, false);
                let pairs = self.pairs(&d.items, depth)?;
                let n = match d.kind {
                    DictKind::OrderedDict => Node::ODict(pairs),
                    DictKind::Counter => Node::Counter(pairs),
                    DictKind::Dict => Node::Dict(pairs),
                };
                let target = self.memo_close(id, node, n);
                let Some(attrs) = attrs.filter(|a| !a.is_empty()) else {
                    return Ok(target);
                };
                // torch's state-dict `_metadata` and any other attribute:
                // after the items, as the reader sets them (SPEC 6.7).
                let mut out = Vec::with_capacity(attrs.len());
                for (name, v) in attrs {
                    self.path.push(PathPart::Other(format!(".{name}")));
                    let n = self.walk(v, depth + 1);
                    self.path.pop();
                    out.push((name, n?));
                }
                self.push(Node::Attrs { target, attrs: out })
            }
            Value::TorchDtype(d) => self.push(Node::TorchDtype(d.name().to_string())),
            Value::TorchSize(d) => self.push(Node::TorchSize(d.clone())),
            Value::TorchDevice(d) => {
                if !crate::dtype::is_torch_device(d) {
                    return self.fail(format!(
                        "torch.device({d:?}) has a device type the format does not know \
                         (docs/SPEC.md, 6.2)"
                    ));
                }
                self.push(Node::TorchDevice(d.to_string()))
            }
            Value::Tensor(_) => {
                if let Some(r) = self.memo_ref(id)? {
                    return Ok(r);
                }
                let n = self.tensor(id)?;
                self.memo_leaf(id, n)
            }
            Value::Array(arr) => match &arr.data {
                ArrayData::Objects(v) if self.salvage => {
                    let v = v.clone();
                    if let Some(r) = self.memo_ref(id)? {
                        return Ok(r);
                    }
                    let node = self.memo_open(id, false);
                    let items = self.items(&v, depth)?;
                    self.memo_close(id, node, Node::List(items))
                }
                ArrayData::Objects(_) => {
                    return self.fail("a numpy array of Python objects (the format holds no objects; --salvage keeps its items as a list)")
                }
                _ => {
                    if let Some(r) = self.memo_ref(id)? {
                        return Ok(r);
                    }
                    let n = self.array(id)?;
                    self.memo_leaf(id, n)
                }
            },
            Value::NpScalar(s) => {
                let dtype = match np_descr(&s.dtype) {
                    Ok(d) => d,
                    Err(e) => return self.fail(e),
                };
                self.push(Node::NpScalar {
                    dtype,
                    data: s.data.to_vec(),
                })
            }
            Value::Slice(parts) if !self.salvage => {
                let parts = *parts;
                let items = self.items(&parts, depth)?;
                self.push(Node::Slice([items[0], items[1], items[2]]))
            }
            Value::Range(r) if !self.salvage => {
                let r = *r;
                let mut bounds = [0i64; 3];
                for (b, &i) in bounds.iter_mut().zip(&r) {
                    *b = match self.l.arena.int_of(i) {
                        Some(n) => n,
                        None => return self.fail("a range with a bound beyond 64 bits (the format stores 64-bit range bounds)"),
                    };
                }
                self.push(Node::Range(bounds))
            }
            Value::Object(o) if !self.is_record(o.class) && self.stdlib_class(o.class).is_some() => {
                let o = (**o).clone();
                if let Some(r) = self.memo_ref(id)? {
                    return Ok(r);
                }
                let node = self.memo_open(id, false);
                let n = self.stdlib_object(&o, depth)?;
                self.memo_close(id, node, n)
            }
            Value::Object(o) if self.is_record(o.class) => {
                let o = (**o).clone();
                if let Some(r) = self.memo_ref(id)? {
                    return Ok(r);
                }
                let node = self.memo_open(id, false);
                let n = self.plain_record(&o, depth)?;
                self.memo_close(id, node, n)
            }
            // A class or function used as a value, under `Foreign::Records`:
            // a `$callable` reference, which a reader resolves only from its
            // own allow list.
            Value::Global(g)
                if self.records.is_some()
                    && (matches!(**g, Global::Known(_)) || self.is_record(id)) =>
            {
                let name = match &**g {
                    Global::Foreign { module, name } => format!("{module}:{name}"),
                    Global::Known(k) => {
                        let q = k.qualname();
                        match q.rsplit_once('.') {
                            Some((m, n)) => format!("{m}:{n}"),
                            None => q,
                        }
                    }
                };
                self.push(Node::Callable(name))
            }
            Value::Object(o) if self.salvage => {
                let o = (**o).clone();
                if let Some(r) = self.memo_ref(id)? {
                    return Ok(r);
                }
                let node = self.memo_open(id, false);
                let n = self.object(id, &o, depth)?;
                self.memo_close(id, node, n)
            }
            other if self.salvage => {
                let text = match other {
                    Value::Slice(s) => {
                        let items = self.items(s, depth)?;
                        let args = self.push(Node::Tuple(items));
                        return self.record("builtins.slice", vec![("args", args)]);
                    }
                    Value::Range(r) => {
                        let items = self.items(r, depth)?;
                        let args = self.push(Node::Tuple(items));
                        return self.record("builtins.range", vec![("args", args)]);
                    }
                    Value::Global(g) => match &**g {
                        Global::Known(k) => k.qualname(),
                        Global::Foreign { module, name } => format!("{module}.{name}"),
                    },
                    Value::TorchEnum(n) => format!("torch.{n}"),
                    Value::NpDtype(d) => format!("numpy.dtype({:?})", d.descr()),
                    Value::Storage(s) => format!("<storage {}>", s.index),
                    other => format!("<{}>", other.describe()),
                };
                self.str_node(&text)
            }
            Value::Object(o) => {
                let class = match self.l.arena.get(o.class) {
                    Value::Global(g) => match &**g {
                        Global::Foreign { module, name } => Some(format!("{module}:{name}")),
                        Global::Known(_) => None,
                    },
                    _ => None,
                };
                return match class {
                    Some(c) => self.fail(format!(
                        "an object of {c} cannot be stored in hermetic's format as itself \
                         (`--allow {c}` keeps it as a `$class` record, `--salvage` as a dict)"
                    )),
                    None => self.fail(
                        "an opaque object cannot be stored in hermetic's format (`--salvage` keeps it as a dict)",
                    ),
                };
            }
            Value::Global(g) if matches!(**g, Global::Foreign { .. }) => {
                let Global::Foreign { module, name } = &**g else {
                    unreachable!()
                };
                return self.fail(format!(
                    "the global {module}.{name} cannot be stored in hermetic's format as itself \
                     (`--allow {module}:{name}` keeps it as a `$callable` reference, `--salvage` as text)"
                ));
            }
            other => {
                return self.fail(format!(
                    "{} cannot be stored in hermetic's format (`--salvage` keeps it as text)",
                    other.describe()
                ))
            }
        })
    }

    fn tensor(&mut self, id: Id) -> Res<NodeId> {
        let Value::Tensor(t) = self.l.arena.get(id) else {
            return self.fail("not a tensor");
        };
        let Some(view) = t.storage else {
            return self.fail("a meta tensor has no data to convert");
        };
        if t.metadata.is_some() {
            return self.fail("a lazily conjugated or negated tensor");
        }
        if t.state.is_some() {
            self.not_carried.push(format!(
                "the Python attributes of the tensor at {}",
                self.place()
            ));
        }
        let code = t.dtype.format_code();
        let Some(dtype) = Dtype::parse(code) else {
            return self.fail(format!(
                "torch dtype {} has no hermetic dtype",
                t.dtype.name()
            ));
        };
        let isz = t.dtype.itemsize();
        let strides: Option<Vec<i64>> = t
            .stride
            .iter()
            .map(|&s| s.checked_mul(isz).and_then(|b| i64::try_from(b).ok()))
            .collect();
        let pos = t
            .offset
            .checked_mul(isz)
            .and_then(|o| o.checked_add(view.byte_offset))
            .and_then(|o| i64::try_from(o).ok());
        let (Some(strides), Some(pos)) = (strides, pos) else {
            return self.fail("strides or offset overflow");
        };
        let storage = &self.l.storages[view.index as usize];
        let default_grad = t.parameter;
        let spec = ViewSpec {
            kind: if t.parameter {
                TensorKind::Parameter
            } else {
                TensorKind::Torch
            },
            dtype,
            shape: t.shape.clone(),
            strides,
            pos,
            requires_grad: (t.requires_grad != default_grad).then_some(t.requires_grad),
            np_dtype: None,
            device: (storage.location != "cpu").then(|| storage.location.clone()),
        };
        self.tensors += 1;
        let name = crate::path_name(&self.path);
        self.planner
            .add_view(name, u64::from(view.index), storage.nbytes, spec)
            .map_err(|e| format!("at {}: {e}", self.place()))
    }

    fn array(&mut self, id: Id) -> Res<NodeId> {
        let Value::Array(arr) = self.l.arena.get(id) else {
            return self.fail("not an array");
        };
        let ArrayData::Bytes(data) = &arr.data else {
            return self.fail("an array without data");
        };
        let (dtype, np_dtype, swap) = match np_code(&arr.dtype) {
            Ok(x) => x,
            Err(e) => return self.fail(e),
        };
        let isz = arr.dtype.itemsize();
        let mut strides = vec![0i64; arr.shape.len()];
        let mut acc = isz;
        let dims: Vec<usize> = if arr.fortran {
            (0..arr.shape.len()).collect()
        } else {
            (0..arr.shape.len()).rev().collect()
        };
        for i in dims {
            strides[i] = i64::try_from(acc).map_err(|_| "array too large".to_string())?;
            acc = acc.saturating_mul(arr.shape[i].max(1));
        }
        let key = ARRAY_KEY | u64::from(id);
        let bytes: Cow<'l, [u8]> = match swap {
            Some(unit) => {
                let mut v = data.to_vec();
                byteswap(&mut v, unit as usize);
                Cow::Owned(v)
            }
            None => match data {
                Cow::Borrowed(b) => Cow::Borrowed(*b),
                Cow::Owned(v) => Cow::Owned(v.clone()),
            },
        };
        let len = bytes.len() as u64;
        self.arrays.insert(key, bytes);
        self.tensors += 1;
        let spec = ViewSpec {
            kind: TensorKind::Numpy,
            dtype,
            shape: arr.shape.clone(),
            strides,
            pos: 0,
            requires_grad: None,
            np_dtype,
            device: None,
        };
        let name = crate::path_name(&self.path);
        self.planner
            .add_view(name, key, len, spec)
            .map_err(|e| format!("at {}: {e}", self.place()))
    }

    /// The attributes a BUILD state gives an OrderedDict (a dict, or a
    /// `(dict, slots)` pair without slots), by name.
    fn attr_state(&self, state: Id) -> Res<Vec<(String, Id)>> {
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
    fn stdlib_class(&self, class: Id) -> Option<&'static str> {
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
    fn stdlib_object(&mut self, o: &eval::Object, depth: usize) -> Res<Node> {
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
    fn is_record(&self, class: Id) -> bool {
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
    fn plain_record(&mut self, o: &eval::Object, depth: usize) -> Res<Node> {
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

    fn field(
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
    fn merge(
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
    fn object(&mut self, id: Id, o: &eval::Object, depth: usize) -> Res<Node> {
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
    fn module_state(&self, id: Id) -> Option<Vec<(String, Id)>> {
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

/// A numpy dtype for the format: (dtype code, np_dtype, byte-swap unit).
fn np_code(
    d: &NpDtype,
) -> std::result::Result<(Dtype, Option<serde_json::Value>, Option<u64>), String> {
    if let NpDtype::Scalar {
        kind,
        itemsize,
        order,
        ..
    } = d
    {
        let big = *order == ByteOrder::Big;
        let code = match (kind, itemsize) {
            // Datetimes keep their unit in `np_dtype`; the bytes are int64.
            (b'M' | b'm', 8) => Some("I64"),
            _ => crate::dtype::numpy_code(*kind, *itemsize),
        };
        if let Some(code) = code {
            let dtype = Dtype::parse(code).ok_or("unknown dtype code")?;
            let np_dtype =
                (big || matches!(kind, b'M' | b'm')).then(|| serde_json::Value::String(d.descr()));
            let swap = if big { d.swap_unit() } else { None };
            return Ok((dtype, np_dtype, swap));
        }
    }
    let size = u32::try_from(d.itemsize()).map_err(|_| "numpy items too large".to_string())?;
    let dtype = Dtype::parse(&format!("RAW{size}")).ok_or("numpy items too large")?;
    Ok((dtype, Some(np_descr(d)?), None))
}

/// numpy's `dtype_to_descr` as JSON: a type string, or a list of fields
/// (with padding) for records.
fn np_descr(d: &NpDtype) -> std::result::Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match d {
        NpDtype::Scalar { kind: b'O', .. } => return Err("a numpy object dtype".into()),
        NpDtype::Scalar { .. } => J::String(d.descr()),
        NpDtype::SubArray { .. } => return Err("a numpy sub-array dtype outside a record".into()),
        NpDtype::Record {
            fields, itemsize, ..
        } => {
            let mut sorted: Vec<_> = fields.iter().collect();
            sorted.sort_by_key(|f| f.offset);
            let mut out = Vec::new();
            let mut at = 0u64;
            let mut pad = 0;
            for f in sorted {
                if f.offset < at {
                    return Err("a numpy record with overlapping fields".into());
                }
                if f.offset > at {
                    out.push(J::Array(vec![
                        J::String(String::new()),
                        J::String(format!("|V{}", f.offset - at)),
                    ]));
                    pad += 1;
                }
                let name = match &f.title {
                    Some(t) => J::Array(vec![J::String(t.clone()), J::String(f.name.clone())]),
                    None => J::String(f.name.clone()),
                };
                let field = match &f.dtype {
                    NpDtype::SubArray { base, shape } => J::Array(vec![
                        name,
                        np_descr(base)?,
                        J::Array(shape.iter().map(|&s| J::from(s)).collect()),
                    ]),
                    other => J::Array(vec![name, np_descr(other)?]),
                };
                out.push(field);
                at = f.offset + f.dtype.itemsize();
            }
            if at < *itemsize {
                out.push(J::Array(vec![
                    J::String(String::new()),
                    J::String(format!("|V{}", itemsize - at)),
                ]));
            }
            let _ = pad;
            J::Array(out)
        }
    })
}

/// A big integer as the format writes it: lowercase hex of the magnitude,
/// `-` in front when negative.
fn big_hex(twos: &[u8]) -> String {
    let negative = twos.last().is_some_and(|&b| b & 0x80 != 0);
    let mut mag = twos.to_vec();
    if negative {
        let mut carry = 1u16;
        for b in mag.iter_mut() {
            let v = u16::from(!*b) + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    let hex: String = mag.iter().rev().map(|b| format!("{b:02x}")).collect();
    let hex = hex.trim_start_matches('0');
    let hex = if hex.is_empty() { "0" } else { hex };
    if negative {
        format!("-{hex}")
    } else {
        hex.to_string()
    }
}

/// The bytes of a [`Converted`] plan's entries.
pub struct ConvertedData<'l, 'a> {
    loaded: &'l Loaded<'a>,
    origins: Vec<EntryOrigin>,
    arrays: HashMap<u64, Cow<'l, [u8]>>,
    bytes: Vec<&'l [u8]>,
}

impl EntrySource for ConvertedData<'_, '_> {
    fn write_entry(
        &mut self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> crate::Result<()> {
        let err = |detail: String| FormatError::Source {
            entry: index.to_string(),
            detail,
        };
        let whole = |key: u64| -> crate::Result<&[u8]> {
            if key & ARRAY_KEY != 0 {
                return Ok(self.arrays.get(&key).map(|c| &**c).unwrap_or(&[]));
            }
            let i = u32::try_from(key).map_err(|_| err("bad storage key".into()))?;
            if i as usize >= self.loaded.storages.len() {
                return Err(err("bad storage key".into()));
            }
            Ok(self.loaded.storage_bytes(i))
        };
        let copy;
        let data: &[u8] = match self.origins.get(index) {
            Some(EntryOrigin::Storage { lo, hi, .. }) if lo == hi => &[],
            Some(EntryOrigin::Storage { key, lo, hi }) => whole(*key)?
                .get(*lo as usize..*hi as usize)
                .ok_or_else(|| err(format!("bytes {lo}..{hi} lie outside the storage")))?,
            Some(EntryOrigin::Gather {
                key,
                lo,
                hi,
                itemsize,
                shape,
                strides,
                offset,
            }) => {
                let span = whole(*key)?
                    .get(*lo as usize..*hi as usize)
                    .ok_or_else(|| err(format!("bytes {lo}..{hi} lie outside the storage")))?;
                copy = crate::tree::gather(span, *itemsize, shape, strides, *offset)
                    .ok_or_else(|| err("the view reaches outside its bytes".into()))?;
                &copy
            }
            Some(EntryOrigin::Bytes { slot }) => self.bytes.get(*slot).copied().unwrap_or(&[]),
            None => return Err(err("no origin".into())),
        };
        // Cache-sized pieces, so a caller counting bytes sees large entries
        // move.
        for piece in data.chunks(8 << 20) {
            sink(piece).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
