"""The `hermetic` command installed by pip: a thin call into the Rust CLI."""

import sys

from hermetic._hermetic import run_cli


def main() -> None:
    # Flush Python's buffers first: the Rust side writes to the same fds.
    sys.stdout.flush()
    sys.exit(run_cli(["hermetic", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
