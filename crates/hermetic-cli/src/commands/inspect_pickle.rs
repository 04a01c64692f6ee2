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

mod json;
mod scalars;

pub(crate) use json::json_doc;
use json::tensor_totals;
pub(crate) use scalars::{big_decimal, float, human};
use scalars::{qualname, scalar};

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

#[cfg(test)]
mod tests;
