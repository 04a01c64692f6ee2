//! hermetic's pickle engine: a zero-copy parser for every opcode of pickle
//! protocols 0 to 5, static analysis by symbolic execution, an allowlist
//! policy, and readers for the containers pickles hide in. Nothing here
//! imports or calls anything named in a file.

pub mod analysis;
pub mod codes;
pub mod containers;
pub mod dcp;
pub mod dis;
pub mod eval;
pub mod fsio;
pub mod opcodes;
pub mod parser;
pub mod policy;
pub mod report;
pub mod scan;
mod stack;
mod streams;
pub mod text;
pub mod walk;

pub use analysis::{analyze_stream, blob_id, StreamAnalysis};
pub use codes::FindingCode;
pub use opcodes::Opcode;
pub use parser::{Arg, Instr, ParseError, Parser};
pub use policy::{Policy, Verdict};
pub use report::{FileReport, Finding, GlobalRef, StreamReport};

/// Bounds on the work and memory one untrusted input may cost. Every count
/// is checked before the allocation it would cause.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Opcodes per stream.
    pub max_opcodes: u64,
    /// Stack and MARK depth of the symbolic machine.
    pub max_stack: usize,
    /// Pickle streams per file (legacy checkpoints hold several).
    pub max_streams: usize,
    /// Bytes all decompressions of one file may produce, at most.
    pub max_decompressed: u64,
    /// Decompressed bytes per compressed byte a file may produce (above a
    /// 64 MiB floor): a 10 kB bomb is stopped after 64 MiB, not 8 GiB.
    pub max_decompression_ratio: u64,
    /// Entries in one zip or tar archive.
    pub max_archive_entries: usize,
    /// Nesting of containers (a zip in a zip in a gzip ...).
    pub max_nesting: u32,
    /// Bytes the evaluator ([`eval`]) may allocate for one file's values,
    /// at most (it also allows no more than 64 times the file's size).
    pub max_eval_memory: u64,
}

impl Limits {
    /// What the decompressions of a file of `input_len` bytes may produce.
    pub fn decompression_budget(&self, input_len: u64) -> u64 {
        input_len
            .saturating_mul(self.max_decompression_ratio)
            .max(64 << 20)
            .min(self.max_decompressed)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_opcodes: 1 << 28,
            max_stack: 1 << 24,
            max_streams: 4096,
            max_decompressed: 4 << 30,
            max_decompression_ratio: 1024,
            max_archive_entries: 1 << 20,
            max_nesting: 8,
            max_eval_memory: 4 << 30,
        }
    }
}
pub use scan::{scan_bytes, scan_file};
