// The system allocator, not mimalloc: the CLI is a short-lived process, and
// mimalloc's fresh per-thread heaps cost page faults (transparent huge pages
// zeroed in full) that outweigh its faster small allocations. Measured with
// bench/bench_scan.py's 200-file folder (40 runs each, alternating):
// 6.64-6.79 ms median with the system allocator against 7.19-7.23 ms with
// mimalloc, and `--version` 1.56 against 1.95 ms.

fn main() -> std::process::ExitCode {
    hermetic_cli::run(std::env::args_os()).into()
}
