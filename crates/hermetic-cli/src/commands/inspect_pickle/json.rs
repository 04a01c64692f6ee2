//! `inspect --json` of a value graph: one JSON node per value, shared
//! nodes by reference, depth bounded.

use super::*;

pub(super) fn tensor_totals(l: &Loaded<'_>) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0u64;
    for id in l.arena.reachable(l.root) {
        if let Value::Tensor(t) = l.arena.get(id) {
            n += 1;
            bytes = bytes.saturating_add(t.nbytes());
        }
    }
    (n, bytes)
}

pub(super) struct JsonCtx<'l, 'a> {
    l: &'l Loaded<'a>,
    shared: HashMap<Id, usize>,
    numbers: HashMap<Id, usize>,
}

impl JsonCtx<'_, '_> {
    pub(super) fn node(&mut self, id: Id, depth: usize) -> Json {
        if depth > MAX_JSON_DEPTH {
            return json!({"type": "truncated"});
        }
        let mut number = None;
        if self.shared.contains_key(&id) {
            if let Some(&n) = self.numbers.get(&id) {
                return json!({"type": "ref", "id": n});
            }
            let n = self.numbers.len() + 1;
            self.numbers.insert(id, n);
            number = Some(n);
        }
        let l = self.l;
        let a = &l.arena;
        let items = |ctx: &mut Self, v: &[Id]| -> Json {
            Json::Array(v.iter().map(|&c| ctx.node(c, depth + 1)).collect())
        };
        let pairs = |ctx: &mut Self, v: &[(Id, Id)]| -> Json {
            Json::Array(
                a.dict_items(v)
                    .iter()
                    .map(|&(k, x)| json!([ctx.node(k, depth + 1), ctx.node(x, depth + 1)]))
                    .collect(),
            )
        };
        let mut v = match a.get(id) {
            Value::None => Json::Null,
            Value::Bool(b) => json!(b),
            Value::Int(i) => json!(i),
            Value::BigInt(b) => json!({"type": "int", "value": big_decimal(b)}),
            Value::Float(f) if f.is_finite() => json!(f),
            Value::Float(f) => json!({"type": "float", "value": float(*f)}),
            Value::Complex(re, im) => {
                json!({"type": "complex", "real": float(*re), "imag": float(*im)})
            }
            Value::Str(s) => json!(s.lossy()),
            Value::Bytes(b) => json!({"type": "bytes", "len": b.len()}),
            Value::ByteArray(b) => json!({"type": "bytearray", "len": b.len()}),
            Value::List(v) => json!({"type": "list", "items": items(self, v)}),
            Value::Tuple(v) => json!({"type": "tuple", "items": items(self, v)}),
            Value::Set(v) => json!({"type": "set", "items": items(self, &a.set_items(v))}),
            Value::FrozenSet(v) => {
                json!({"type": "frozenset", "items": items(self, &a.set_items(v))})
            }
            Value::Dict(d) => {
                let kind = match d.kind {
                    DictKind::Dict => "dict",
                    DictKind::OrderedDict => "OrderedDict",
                    DictKind::Counter => "Counter",
                };
                let mut o = json!({"type": kind, "items": pairs(self, &d.items)});
                if let Some(s) = d.state {
                    o["attributes"] = self.node(s, depth + 1);
                }
                o
            }
            Value::Slice(s) => json!({"type": "slice", "items": items(self, s)}),
            Value::Range(r) => json!({"type": "range", "items": items(self, r)}),
            Value::Global(_) => json!({"type": "global", "name": qualname(l, id)}),
            Value::TorchDtype(d) => json!({"type": "torch.dtype", "name": d.name()}),
            Value::TorchSize(d) => json!({"type": "torch.Size", "dims": d}),
            Value::TorchDevice(d) => json!({"type": "torch.device", "name": &**d}),
            Value::TorchEnum(n) => json!({"type": "torch", "name": n}),
            Value::Storage(s) => {
                json!({"type": "storage", "storage": s.index, "dtype": s.dtype.name(), "nbytes": s.nbytes})
            }
            Value::Tensor(t) => {
                let mut o = json!({
                    "type": if t.parameter { "Parameter" } else { "tensor" },
                    "dtype": t.dtype.name(),
                    "shape": t.shape,
                    "stride": t.stride,
                    "offset": t.offset,
                    "nbytes": t.nbytes(),
                    "storage": t.storage.map(|s| s.index),
                    "requires_grad": t.requires_grad,
                });
                if let Some(m) = t.metadata {
                    o["metadata"] = self.node(m, depth + 1);
                }
                if let Some(s) = t.state {
                    o["attributes"] = self.node(s, depth + 1);
                }
                o
            }
            Value::Array(arr) => {
                let mut o = json!({
                    "type": "ndarray",
                    "dtype": arr.dtype.descr(),
                    "shape": arr.shape,
                    "fortran": arr.fortran,
                    "nbytes": eval::array_nbytes(&arr.shape, arr.dtype.itemsize()),
                });
                if let ArrayData::Objects(v) = &arr.data {
                    o["items"] = items(self, v);
                }
                o
            }
            Value::NpDtype(d) => json!({"type": "numpy.dtype", "descr": d.descr()}),
            Value::NpScalar(s) => {
                json!({"type": "numpy.scalar", "dtype": s.dtype.descr(), "hex": hex(&s.data)})
            }
            Value::Object(o) => {
                let made = match o.made {
                    Made::Call => "call",
                    Made::New => "new",
                    Made::Reconstructor => "reconstructor",
                };
                let mut j = json!({"type": "object", "class": qualname(l, o.class), "made": made});
                if let Some(x) = o.args {
                    j["args"] = self.node(x, depth + 1);
                }
                if let Some(x) = o.kwargs {
                    j["kwargs"] = self.node(x, depth + 1);
                }
                if let Some(x) = o.state {
                    j["state"] = self.node(x, depth + 1);
                }
                if !o.list_items.is_empty() {
                    j["items"] = items(self, &o.list_items);
                }
                if !o.dict_items.is_empty() {
                    j["dictitems"] = pairs(self, &o.dict_items);
                }
                j
            }
        };
        if let (Some(n), Json::Object(m)) = (number, &mut v) {
            m.insert("id".into(), json!(n));
        }
        v
    }
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().take(64).map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn json_doc(l: &Loaded<'_>) -> Json {
    let (tensors, bytes) = tensor_totals(l);
    let mut ctx = JsonCtx {
        l,
        shared: shared(l),
        numbers: HashMap::new(),
    };
    let tree = ctx.node(l.root, 0);
    json!({
        "path": l.file,
        "format": l.format.as_str(),
        "verdict": l.report.verdict,
        "findings": l.report.all_findings().collect::<Vec<_>>(),
        "byteorder": if l.big_endian { "big" } else { "little" },
        "tensors": tensors,
        "tensor_bytes": bytes,
        "storages": l.storages.iter().map(|s| json!({
            "key": s.key, "dtype": s.dtype.name(), "nbytes": s.nbytes, "location": s.location,
        })).collect::<Vec<_>>(),
        "tree": tree,
    })
}
