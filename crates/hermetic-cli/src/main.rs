fn main() -> std::process::ExitCode {
    hermetic_cli::run(std::env::args_os()).into()
}
