//! `hermetic inspect` for pickle-bearing files (torch checkpoints, raw
//! pickles, `.npy`/`.npz`): the value graph the evaluator builds, in opaque
//! mode, so a whole pickled model shows as `<module.Class>` records with
//! their state. Nothing in the file is imported or called.

use super::CliError;
use crate::args::InspectArgs;
use crate::ExitStatus;
use hermetic_pickle::eval::{
    self, ArrayData, DictKind, EvalError, Flavor, Global, Id, LoadOptions, Loaded, Made, Mode,
    NpDtype, Object, Value,
};
use hermetic_pickle::{Limits, Policy};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Deepest nesting printed; deeper parts show as `...`.
const MAX_PRINT_DEPTH: usize = 100;
/// Deepest nesting in JSON.
const MAX_JSON_DEPTH: usize = 64;

pub(crate) fn run_file(
    path: &Path,
    args: &InspectArgs,
    out: &mut dyn Write,
) -> Result<ExitStatus, CliError> {
    let name = path.display().to_string();
    let file = match hermetic_pickle::fsio::open_regular(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hermetic: {name}: {e}");
            return Ok(ExitStatus::Internal);
        }
    };
    let map = match eval::map_file(&file) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hermetic: {name}: {e}");
            return Ok(ExitStatus::Internal);
        }
    };
    if hermetic_pickle::containers::sniff(&map) == hermetic_pickle::containers::Kind::None {
        eprintln!(
            "hermetic: {name}: not a safetensors or hermetic file, and no pickle, torch checkpoint, .npy or .npz either"
        );
        return Ok(ExitStatus::Findings);
    }
    let policy = Policy::default();
    let opts = LoadOptions {
        mode: Mode::Inspect,
        flavor: Flavor::Any,
        policy: &policy,
        limits: Limits::default(),
        allowed: eval::Allowed::none(),
        encoding: None,
        companions: None,
    };
    let loaded = match eval::load(&map, &name, &opts) {
        Ok(l) => l,
        Err(EvalError::Unsafe(u)) => {
            // Only ambiguous containers and broken streams stop inspect.
            let mut msg = format!("hermetic: {name}: not inspected: loaders could read it differently, or it is broken");
            for o in &u.offenders {
                let what = if o.qualname.is_empty() {
                    o.code.to_string()
                } else {
                    format!("{} ({})", o.qualname, o.code)
                };
                msg.push_str(&format!("\n  {what} at byte {}: {}", o.offset, o.reason));
            }
            msg.push_str(&format!(
                "\n`hermetic scan {name}` reports what it holds without evaluating it."
            ));
            eprintln!("{msg}");
            return Ok(ExitStatus::Findings);
        }
        Err(e) => {
            eprintln!("hermetic: {e}\n`hermetic scan {name}` reports what it holds without evaluating it.");
            return Ok(ExitStatus::Findings);
        }
    };
    if args.json {
        let doc = json_doc(&loaded);
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
    } else {
        text(&loaded, args.max_items, out)?;
    }
    Ok(ExitStatus::Clean)
}

/// A torch.distributed.checkpoint folder: its tensors (global shape,
/// dtype, the chunks each was saved in, and where) from `.metadata`, then
/// the state `dcp_to_torch_save` would build, tensors and non-tensor values,
/// read by the safe evaluator (nothing runs).
pub(crate) fn run_dcp(
    dir: &Path,
    args: &InspectArgs,
    out: &mut dyn Write,
) -> Result<ExitStatus, CliError> {
    use hermetic_pickle::dcp;
    let name = dir.display().to_string();
    let md_path = dir.join(dcp::METADATA);
    let md = std::fs::read(&md_path)
        .map_err(|e| e.to_string())
        .and_then(|d| dcp::parse_metadata(&d, &md_path.display().to_string()));
    let md = match md {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hermetic: {name}: {e}\n`hermetic scan {name}` reports what it holds without evaluating it.");
            return Ok(ExitStatus::Findings);
        }
    };
    let loaded = match dcp::consolidate(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hermetic: {name}: {e}\n`hermetic scan {name}` reports what it holds without evaluating it.");
            return Ok(ExitStatus::Findings);
        }
    };
    let chunks = |fqn: &str, c: &[dcp::Chunk]| -> Vec<Json> {
        c.iter()
            .map(|c| {
                let e = md.entry(fqn, Some(&c.offsets));
                serde_json::json!({
                    "offsets": c.offsets, "sizes": c.sizes,
                    "file": e.map(|e| e.file.clone()), "offset": e.map(|e| e.offset), "length": e.map(|e| e.length),
                })
            })
            .collect()
    };
    if args.json {
        let items: Vec<Json> = md
            .items
            .iter()
            .map(|(fqn, it)| match it {
                dcp::Item::Tensor { dtype, size, chunks: c } => serde_json::json!({
                    "key": fqn, "kind": "tensor", "dtype": dtype.name(), "shape": size, "chunks": chunks(fqn, c),
                }),
                dcp::Item::Bytes => {
                    let e = md.entry(fqn, None);
                    serde_json::json!({"key": fqn, "kind": "bytes", "file": e.map(|e| e.file.clone()), "offset": e.map(|e| e.offset), "length": e.map(|e| e.length)})
                }
            })
            .collect();
        let doc = serde_json::json!({
            "path": name, "format": "dcp", "version": md.version, "items": items, "state": json_doc(&loaded),
        });
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(ExitStatus::Clean);
    }
    let tensors = md
        .items
        .iter()
        .filter(|(_, i)| matches!(i, dcp::Item::Tensor { .. }))
        .count();
    writeln!(
        out,
        "{name}: torch.distributed.checkpoint (version {}), {tensors} tensors, {} other items",
        md.version.as_deref().unwrap_or("?"),
        md.items.len() - tensors
    )?;
    for (fqn, it) in &md.items {
        if let dcp::Item::Tensor {
            dtype,
            size,
            chunks: c,
        } = it
        {
            writeln!(
                out,
                "  {fqn}  {} {size:?}  {} chunk(s)",
                dtype.name(),
                c.len()
            )?;
            if c.len() > 1 {
                for ch in c {
                    let at = md
                        .entry(fqn, Some(&ch.offsets))
                        .map(|e| format!("{}@{}", e.file, e.offset))
                        .unwrap_or_default();
                    writeln!(out, "    at {:?} size {:?}  {at}", ch.offsets, ch.sizes)?;
                }
            }
        }
    }
    writeln!(out, "state (as dcp_to_torch_save builds it):")?;
    text(&loaded, args.max_items, out)?;
    Ok(ExitStatus::Clean)
}

/// A human size: `512 B`, `1.5 KiB`.
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

/// Decimal text of a little-endian two's complement integer.
pub(crate) fn big_decimal(bytes: &[u8]) -> String {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        let mut carry = 1u16;
        for b in mag.iter_mut() {
            let v = u16::from(!*b) + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    if mag.len() > 512 {
        return format!("<{}-byte integer>", mag.len());
    }
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut().rev() {
            let v = (rem << 8) | u32::from(*b);
            *b = (v / 10) as u8;
            rem = v % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:?}")
    }
}

fn qualname(l: &Loaded<'_>, id: Id) -> String {
    match l.arena.get(id) {
        Value::Global(g) => match &**g {
            Global::Known(k) => k.qualname(),
            Global::Foreign { module, name } => format!("{module}.{name}"),
        },
        Value::Object(o) => format!("{}(...)", qualname(l, o.class)),
        other => other.describe(),
    }
}

fn short_str(s: &str) -> String {
    let short: String = s.chars().take(60).collect();
    if short.len() < s.len() {
        format!("{short:?}... ({} chars)", s.chars().count())
    } else {
        format!("{s:?}")
    }
}

/// A numpy scalar's value, for the common little-endian types.
fn np_scalar_text(dtype: &NpDtype, data: &[u8]) -> String {
    let le = |n: usize| -> Option<[u8; 8]> {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(data.get(..n)?);
        Some(b)
    };
    let value = match dtype {
        NpDtype::Scalar {
            kind,
            itemsize,
            order,
            ..
        } if *order != eval::ByteOrder::Big => match (kind, itemsize) {
            (b'f', 8) => le(8).map(|b| float(f64::from_le_bytes(b))),
            (b'f', 4) => data
                .get(..4)
                .map(|b| float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))),
            (b'i', n @ (1 | 2 | 4 | 8)) => le(*n as usize).map(|b| {
                let shift = 64 - 8 * *n as u32;
                ((i64::from_le_bytes(b) << shift) >> shift).to_string()
            }),
            (b'u', n @ (1 | 2 | 4 | 8)) => {
                le(*n as usize).map(|b| u64::from_le_bytes(b).to_string())
            }
            (b'b', 1) => data
                .first()
                .map(|&b| if b != 0 { "True" } else { "False" }.to_string()),
            _ => None,
        },
        _ => None,
    };
    match value {
        Some(v) => format!("numpy {}({v})", dtype.descr()),
        None => format!("numpy scalar {}", dtype.descr()),
    }
}

/// One-line text for nodes that are not containers.
fn scalar(l: &Loaded<'_>, id: Id) -> Option<String> {
    Some(match l.arena.get(id) {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => big_decimal(b),
        Value::Float(f) => float(*f),
        Value::Complex(re, im) => format!("complex({}, {})", float(*re), float(*im)),
        Value::Str(s) => short_str(&s.lossy()),
        Value::Bytes(b) => format!("bytes[{}]", b.len()),
        Value::ByteArray(b) => format!("bytearray[{}]", b.len()),
        Value::Slice(s) => format!(
            "slice({}, {}, {})",
            scalar(l, s[0]).unwrap_or_else(|| "...".into()),
            scalar(l, s[1]).unwrap_or_else(|| "...".into()),
            scalar(l, s[2]).unwrap_or_else(|| "...".into())
        ),
        Value::Range(r) => format!(
            "range({}, {}, {})",
            scalar(l, r[0]).unwrap_or_else(|| "...".into()),
            scalar(l, r[1]).unwrap_or_else(|| "...".into()),
            scalar(l, r[2]).unwrap_or_else(|| "...".into())
        ),
        Value::Global(_) => qualname(l, id),
        Value::TorchDtype(d) => format!("torch.{}", d.name()),
        Value::TorchSize(d) => format!("torch.Size({d:?})"),
        Value::TorchDevice(d) => format!("torch.device({d:?})"),
        Value::TorchEnum(n) => format!("torch.{n}"),
        Value::Storage(s) => format!(
            "storage {} ({}, {})",
            s.index,
            s.dtype.name(),
            human(s.nbytes)
        ),
        Value::Tensor(t) => {
            let kind = if t.parameter { "Parameter" } else { "tensor" };
            let mut s = format!(
                "{kind} {} {:?} {}",
                t.dtype.name(),
                t.shape,
                human(t.nbytes())
            );
            let contiguous = contiguous(&t.shape, &t.stride);
            if !contiguous {
                s.push_str(&format!(" stride {:?}", t.stride));
            }
            if t.offset != 0 {
                s.push_str(&format!(" offset {}", t.offset));
            }
            match &t.storage {
                Some(v) => s.push_str(&format!(" (storage {})", v.index)),
                None => s.push_str(" (meta, no data)"),
            }
            if t.requires_grad {
                s.push_str(" requires_grad");
            }
            s
        }
        Value::Array(a) if !matches!(a.data, ArrayData::Objects(_)) => {
            let bytes = eval::array_nbytes(&a.shape, a.dtype.itemsize()).unwrap_or(0);
            format!(
                "ndarray {} {:?} {}{}",
                a.dtype.descr(),
                a.shape,
                human(bytes),
                if a.fortran { " fortran" } else { "" }
            )
        }
        Value::NpDtype(d) => format!("numpy.dtype({:?})", d.descr()),
        Value::NpScalar(s) => np_scalar_text(&s.dtype, &s.data),
        _ => return None,
    })
}

fn contiguous(shape: &[u64], stride: &[u64]) -> bool {
    let mut expect = 1u64;
    for (&n, &s) in shape.iter().zip(stride).rev() {
        if n != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(n);
    }
    true
}

/// Incoming references from reachable nodes: nodes referenced more than
/// once are numbered so later references can point back to them.
fn shared(l: &Loaded<'_>) -> HashMap<Id, usize> {
    let mut count: HashMap<Id, usize> = HashMap::new();
    for id in l.arena.reachable(l.root) {
        l.arena
            .for_each_child(id, |c| *count.entry(c).or_insert(0) += 1);
    }
    count.retain(|&id, n| {
        *n > 1 && scalar(l, id).is_none_or(|_| matches!(l.arena.get(id), Value::Tensor(_)))
    });
    count
}

enum Task {
    Node {
        id: Id,
        indent: usize,
        label: String,
    },
    Line(String),
}

/// How a container prints: its opening text, closing text, and labelled children.
type Shape = (String, String, Vec<(String, Id)>);

fn children_of(l: &Loaded<'_>, id: Id) -> Option<Shape> {
    let a = &l.arena;
    let plain = |v: &[Id]| v.iter().map(|&c| (String::new(), c)).collect::<Vec<_>>();
    let keyed = |items: &[(Id, Id)]| {
        a.dict_items(items)
            .into_iter()
            .map(|(k, v)| {
                let key = scalar(l, k).unwrap_or_else(|| format!("<{}>", a.get(k).describe()));
                (format!("{key}: "), v)
            })
            .collect::<Vec<_>>()
    };
    Some(match a.get(id) {
        Value::List(v) => ("[".into(), "]".into(), plain(v)),
        Value::Tuple(v) => ("(".into(), ")".into(), plain(v)),
        Value::Set(v) => ("{".into(), "}".into(), plain(&a.set_items(v))),
        Value::FrozenSet(v) => ("frozenset({".into(), "})".into(), plain(&a.set_items(v))),
        Value::Dict(d) => {
            let (open, close) = match d.kind {
                DictKind::Dict => ("{", "}"),
                DictKind::OrderedDict => ("OrderedDict({", "})"),
                DictKind::Counter => ("Counter({", "})"),
            };
            let mut items = keyed(&d.items);
            if let Some(s) = d.state {
                items.push(("(attributes) ".into(), s));
            }
            (open.into(), close.into(), items)
        }
        Value::Array(arr) => match &arr.data {
            ArrayData::Objects(v) => (
                format!("ndarray object {:?} [", arr.shape),
                "]".into(),
                plain(v),
            ),
            _ => return None,
        },
        Value::Object(o) => object_children(l, o),
        Value::Tensor(t) if t.state.is_some() || t.metadata.is_some() => {
            let mut items = Vec::new();
            if let Some(m) = t.metadata {
                items.push(("metadata: ".into(), m));
            }
            if let Some(s) = t.state {
                items.push(("attributes: ".into(), s));
            }
            (
                format!("{} with", scalar(l, id).unwrap_or_default()),
                String::new(),
                items,
            )
        }
        _ => return None,
    })
}

fn object_children(l: &Loaded<'_>, o: &Object) -> Shape {
    let made = match o.made {
        Made::Call => "called",
        Made::New => "created",
        Made::Reconstructor => "reconstructed",
    };
    let open = format!("<{}> ({made})", qualname(l, o.class));
    let mut items = Vec::new();
    let empty_args = o
        .args
        .is_none_or(|a| l.arena.seq_of(a).is_some_and(|s| s.is_empty()));
    if !empty_args {
        items.push(("args: ".to_string(), o.args.unwrap_or(eval::NONE)));
    }
    if let Some(k) = o.kwargs {
        items.push(("kwargs: ".to_string(), k));
    }
    if let Some(s) = o.state {
        items.push(("state: ".to_string(), s));
    }
    for &c in &o.list_items {
        items.push(("item: ".to_string(), c));
    }
    for &(k, v) in &o.dict_items {
        let key = scalar(l, k).unwrap_or_else(|| "<key>".into());
        items.push((format!("[{key}]: "), v));
    }
    (open, String::new(), items)
}

pub(crate) fn text(l: &Loaded<'_>, limit: usize, out: &mut dyn Write) -> std::io::Result<()> {
    let (tensors, bytes) = tensor_totals(l);
    writeln!(out, "{}", l.file)?;
    let verdict = l.report.verdict;
    writeln!(
        out,
        "  format: {}{}, verdict: {verdict}, {tensors} tensors ({}) in {} storages",
        l.format.as_str(),
        if l.big_endian { " (big-endian)" } else { "" },
        human(bytes),
        l.storages.len()
    )?;
    let findings: Vec<_> = l.report.all_findings().collect();
    if !findings.is_empty() {
        writeln!(out, "  not data-only: nothing below was imported or called")?;
        for f in findings {
            let what = if f.module.is_empty() {
                f.code.to_string()
            } else {
                format!("{}.{} ({})", f.module, f.name, f.code)
            };
            writeln!(out, "    {what} at byte {}", f.offset)?;
        }
    }
    writeln!(out, "  tree:")?;
    let shared = shared(l);
    let mut numbers: HashMap<Id, usize> = HashMap::new();
    let mut stack = vec![Task::Node {
        id: l.root,
        indent: 2,
        label: String::new(),
    }];
    while let Some(task) = stack.pop() {
        let (id, indent, label) = match task {
            Task::Line(s) => {
                writeln!(out, "{s}")?;
                continue;
            }
            Task::Node { id, indent, label } => (id, indent, label),
        };
        let pad = "  ".repeat(indent);
        if indent > MAX_PRINT_DEPTH {
            writeln!(out, "{pad}{label}...")?;
            continue;
        }
        let mut tag = String::new();
        if shared.contains_key(&id) {
            if let Some(n) = numbers.get(&id) {
                writeln!(out, "{pad}{label}<same object as #{n}>")?;
                continue;
            }
            let n = numbers.len() + 1;
            numbers.insert(id, n);
            tag = format!("#{n} ");
        }
        match children_of(l, id) {
            None => {
                let s = scalar(l, id).unwrap_or_else(|| l.arena.get(id).describe());
                writeln!(out, "{pad}{label}{tag}{s}")?;
            }
            Some((open, close, items)) if items.is_empty() => {
                let empty = match l.arena.get(id) {
                    Value::Set(_) => "set()".to_string(),
                    _ => format!("{open}{close}"),
                };
                writeln!(out, "{pad}{label}{tag}{empty}")?;
            }
            Some((open, close, items)) => {
                writeln!(out, "{pad}{label}{tag}{open}")?;
                if !close.is_empty() {
                    stack.push(Task::Line(format!("{pad}{close}")));
                }
                if items.len() > limit {
                    stack.push(Task::Line(format!(
                        "{pad}  ... {} more",
                        items.len() - limit
                    )));
                }
                for (label, child) in items.into_iter().take(limit).rev() {
                    stack.push(Task::Node {
                        id: child,
                        indent: indent + 1,
                        label,
                    });
                }
            }
        }
    }
    Ok(())
}

fn tensor_totals(l: &Loaded<'_>) -> (usize, u64) {
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

struct JsonCtx<'l, 'a> {
    l: &'l Loaded<'a>,
    shared: HashMap<Id, usize>,
    numbers: HashMap<Id, usize>,
}

impl JsonCtx<'_, '_> {
    fn node(&mut self, id: Id, depth: usize) -> Json {
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

fn hex(b: &[u8]) -> String {
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

#[cfg(test)]
mod tests;
