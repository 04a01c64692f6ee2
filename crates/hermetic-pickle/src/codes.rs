//! The catalogue of finding codes: every [`crate::Finding`] carries one.
//!
//! A code's string ([`FindingCode::as_str`]) is what `hermetic scan --format
//! json` writes, the SARIF rule id and what `hermetic.scan` hands Python, so
//! it never changes once published; new codes are only ever added. The
//! README's "Finding codes" table lists every code with its meaning (a test
//! fails when it does not).

use serde::{Serialize, Serializer};
use std::fmt;

macro_rules! finding_codes {
    ($( $variant:ident = $name:literal, $meaning:literal; )*) => {
        /// A stable snake_case finding code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FindingCode {
            $( #[doc = $meaning] $variant, )*
        }

        impl FindingCode {
            /// Every code, in catalogue order.
            pub const ALL: &'static [FindingCode] = &[$(FindingCode::$variant,)*];

            /// The code as JSON, SARIF and Python see it.
            pub const fn as_str(self) -> &'static str {
                match self { $(FindingCode::$variant => $name,)* }
            }

            /// What the code means, in one line.
            pub const fn meaning(self) -> &'static str {
                match self { $(FindingCode::$variant => $meaning,)* }
            }
        }
    };
}

finding_codes! {
    DangerousImport = "dangerous_import",
        "The pickle imports a known code-execution, file, process or network primitive.";
    UnknownImport = "unknown_import",
        "The pickle imports a global outside the allowlist of data constructors.";
    DeniedImport = "denied_import",
        "The pickle imports a global the policy file denies.";
    AttributeTraversal = "attribute_traversal",
        "The pickle reaches interpreter internals through dunder attributes.";
    DynamicGlobal = "dynamic_global",
        "STACK_GLOBAL takes a module or name computed at load time.";
    IndirectCall = "indirect_call",
        "The pickle calls a value that is not a named global.";
    MethodCall = "method_call",
        "The pickle calls a method of an imported object by name.";
    BuildOnGlobal = "build_on_global",
        "BUILD sets attributes on an imported module, class or function.";
    ExtensionCode = "extension_code",
        "The pickle names a global through the copyreg extension registry.";
    ProtoMidStream = "proto_mid_stream",
        "A PROTO opcode after the start changes how later names resolve.";
    FrameViolation = "frame_violation",
        "FRAME boundaries that the C and pure-Python unpicklers read differently.";
    TruncatedStream = "truncated_stream",
        "The stream ends early; the unpickler runs everything before the end.";
    MalformedStream = "malformed_stream",
        "The stream is malformed; the unpickler runs everything before the error.";
    TrailingData = "trailing_data",
        "Retired, no longer reported: bytes after the last pickle that a second load could read (they are now scanned as a stream of their own).";
    LimitExceeded = "limit_exceeded",
        "The input exceeds a scanning bound and was not fully analysed.";
    PolyglotPickleZip = "polyglot_pickle_zip",
        "The file is both a pickle and a zip; torch and zipfile read different things.";
    PolyglotPickle = "polyglot_pickle",
        "The file reads as another format, but pickle.load reads a pickle that imports globals from it.";
    AmbiguousZip = "ambiguous_zip",
        "A zip archive that strict and tolerant readers read differently.";
    AmbiguousTar = "ambiguous_tar",
        "A tar archive holds a torch member more than once; tarfile uses the last copy.";
    MalformedContainer = "malformed_container",
        "A container (zip, tar, npy, safetensors, compressed data) that is corrupt or that no loader can open as what it claims to be.";
    UnreadableRecord = "unreadable_record",
        "A record that a loader reads but the scan cannot walk (a cut-off or special tar member, joblib array data).";
    DecompressionLimit = "decompression_limit",
        "Decompressed data exceeds the bound and was not fully analysed.";
    OutOfBandBuffer = "out_of_band_buffer",
        "The stream takes out-of-band buffers from the loader.";
    UnusualStructure = "unusual_structure",
        "The stream has a structure no pickler writes.";
    TorchscriptCode = "torchscript_code",
        "A TorchScript archive carries code that torch.jit.load compiles and runs.";
    JoblibArrayWrapper = "joblib_array_wrapper",
        "joblib's old array placeholder, whose array lies in a companion file the scan does not read.";
    DcpLayout = "dcp_layout",
        "A DCP checkpoint's metadata points its reader at bytes the scan cannot vouch for.";
    DcpUnaccounted = "dcp_unaccounted",
        "Bytes of a DCP checkpoint that no metadata item accounts for.";
    ScanError = "scan_error",
        "The file could not be read or analysed.";
}

impl FindingCode {
    /// The code whose string is `s`.
    pub fn from_name(s: &str) -> Option<FindingCode> {
        FindingCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FindingCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_snake_case_and_round_trip() {
        let mut seen = HashSet::new();
        for &c in FindingCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && !s.starts_with('_')
                    && !s.ends_with('_'),
                "{s}"
            );
            assert_eq!(FindingCode::from_name(s), Some(c));
            assert_eq!(c.to_string(), s);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{s}\""));
            let m = c.meaning();
            assert!(
                !m.is_empty() && !m.contains('\n') && m.ends_with('.'),
                "{s}"
            );
        }
        assert_eq!(FindingCode::from_name("no_such_code"), None);
    }

    /// The README's table of finding codes (after its `| finding code |
    /// meaning |` header) has one row per code, in catalogue order, with its
    /// meaning.
    #[test]
    fn the_readme_lists_every_code() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|l| *l != "| finding code | meaning |")
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let want: Vec<String> = FindingCode::ALL
            .iter()
            .map(|c| format!("| `{}` | {} |", c.as_str(), c.meaning()))
            .collect();
        assert_eq!(rows, want, "README.md's table of finding codes");
    }
}
