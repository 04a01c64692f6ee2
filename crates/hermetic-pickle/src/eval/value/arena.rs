//! The arena that owns every node, and the exact dict-key identity that
//! lets a dict built from a pickle keep Python's key semantics.

use super::*;

/// The value graph.
#[derive(Debug)]
pub struct Arena<'a> {
    values: Vec<Value<'a>>,
}

impl<'a> Arena<'a> {
    pub(crate) fn new() -> Self {
        Arena {
            values: vec![Value::None, Value::Bool(true), Value::Bool(false)],
        }
    }

    /// Adds a node, charging it to `budget`.
    pub(crate) fn push(&mut self, v: Value<'a>, budget: &mut Budget) -> Result<Id, String> {
        match v {
            Value::None => return Ok(NONE),
            Value::Bool(true) => return Ok(TRUE),
            Value::Bool(false) => return Ok(FALSE),
            _ => {}
        }
        budget.charge(std::mem::size_of::<Value<'_>>() as u64 + v.heap_bytes())?;
        let id =
            Id::try_from(self.values.len()).map_err(|_| "more than 2^32 values".to_string())?;
        self.values.push(v);
        Ok(id)
    }

    pub fn get(&self, id: Id) -> &Value<'a> {
        &self.values[id as usize]
    }

    pub(crate) fn get_mut(&mut self, id: Id) -> &mut Value<'a> {
        &mut self.values[id as usize]
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Moves every node of `other` (which may borrow from a shorter-lived
    /// buffer) into this arena as owned data; returns the id mapping.
    pub(crate) fn absorb(&mut self, other: Arena<'_>) -> impl Fn(Id) -> Id {
        let base = self.values.len() as u64;
        let map = move |id: Id| -> Id {
            if id < 3 {
                id
            } else {
                (base + u64::from(id) - 3) as Id
            }
        };
        for v in other.values.into_iter().skip(3) {
            let mut v = v.into_owned();
            v.remap(map);
            self.values.push(v);
        }
        map
    }

    /// The ids a node refers to, in document order (keys before values).
    pub fn children(&self, id: Id) -> Vec<Id> {
        let mut out = Vec::new();
        self.for_each_child(id, |c| out.push(c));
        out
    }

    /// Calls `f` on every id the node refers to, in document order.
    pub fn for_each_child(&self, id: Id, mut f: impl FnMut(Id)) {
        match self.get(id) {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                v.iter().for_each(|&c| f(c))
            }
            Value::Dict(d) => {
                for &(k, v) in &d.items {
                    f(k);
                    f(v);
                }
                if let Some(s) = d.state {
                    f(s);
                }
            }
            Value::Slice(s) | Value::Range(s) => s.iter().for_each(|&c| f(c)),
            Value::Tensor(t) => {
                if let Some(m) = t.metadata {
                    f(m);
                }
                if let Some(s) = t.state {
                    f(s);
                }
            }
            Value::Array(a) => {
                if let ArrayData::Objects(v) = &a.data {
                    v.iter().for_each(|&c| f(c));
                }
            }
            Value::Object(o) => {
                f(o.class);
                for c in [o.args, o.kwargs, o.base, o.state].into_iter().flatten() {
                    f(c);
                }
                o.list_items.iter().for_each(|&c| f(c));
                for &(k, v) in &o.dict_items {
                    f(k);
                    f(v);
                }
            }
            _ => {}
        }
    }

    /// For each node, whether it is a dict or set keyed by an opaque
    /// object (or a tuple or frozenset holding one). A caller rebuilding
    /// objects fills those after the objects' BUILD states are set, as the
    /// unpickler inserts them after BUILD: a class may hash its fields.
    /// `order` is [`Arena::reachable`]'s: increasing ids, creation order.
    pub fn keyed_by_objects(&self, order: &[Id]) -> Vec<bool> {
        // Tuples come after their items; a dict before its keys (EMPTY_DICT
        // first): two passes.
        let mut holds_object = vec![false; self.values.len()];
        for &id in order {
            holds_object[id as usize] = match self.get(id) {
                Value::Object(_) => true,
                Value::Tuple(items) | Value::FrozenSet(items) => {
                    items.iter().any(|&c| holds_object[c as usize])
                }
                _ => false,
            };
        }
        let mut keyed = vec![false; self.values.len()];
        for &id in order {
            keyed[id as usize] = match self.get(id) {
                Value::Dict(d) => d.items.iter().any(|&(k, _)| holds_object[k as usize]),
                Value::Set(items) => items.iter().any(|&c| holds_object[c as usize]),
                _ => false,
            };
        }
        keyed
    }

    /// The ids reachable from `root`, in increasing order.
    pub fn reachable(&self, root: Id) -> Vec<Id> {
        self.reachable_from(&[root])
    }

    /// The nodes reachable from any of `roots`, in id order.
    pub fn reachable_from(&self, roots: &[Id]) -> Vec<Id> {
        let mut seen = vec![false; self.values.len()];
        let mut stack = roots.to_vec();
        let mut out = Vec::new();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id as usize], true) {
                continue;
            }
            out.push(id);
            self.for_each_child(id, |c| {
                if !seen[c as usize] {
                    stack.push(c)
                }
            });
        }
        out.sort_unstable();
        out
    }

    /// The text of a str node.
    pub fn str_of(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => s.as_str(),
            _ => None,
        }
    }

    /// An int node that fits an `i64` (bools count, as in Python).
    pub fn int_of(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The items of a tuple or list node.
    pub fn seq_of(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// Dict items with Python's rule for repeated keys applied to keys whose
    /// equality is plain (None, bools, ints, floats, str, bytes): the last
    /// value wins, at the first key's position. Other keys compare by identity.
    pub fn dict_items(&self, items: &[(Id, Id)]) -> Vec<(Id, Id)> {
        let mut out: Vec<(Id, Id)> = Vec::with_capacity(items.len());
        let mut index: std::collections::HashMap<KeyRepr<'_>, usize> =
            std::collections::HashMap::new();
        for &(k, v) in items {
            match index.entry(self.key_repr(k)) {
                std::collections::hash_map::Entry::Occupied(e) => out[*e.get()].1 = v,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push((k, v));
                }
            }
        }
        out
    }

    /// Set items with repeated plain items removed (the first kept).
    pub fn set_items(&self, items: &[Id]) -> Vec<Id> {
        let mut seen = std::collections::HashSet::new();
        items
            .iter()
            .copied()
            .filter(|&i| seen.insert(self.key_repr(i)))
            .collect()
    }

    fn key_repr(&self, id: Id) -> KeyRepr<'_> {
        let mut budget = MAX_KEY_PARTS;
        self.exact_key(id, &mut budget).unwrap_or(KeyRepr::Id(id))
    }

    /// The key `id` is to a dict or set, equal exactly where Python's `==`
    /// (with its identity shortcut) and `hash` make two keys one: ints,
    /// bools, integral floats and complex numbers with no imaginary part
    /// compare as numbers, tuples item by item, torch singletons and known
    /// globals by what they name, tensors and storages by identity. `None`
    /// where Rust cannot tell (instances, foreign globals, ranges, numpy
    /// values, frozensets, or a tuple past `budget` parts).
    fn exact_key(&self, id: Id, budget: &mut usize) -> Option<KeyRepr<'_>> {
        *budget = budget.checked_sub(1)?;
        Some(match self.get(id) {
            Value::None => KeyRepr::None,
            Value::Bool(b) => KeyRepr::Int(*b as i128),
            Value::Int(i) => KeyRepr::Int(*i as i128),
            Value::Float(f) | Value::Complex(f, 0.0) if f.fract() == 0.0 && f.abs() < 1e18 => {
                KeyRepr::Int(*f as i128)
            }
            Value::Float(f) | Value::Complex(f, 0.0) if !f.is_nan() => KeyRepr::Float(f.to_bits()),
            Value::Complex(re, im) if !re.is_nan() && !im.is_nan() => {
                KeyRepr::Complex((*re + 0.0).to_bits(), im.to_bits())
            }
            Value::Str(s) => KeyRepr::Str(&s.bytes),
            Value::Bytes(b) => KeyRepr::Bytes(b),
            Value::BigInt(b) => KeyRepr::Big(b),
            Value::Tuple(items) => KeyRepr::Tuple(
                items
                    .iter()
                    .map(|&i| self.exact_key(i, budget))
                    .collect::<Option<Vec<_>>>()?,
            ),
            Value::TorchSize(dims) => {
                *budget = budget.checked_sub(dims.len())?;
                KeyRepr::Tuple(dims.iter().map(|&d| KeyRepr::Int(d as i128)).collect())
            }
            Value::Global(g) => match &**g {
                Global::Known(k) => KeyRepr::Known(*k),
                Global::Foreign { .. } => return None,
            },
            Value::TorchDtype(d) => KeyRepr::TorchDtype(*d),
            Value::TorchEnum(n) => KeyRepr::Name(n),
            Value::TorchDevice(d) => KeyRepr::Device(d),
            // NaN floats (equal only to themselves), tensors and storages:
            // identity.
            Value::Float(_) | Value::Complex(..) | Value::Tensor(_) | Value::Storage(_) => {
                KeyRepr::Id(id)
            }
            _ => return None,
        })
    }

    /// The keys of a dict (or the items of a set) as Python iterates them,
    /// repeated keys merged, when Rust can compare every key exactly; else
    /// the first key it cannot compare.
    pub fn exact_keys(&self, keys: impl Iterator<Item = Id>) -> Result<Vec<Id>, Id> {
        let mut budget = MAX_KEY_PARTS;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for k in keys {
            if seen.insert(self.exact_key(k, &mut budget).ok_or(k)?) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Why `hash()` of `id` raises `TypeError`, if it certainly does: the
    /// type CPython names (`unhashable type: 'list'`), or `Err` with the
    /// type for a slice, which is hashable from Python 3.12 only. Tuples are
    /// looked through (each once, so shared ones cost nothing more).
    pub fn unhashable(&self, id: Id) -> Result<Option<&'static str>, &'static str> {
        // The keys state dicts are made of, without an allocation.
        if matches!(
            self.get(id),
            Value::Str(_) | Value::Int(_) | Value::Bytes(_) | Value::None | Value::Bool(_)
        ) {
            return Ok(None);
        }
        let mut todo = vec![id];
        let mut seen = std::collections::HashSet::new();
        while let Some(i) = todo.pop() {
            let name = match self.get(i) {
                Value::List(_) => "list",
                Value::Set(_) => "set",
                Value::ByteArray(_) => "bytearray",
                Value::Array(_) => "numpy.ndarray",
                Value::Dict(d) => match d.kind {
                    DictKind::Dict => "dict",
                    DictKind::OrderedDict => "collections.OrderedDict",
                    DictKind::Counter => "Counter",
                },
                Value::Slice(_) => return Err("slice"),
                Value::Tuple(items) => {
                    if seen.insert(i) {
                        todo.extend(items.iter().copied());
                    }
                    continue;
                }
                Value::Object(o) => match self.get(o.class) {
                    Value::Global(g) => match &**g {
                        Global::Foreign { module, name } => {
                            match (module.as_str(), name.as_str()) {
                                ("argparse", "Namespace") => "argparse.Namespace",
                                ("collections", "deque") => "collections.deque",
                                ("collections", "defaultdict") => "collections.defaultdict",
                                _ => continue,
                            }
                        }
                        Global::Known(_) => continue,
                    },
                    _ => continue,
                },
                _ => continue,
            };
            return Ok(Some(name));
        }
        Ok(None)
    }
}

/// How many parts (keys, tuple items) one dict's exact keys may take apart.
const MAX_KEY_PARTS: usize = 1 << 22;

#[derive(Hash, PartialEq, Eq)]
enum KeyRepr<'b> {
    None,
    Int(i128),
    Float(u64),
    Complex(u64, u64),
    Str(&'b [u8]),
    Bytes(&'b [u8]),
    Big(&'b [u8]),
    Tuple(Vec<KeyRepr<'b>>),
    Known(Known),
    TorchDtype(TorchDtype),
    Name(&'static str),
    Device(&'b str),
    Id(Id),
}
