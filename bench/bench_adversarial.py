"""Time and peak memory of hermetic on adversarial inputs, under /usr/bin/time -v.

The fail-closed target: any input up to 1 MB (after decompression bounds) is
analysed in under 1 s and 256 MB peak RSS by `hermetic scan`, by
`hermetic.load_pickle`, by the firewall's refusal path (`pickle.loads` under
HERMETIC_PICKLE=deny, inside the protected process) and by `hermetic.load`.
Each input is built here; each tool runs in a fresh process, best of
`--repeats` runs reported with the median.

    target/test-venv/bin/python bench/bench_adversarial.py [--repeats 3] [--hermetic PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "adversarial.json"


def memo_doubling() -> bytes:
    """Memo puts whose keys each double the last (99 bytes)."""
    out = b"\x80\x04N"
    key = 1024
    for _ in range(22):
        out += b"r" + struct.pack("<I", min(key, 0xFFFFFFFF))
        key = key * 2 + 1
    return out + b"."


def nested_tuples_gzip() -> bytes:
    """A gzip of 4 M MARKs and 4 M TUPLEs: about 40 KB that decompress to 8 MB."""
    return gzip.compress(b"\x80\x04" + b"(" * 4_000_000 + b"t" * 4_000_000 + b".", 9)


def nested_lists_gzip() -> bytes:
    """EMPTY_LIST / APPEND nesting, 8 M opcodes behind gzip."""
    return gzip.compress(b"\x80\x04" + b"]" * 4_000_000 + b"a" * 3_999_999 + b".", 9)


def memo_fanout() -> bytes:
    """One list put in the memo and appended to itself through GET 500 k times."""
    return b"\x80\x04]\x94" + b"h\x00" * 500_000 + b"e."


def dup_fanout() -> bytes:
    """A dict DUPed 1 M times and collected in a tuple."""
    return b"\x80\x04(}" + b"2" * 1_000_000 + b"t."


def long_npy_header() -> bytes:
    descr = "[" + ", ".join(f"('f{i}', '<f8')" for i in range(40_000)) + "]"
    header = "{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,), }"
    header += " " * ((64 - (12 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + b"\0" * 64


def protocol0_dict() -> bytes:
    """A 1 MB protocol-0 pickle of a plain dict (no PROTO opcode)."""
    import pickle

    return pickle.dumps({f"k{i}": [i, str(i)] for i in range(40_000)}, protocol=0)


def padded_payload() -> bytes:
    return b"N0" * 450_000 + b"cbuiltins\nexec\n(Vpass\ntR."


def xz_bomb() -> bytes:
    """1 GB of zeros as xz: the decompression budget stops it."""
    c = lzma.LZMACompressor(format=lzma.FORMAT_XZ)
    chunk = b"\0" * (1 << 20)
    out = b"".join(c.compress(chunk) for _ in range(1024))
    return out + c.flush()


def many_streams() -> bytes:
    """10 000 tiny pickles back to back."""
    return b"\x80\x04K\x01." * 10_000


INPUTS: dict[str, Callable[[], bytes]] = {
    "memo_doubling": memo_doubling,
    "nested_tuples_gzip": nested_tuples_gzip,
    "nested_lists_gzip": nested_lists_gzip,
    "memo_fanout": memo_fanout,
    "dup_fanout": dup_fanout,
    "long_npy_header": long_npy_header,
    "protocol0_dict": protocol0_dict,
    "padded_payload": padded_payload,
    "xz_bomb": xz_bomb,
    "many_streams": many_streams,
}

LOAD_PICKLE = (
    "import hermetic, sys\ntry:\n"
    "    hermetic.load_pickle(sys.argv[1])\nexcept Exception:\n    pass\n"
)
FIREWALL = (
    "import pickle, sys\ndata = open(sys.argv[1], 'rb').read()\n"
    "try:\n    pickle.loads(data)\nexcept Exception:\n    pass\n"
)
HERMETIC_LOAD = (
    "import hermetic, sys\ntry:\n    hermetic.load(sys.argv[1])\nexcept Exception:\n    pass\n"
)


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(elapsed seconds, peak RSS in kB) of one run under /usr/bin/time -v."""
    out = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env, timeout=600
    )
    fields = {}
    for line in out.stderr.splitlines():
        key, _, value = line.strip().rpartition(": ")
        fields[key] = value
    wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"]
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return seconds, int(fields["Maximum resident set size (kbytes)"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hermetic", default=shutil.which("hermetic"), help="the CLI to time")
    args = ap.parse_args()
    env = {**os.environ, "HERMETIC_PICKLE": "off"}
    deny = {**os.environ, "HERMETIC_PICKLE": "deny"}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, make in INPUTS.items():
            p = Path(d) / name
            data = make()
            p.write_bytes(data)
            tools = {
                "scan": ([args.hermetic, "scan", "--fail-on", "never", str(p)], env),
                "load_pickle": ([sys.executable, "-c", LOAD_PICKLE, str(p)], env),
                "firewall": ([sys.executable, "-c", FIREWALL, str(p)], deny),
                "hermetic.load": ([sys.executable, "-c", HERMETIC_LOAD, str(p)], env),
            }
            row: dict[str, object] = {"input": name, "bytes": len(data)}
            for tool, (cmd, e) in tools.items():
                runs = [measure(cmd, e) for _ in range(args.repeats)]
                times = [t for t, _ in runs]
                row[tool] = {
                    "best_s": min(times),
                    "median_s": statistics.median(times),
                    "peak_rss_mb": max(r for _, r in runs) / 1024,
                }
            rows.append(row)
            print(
                f"{name:20} {len(data):>9} B  "
                + "  ".join(
                    f"{t}: {row[t]['best_s']:.2f}s/{row[t]['peak_rss_mb']:.0f}MB"  # type: ignore[index]
                    for t in tools
                ),
                flush=True,
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": f"python bench/bench_adversarial.py --repeats {args.repeats}",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
