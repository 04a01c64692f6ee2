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

mod arrays;
mod data;
mod objects;

use arrays::np_descr;
pub use data::ConvertedData;

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

#[cfg(test)]
mod tests;
