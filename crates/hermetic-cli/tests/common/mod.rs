//! What the CLI test files share: running the real binary.

use std::path::Path;
use std::process::Command;

/// Runs the `hermetic` binary in `dir` with the firewall's variable unset:
/// `(exit status, stdout, stderr)`.
pub fn hermetic_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hermetic"))
        .args(args)
        .current_dir(dir)
        .env_remove("HERMETIC_PICKLE")
        .output()
        .expect("run hermetic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
