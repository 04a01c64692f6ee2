//! Disassembles pickles exactly as CPython 3.11's `pickletools.dis` does.
//!
//! ```text
//! dis [FILE]         every stream of FILE (or stdin) in sequence; on an
//!                    error, the partial text on stdout, the message on
//!                    stderr, exit status 1
//! dis --batch DIR    for each file F in DIR (not already a .dis or .err),
//!                    the first stream's text to F.dis, or on an error
//!                    F.err: one line `Exception: message`, then the
//!                    partial text
//! ```

use hermetic_pickle::dis::disassemble;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, dir] if flag == "--batch" => batch(Path::new(dir)),
        [] => read_stdin().and_then(|data| streams(&data)),
        [path] if path != "-" => std::fs::read(path)
            .map_err(|e| format!("{path}: {e}"))
            .and_then(|data| streams(&data)),
        [_] => read_stdin().and_then(|data| streams(&data)),
        _ => Err("usage: dis [FILE] | dis --batch DIR".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .map_err(|e| format!("stdin: {e}"))?;
    Ok(data)
}

/// Prints the disassembly of each stream in turn, as `pickletools.dis`
/// would print each one on its own.
fn streams(data: &[u8]) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    let mut pos = 0;
    loop {
        match disassemble(data, pos) {
            Ok(d) => {
                stdout
                    .write_all(d.text.as_bytes())
                    .map_err(|e| e.to_string())?;
                pos = d.end;
            }
            Err(e) => {
                let _ = stdout.write_all(e.partial_text.as_bytes());
                let _ = stdout.flush();
                return Err(format!("{}: {}", e.exception, e.message));
            }
        }
        if pos >= data.len() {
            return Ok(());
        }
    }
}

fn batch(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let is_output = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("dis" | "err")
        );
        if is_output || !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (suffix, body) = match disassemble(&data, 0) {
            Ok(d) => ("dis", d.text),
            Err(e) => (
                "err",
                format!("{}: {}\n{}", e.exception, e.message, e.partial_text),
            ),
        };
        let mut out = path.into_os_string();
        out.push(".");
        out.push(suffix);
        std::fs::write(&out, body).map_err(|e| format!("{}: {e}", Path::new(&out).display()))?;
    }
    Ok(())
}
