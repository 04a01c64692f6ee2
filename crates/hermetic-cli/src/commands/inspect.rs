//! `hermetic inspect`: what a file holds, by detected content. Tensor files
//! (hermetic, safetensors, sharded checkpoints) are handled here; everything
//! else goes to the pickle evaluator (`inspect_pickle`).

use super::inspect_pickle::{float, human};
use super::CliError;
use crate::args::InspectArgs;
use crate::ExitStatus;
use hermetic_format::{index_path, Archive, NamedRef, Node, NodeId, RefKind, TensorKind, Tree};
use std::io::{Read, Write};
use std::path::Path;

/// What a path holds, judged from its first bytes (never its name alone).
enum Detected {
    /// A safetensors file (with or without a hermetic tree) or a sharded
    /// checkpoint's index.
    Tensors,
    /// Anything else.
    Other,
}

fn detect(path: &Path) -> std::io::Result<Detected> {
    if index_path(path).is_some() {
        return Ok(Detected::Tensors);
    }
    let mut head = [0u8; 9];
    let mut f = hermetic_pickle::fsio::open_regular(path)?;
    let len = f.metadata()?.len();
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if got == 9 {
        let n = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        if head[8] == b'{' && n.saturating_add(8) <= len {
            return Ok(Detected::Tensors);
        }
    }
    Ok(Detected::Other)
}

pub(crate) fn run(args: &InspectArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let mut status = ExitStatus::Clean;
    for path in &args.files {
        if path.is_dir() && path.join(hermetic_pickle::dcp::METADATA).is_file() {
            let st = super::inspect_pickle::run_dcp(path, args, out)?;
            if st != ExitStatus::Clean {
                status = st;
            }
            continue;
        }
        let detected = match detect(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("hermetic: {}: {e}", path.display());
                status = ExitStatus::Internal;
                continue;
            }
        };
        match detected {
            Detected::Tensors => match Archive::open(path) {
                Ok(ar) => tensors(&ar, args, out)?,
                Err(e) => {
                    eprintln!("hermetic: {e}");
                    status = ExitStatus::Findings;
                }
            },
            Detected::Other => {
                let st = super::inspect_pickle::run_file(path, args, out)?;
                if st != ExitStatus::Clean {
                    status = st;
                }
            }
        }
    }
    Ok(status)
}

fn tensors(ar: &Archive, args: &InspectArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let entries: Vec<_> = ar
        .files
        .iter()
        .flat_map(|f| {
            f.header
                .entries
                .iter()
                .map(move |e| (f.path.display().to_string(), e))
        })
        .collect();
    let total: u64 = entries.iter().map(|(_, e)| e.nbytes).sum();
    let format = if ar.has_tree() {
        "hermetic"
    } else {
        "safetensors"
    };
    if args.json {
        let doc = serde_json::json!({
            "path": ar.path.display().to_string(),
            "format": format,
            "files": ar.files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
            "metadata": ar.metadata(),
            "entries": entries.iter().map(|(file, e)| serde_json::json!({
                "name": e.name,
                "dtype": e.st_dtype.to_string(),
                "shape": e.shape,
                "nbytes": e.nbytes,
                "offset": e.start,
                "file": file,
            })).collect::<Vec<_>>(),
            "total_bytes": total,
            "tree": if ar.has_tree() {
                ar.tree().node_to_value(ar.tree().root).map_err(|e| CliError::Usage(e.to_string()))?
            } else {
                serde_json::Value::Null
            },
            "version": ar.has_tree().then(|| ar.tree().required_version()),
            "classes": named_refs(ar).iter().map(|r| serde_json::json!({
                "kind": r.kind.as_str(),
                "name": r.name,
                "count": r.count,
                "fields": r.fields,
            })).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{}", ar.path.display())?;
    writeln!(
        out,
        "  format: {format}{}, {} tensor entries, {} in {} file{}",
        if ar.has_tree() {
            format!(" tree v{} on safetensors", ar.tree().required_version())
        } else {
            " (flat)".to_string()
        },
        entries.len(),
        human(total),
        ar.files.len(),
        if ar.files.len() == 1 { "" } else { "s" }
    )?;
    let md = ar.metadata();
    if !md.is_empty() {
        writeln!(out, "  metadata:")?;
        for (k, v) in &md {
            let v: String = v.chars().take(80).collect();
            writeln!(out, "    {k}: {v}")?;
        }
    }
    let refs = named_refs(ar);
    if !refs.is_empty() {
        writeln!(
            out,
            "  classes (rebuilt only from the loader's type= or allow=):"
        )?;
        for r in &refs {
            let count = if r.count > 1 {
                format!(" ({}x)", r.count)
            } else {
                String::new()
            };
            let fields = if r.kind == RefKind::Object {
                format!(" fields: {}", r.fields.join(", "))
            } else {
                String::new()
            };
            writeln!(out, "    {:<9} {}{count}{fields}", r.kind.as_str(), r.name)?;
        }
    }
    writeln!(out, "  tree:")?;
    let mut p = Printer {
        ar,
        tree: ar.tree(),
        out,
        limit: args.max_items,
    };
    p.node(ar.tree().root, 2, "")?;
    Ok(())
}

/// The classes, enums and callables a file's tree names.
fn named_refs(ar: &Archive) -> Vec<NamedRef> {
    if ar.has_tree() {
        ar.tree().named_refs(ar.tree().root)
    } else {
        Vec::new()
    }
}

struct Printer<'a> {
    ar: &'a Archive,
    tree: &'a Tree,
    out: &'a mut dyn Write,
    limit: usize,
}

impl Printer<'_> {
    fn scalar(&self, id: NodeId) -> Option<String> {
        Some(match self.tree.node(id) {
            Node::None => "None".into(),
            Node::Bool(b) => if *b { "True" } else { "False" }.into(),
            Node::Int(i) => i.to_string(),
            Node::BigInt(h) => format!("int(0x{})", h.trim_start_matches('-'))
                .replace("int(", if h.starts_with('-') { "-int(" } else { "int(" }),
            Node::Float(x) => float(*x),
            Node::Complex(re, im) => format!("complex({}, {})", float(*re), float(*im)),
            Node::Str(s) => {
                let short: String = s.chars().take(60).collect();
                if short.len() < s.len() {
                    format!("{short:?}... ({} chars)", s.chars().count())
                } else {
                    format!("{s:?}")
                }
            }
            Node::Bytes(b) => format!("bytes[{}]", b.len()),
            Node::BytesEntry(e) => {
                let n = self.ar.locate(e).map(|(_, i)| i.nbytes).unwrap_or(0);
                format!("bytes[{n}] (entry {e:?})")
            }
            Node::Ref(n) => format!("<same object as #{n}>"),
            Node::TorchDtype(d) => format!("torch.{d}"),
            Node::TorchDevice(d) => format!("torch.device({d:?})"),
            Node::TorchSize(s) => format!("torch.Size({s:?})"),
            Node::NpScalar { dtype, .. } => format!("numpy scalar {dtype}"),
            Node::Enum { class, value } => {
                let v = self.scalar(*value).unwrap_or_else(|| "...".into());
                format!("{class}({v})")
            }
            Node::Callable(name) => format!("<function or class {name}>"),
            Node::Datetime(t) => format!("datetime({t})"),
            Node::Date(t) => format!("date({t})"),
            Node::Timedelta {
                days,
                seconds,
                microseconds,
            } => format!("timedelta(days={days}, seconds={seconds}, microseconds={microseconds})"),
            Node::Path(t) => format!("Path({t:?})"),
            Node::Uuid(t) => format!("UUID({t:?})"),
            Node::Decimal(t) => format!("Decimal({t:?})"),
            Node::Range(r) => format!("range({}, {}, {})", r[0], r[1], r[2]),
            Node::Time(t) => format!("time({t:?})"),
            Node::Timezone { offset, name } => match name {
                Some(n) => format!("timezone({offset:?}, {n:?})"),
                None => format!("timezone({offset:?})"),
            },
            Node::PurePath { windows, text } => {
                let class = if *windows {
                    "PureWindowsPath"
                } else {
                    "PurePosixPath"
                };
                format!("{class}({text:?})")
            }
            Node::Tensor(t) => {
                let kind = match t.kind {
                    TensorKind::Torch => "tensor",
                    TensorKind::Parameter => "Parameter",
                    TensorKind::Numpy => "ndarray",
                };
                match self.ar.resolve(t) {
                    Ok((_, e, r)) => {
                        let numel: u64 = r.shape.iter().product();
                        let mut s = format!(
                            "{kind} {} {:?} {}",
                            r.dtype,
                            r.shape,
                            human(numel * r.dtype.itemsize())
                        );
                        if let Some(b) = &t.base {
                            s.push_str(&format!(" (entry {:?}, a view of {b:?}", t.entry));
                            if r.offset != 0 {
                                s.push_str(&format!(" at byte {}", r.offset));
                            }
                            s.push(')');
                        } else if e.name != t.entry || t.view.is_some() {
                            s.push_str(&format!(" (view of entry {:?}", e.name));
                            if r.offset != 0 {
                                s.push_str(&format!(" at byte {}", r.offset));
                            }
                            s.push(')');
                        }
                        if t.requires_grad() {
                            s.push_str(" requires_grad");
                        }
                        s
                    }
                    Err(e) => format!("{kind} <{e}>"),
                }
            }
            _ => return None,
        })
    }

    fn node(&mut self, id: NodeId, indent: usize, label: &str) -> std::io::Result<()> {
        let pad = "  ".repeat(indent);
        if let Some(s) = self.scalar(id) {
            return writeln!(self.out, "{pad}{label}{s}");
        }
        let (open, close, items): (&str, &str, Vec<(Option<NodeId>, NodeId)>) =
            match self.tree.node(id) {
                Node::List(v) => ("[", "]", v.iter().map(|&c| (None, c)).collect()),
                Node::Tuple(v) => ("(", ")", v.iter().map(|&c| (None, c)).collect()),
                Node::Set(v) => ("{", "}", v.iter().map(|&c| (None, c)).collect()),
                Node::FrozenSet(v) => ("frozenset({", "})", v.iter().map(|&c| (None, c)).collect()),
                Node::Dict(p) => ("{", "}", p.iter().map(|&(k, v)| (Some(k), v)).collect()),
                Node::ODict(p) => (
                    "OrderedDict({",
                    "})",
                    p.iter().map(|&(k, v)| (Some(k), v)).collect(),
                ),
                Node::Namespace(attrs) => {
                    let named: Vec<(String, NodeId)> = attrs.clone();
                    return self.fields(
                        indent,
                        label,
                        "argparse.Namespace(",
                        named.iter().map(|(k, v)| (k.as_str(), *v)),
                    );
                }
                Node::DefaultDict { factory, pairs } => (
                    if factory.is_some() {
                        "defaultdict({"
                    } else {
                        "defaultdict(None, {"
                    },
                    "})",
                    pairs.iter().map(|&(k, v)| (Some(k), v)).collect(),
                ),
                Node::Counter(p) => (
                    "Counter({",
                    "})",
                    p.iter().map(|&(k, v)| (Some(k), v)).collect(),
                ),
                Node::Deque { items, .. } => {
                    ("deque([", "])", items.iter().map(|&c| (None, c)).collect())
                }
                Node::Slice(v) => ("slice(", ")", v.iter().map(|&c| (None, c)).collect()),
                Node::Attrs { target, attrs } => {
                    let (target, attrs) = (*target, attrs.clone());
                    self.node(target, indent, label)?;
                    let named: Vec<(String, NodeId)> = attrs
                        .into_iter()
                        .map(|(n, v)| (format!(".{n}"), v))
                        .collect();
                    return self.fields(
                        indent,
                        "",
                        "with attributes(",
                        named.iter().map(|(k, v)| (k.as_str(), *v)),
                    );
                }
                Node::Object { shape, values } => {
                    return self.fields(
                        indent,
                        label,
                        &format!("{}(", shape.class),
                        shape
                            .fields
                            .iter()
                            .map(String::as_str)
                            .zip(values.iter().copied()),
                    )
                }
                Node::Partial {
                    func,
                    args,
                    keywords,
                } => {
                    let named: Vec<(String, NodeId)> = args
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| (format!("args[{i}]"), v))
                        .chain(keywords.iter().cloned())
                        .collect();
                    return self.fields(
                        indent,
                        label,
                        &format!("functools.partial({func},"),
                        named.iter().map(|(k, v)| (k.as_str(), *v)),
                    );
                }
                _ => ("?", "?", Vec::new()),
            };
        if items.is_empty() {
            return writeln!(self.out, "{pad}{label}{open}{close}");
        }
        writeln!(self.out, "{pad}{label}{open}")?;
        for (i, (k, v)) in items.iter().enumerate() {
            if i == self.limit {
                writeln!(self.out, "{pad}  ... {} more", items.len() - i)?;
                break;
            }
            let label = match k {
                Some(k) => format!("{}: ", self.scalar(*k).unwrap_or_else(|| "<key>".into())),
                None => String::new(),
            };
            self.node(*v, indent + 1, &label)?;
        }
        writeln!(self.out, "{pad}{close}")
    }

    /// A class record or partial: `name(` then `field: value` lines, `)`.
    fn fields<'n>(
        &mut self,
        indent: usize,
        label: &str,
        open: &str,
        items: impl Iterator<Item = (&'n str, NodeId)>,
    ) -> std::io::Result<()> {
        let pad = "  ".repeat(indent);
        let items: Vec<(&str, NodeId)> = items.collect();
        if items.is_empty() {
            return writeln!(self.out, "{pad}{label}{open})");
        }
        writeln!(self.out, "{pad}{label}{open}")?;
        for (i, (name, v)) in items.iter().enumerate() {
            if i == self.limit {
                writeln!(self.out, "{pad}  ... {} more", items.len() - i)?;
                break;
            }
            self.node(*v, indent + 1, &format!("{name}: "))?;
        }
        writeln!(self.out, "{pad})")
    }
}
