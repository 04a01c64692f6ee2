// Scans allocate many small reports and strings; mimalloc is markedly
// faster than glibc's allocator for that pattern (bench/bench_scan.py).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hermetic_cli::run(std::env::args_os()).into()
}
