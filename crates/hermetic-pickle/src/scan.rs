//! Scanning whole files: detect the container by content, find every pickle
//! stream in it, analyse each, and judge the file.

use crate::containers::{scan_data, Loc, Scanner};
use crate::policy::Policy;
use crate::report::FileReport;
use crate::Limits;
use std::io::Read;
use std::path::Path;

/// Scans a file. Large files are memory-mapped, so only the parts that hold
/// pickles (a zip's directory and its `.pkl` records) are ever read.
pub fn scan_file(path: &Path, policy: &Policy, limits: &Limits) -> FileReport {
    let display = path.display().to_string();
    let file = match crate::fsio::open_regular(path) {
        Ok(f) => f,
        Err(e) => return io_error(display, e),
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return io_error(display, e),
    };
    if len == 0 {
        return FileReport::new(display, "none");
    }
    // Mapping and unmapping costs more than reading a small file outright.
    if len <= SMALL_FILE {
        // One buffer per thread: fresh pages for every small file cost more
        // (the kernel zeroes them) than the scan itself.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        return BUF.with(|buf| {
            let mut data = buf.borrow_mut();
            data.clear();
            match (&file).take(SMALL_FILE + 1).read_to_end(&mut data) {
                Ok(_) => scan_bytes(&data, &display, policy, limits),
                Err(e) => io_error(display, e),
            }
        });
    }
    match map_file(&file) {
        Ok(map) => scan_bytes(&map, &display, policy, limits),
        Err(e) => io_error(display, e),
    }
}

/// Files up to this size are read rather than memory-mapped.
const SMALL_FILE: u64 = 1 << 20;

#[allow(unsafe_code)]
fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and every byte is treated as untrusted
    // input, so concurrent modification can only change what the scan
    // reports; it cannot break memory safety of the parser, which never
    // assumes two reads of the same byte agree.
    unsafe { memmap2::Mmap::map(file) }
}

fn io_error(path: String, e: std::io::Error) -> FileReport {
    FileReport::unreadable(path, e.to_string())
}

/// Scans an in-memory file. `path` only names it in the report.
///
/// The container is recognised by content, never by name (see
/// [`crate::containers`]), and every pickle stream a loader would unpickle
/// from it is analysed.
pub fn scan_bytes(data: &[u8], path: &str, policy: &Policy, limits: &Limits) -> FileReport {
    let mut sc = Scanner::new(FileReport::new(path, "none"), policy, limits, data.len());
    let format = scan_data(data, &Loc::default(), &mut sc);
    let mut report = sc.report;
    report.format = format;
    report.finish();
    report
}

pub use crate::streams::{looks_like_pickle, scan_pickle_sequence};
