//! `hermetic inspect`: what a file holds, by detected content. Tensor files
//! (hermetic, safetensors, sharded checkpoints) are handled here; everything
//! else goes to the pickle evaluator (`inspect_pickle`).

use super::CliError;
use crate::args::InspectArgs;
use crate::ExitStatus;
use hermetic_format::{index_path, Archive, Node, NodeId, TensorKind, Tree};
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
    let mut f = std::fs::File::open(path)?;
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

fn human(n: u64) -> String {
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
            " tree v1 on safetensors"
        } else {
            " (flat)"
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

struct Printer<'a> {
    ar: &'a Archive,
    tree: &'a Tree,
    out: &'a mut dyn Write,
    limit: usize,
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
                        if e.name != t.entry || t.view.is_some() {
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
}
