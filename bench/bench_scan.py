"""hermetic scan vs picklescan vs fickling: side by side, one run, the same files.

    ~/.cache/hermetic/venv/bin/python bench/bench_scan.py            # full run (5 repeats)
    ~/.cache/hermetic/venv/bin/python bench/bench_scan.py --quick    # smoke run

Build the native binary first: `cargo build --release -p hermetic-cli`.

Every number is the wall time of a whole fresh process (subprocess + time.perf_counter), so
interpreter start-up and imports count, as they do for a user. Each command runs once untimed
first (warm page cache, .pyc files written), and that warm-up run's output is also what the
correctness table counts. Then the commands run round-robin N times and the median and the
minimum are reported.

Workloads: the 200-file folder bench/data/small (each tool on the whole folder; fickling and
hermetic also one process per file), one ~50 MB and one ~500 MB GPT-2-shaped checkpoint with
the same 148 tensors, and `hermetic --version` for start-up cost. See bench/README.md and
bench/make_data.py for what the data holds.

Markdown goes to stdout and everything, with machine information, to bench/results/scan.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import make_data

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent
DRIVER = HERE / "_fickling_driver.py"
DEFAULT_OUTPUT = HERE / "results" / "scan.json"

TARGET_PICKLESCAN_SPEEDUP = 20.0  # native hermetic >= 20x faster than picklescan on the folder
TARGET_PAYLOAD_GROWTH = 1.5  # hermetic on 500 MB within 1.5x of its time on 50 MB

# Per-file status, the same vocabulary for every tool.
SAFE, FLAGGED, ERROR, NOT_SCANNED = "safe", "flagged", "error", "not_scanned"
# What it means when a tool's output does not mention a file.
ABSENT = {
    "hermetic-native": "no pickle found",
    "hermetic-py": "no pickle found",
    "picklescan": "no finding",
}


@dataclass
class FileVerdict:
    status: str  # SAFE, FLAGGED, ERROR or NOT_SCANNED
    detail: str  # the tool's own word for it (verdict, severity, exit status)


Parser = Callable[[str, list[int], Path], dict[str, FileVerdict]]


@dataclass
class Job:
    """One thing to time: one or more command lines run back to back as a single sample."""

    key: str
    label: str
    argvs: list[list[str]]
    parse: Parser | None = None
    baseline: str | None = None  # key of the job the ratio is taken against
    ok_rcs: frozenset[int] = frozenset({0})  # exit statuses that mean "scanned, as designed"
    times: list[float] = field(default_factory=list)
    warmup_rcs: list[int] = field(default_factory=list)
    odd_rcs: set[int] = field(default_factory=set)
    verdicts: dict[str, FileVerdict] = field(default_factory=dict)
    warmup_stdout: str = ""
    warmup_error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def minimum(self) -> float:
        return min(self.times)

    def shown_command(self) -> str:
        argv = [_short(a) for a in self.argvs[0]]
        if len(self.argvs) > 1:
            # One process per file: the last argument is the file.
            return " ".join(argv[:-1]) + f" FILE  (x{len(self.argvs)})"
        return " ".join(argv)


def _short(arg: str) -> str:
    """Paths relative to the repository (or ~/ for the venv) so the table stays readable."""
    for base, name in ((REPO, ""), (Path.home(), "~/")):
        try:
            rel = Path(arg).relative_to(base)
        except ValueError:
            continue
        return name + str(rel)
    return arg


# ---------------------------------------------------------------------------------------------
# Parsing what each tool says about each file


def parse_hermetic(stdout: str, _rcs: list[int], root: Path) -> dict[str, FileVerdict]:
    """`hermetic scan --format json`: files with no pickle are not listed (nothing to load)."""
    report = json.loads(stdout)
    out: dict[str, FileVerdict] = {}
    for f in report["files"]:
        name = _name_under(f["path"], root)
        if f.get("error"):
            out[name] = FileVerdict(ERROR, f"error: {f['error']}")
        elif f["verdict"] in ("suspicious", "dangerous"):
            out[name] = FileVerdict(FLAGGED, f["verdict"])
        else:
            out[name] = FileVerdict(SAFE, f["verdict"])
    return out


_PICKLESCAN_FOUND = re.compile(r"^(?P<fid>.+?): (?P<level>dangerous) import '(?P<g>[^']*)' FOUND")
_PICKLESCAN_ERROR = re.compile(r"^ERROR: parsing pickle in (?P<fid>.+?): ")
_PICKLESCAN_SCANNED = re.compile(r"^Scanned files: (\d+)", re.M)


def parse_picklescan(stdout: str, _rcs: list[int], root: Path) -> dict[str, FileVerdict]:
    """`picklescan -p`: a line per dangerous global (zip members as FILE:MEMBER) or parse error.

    picklescan only logs globals it calls dangerous (the ones it counts as infections);
    files it scanned without such a line are reported as "no finding" here.
    """
    out: dict[str, FileVerdict] = {}
    for line in stdout.splitlines():
        if m := _PICKLESCAN_FOUND.match(line):
            name = _name_under(m["fid"], root).split(":", 1)[0]
            prev = out.get(name)
            globs = (prev.detail + ", " if prev and prev.status == FLAGGED else "") + m["g"]
            out[name] = FileVerdict(FLAGGED, globs)
        elif m := _PICKLESCAN_ERROR.match(line):
            name = _name_under(m["fid"], root).split(":", 1)[0]
            if name not in out:
                out[name] = FileVerdict(ERROR, "parse error")
    return out


def parse_fickling_driver(stdout: str, _rcs: list[int], root: Path) -> dict[str, FileVerdict]:
    out: dict[str, FileVerdict] = {}
    for f in json.loads(stdout)["files"]:
        status = {"safe": SAFE, "unsafe": FLAGGED, "error": ERROR, "no_pickle": SAFE}.get(
            f["status"], NOT_SCANNED
        )
        detail = f["severity"] or f["status"]
        if f["errors"]:
            detail += f"; {f['errors'][0].splitlines()[0][:120]}"
        out[_name_under(f["path"], root)] = FileVerdict(status, detail)
    return out


def per_file_rc_parser(files: list[Path], codes: dict[int, str]) -> Parser:
    """For one-process-per-file jobs: the exit status of each run says what the tool decided."""

    def parse(_stdout: str, rcs: list[int], _root: Path) -> dict[str, FileVerdict]:
        return {
            f.name: FileVerdict(codes.get(rc, ERROR), f"exit {rc}")
            for f, rc in zip(files, rcs, strict=True)
        }

    return parse


def _name_under(path: str, root: Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        p = REPO / p
    try:
        return str(p.relative_to(root))
    except ValueError:
        return path


# ---------------------------------------------------------------------------------------------
# Running and timing


def run_warmup(job: Job, root: Path) -> None:
    """The untimed first run: warms the page cache and gives the output to count verdicts from."""
    stdout_parts: list[str] = []
    for argv in job.argvs:
        p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        job.warmup_rcs.append(p.returncode)
        stdout_parts.append(p.stdout)
        if p.returncode not in job.ok_rcs and job.warmup_error is None:
            tail = (p.stderr or p.stdout).strip()[-300:]
            job.warmup_error = f"`{' '.join(map(_short, argv))}` exited {p.returncode}: {tail}"
    job.warmup_stdout = "".join(stdout_parts)
    if job.parse is not None:
        try:
            job.verdicts = job.parse(job.warmup_stdout, job.warmup_rcs, root)
        except (ValueError, KeyError) as e:
            job.warmup_error = f"could not parse output: {e!r}"


def time_round_robin(jobs: list[Job], repeat: int) -> None:
    """`repeat` samples of each job, interleaved so that machine noise spreads over all tools."""
    for _ in range(repeat):
        for job in jobs:
            rcs: list[int] = []
            t0 = time.perf_counter()
            for argv in job.argvs:
                rcs.append(
                    subprocess.run(
                        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO
                    ).returncode
                )
            job.times.append(time.perf_counter() - t0)
            if rcs != job.warmup_rcs:
                job.odd_rcs.update(set(rcs) - set(job.warmup_rcs))


def run_jobs(jobs: list[Job], root: Path, repeat: int, log: Callable[[str], None]) -> None:
    for job in jobs:
        log(f"  warm-up: {job.label}")
        run_warmup(job, root)
    log(f"  timing {len(jobs)} commands x {repeat}, round-robin")
    time_round_robin(jobs, repeat)


# ---------------------------------------------------------------------------------------------
# Tools


@dataclass
class Tools:
    hermetic: Path
    hermetic_py: Path
    picklescan: Path | None
    fickling: Path | None  # the fickling CLI; the driver runs with this interpreter

    def scan_argv(self, key: str, target: Path) -> list[str]:
        t = str(target)
        if key == "hermetic-native":
            return [str(self.hermetic), "scan", "--format", "json", "--fail-on", "never", t]
        if key == "hermetic-py":
            return [str(self.hermetic_py), "scan", "--format", "json", "--fail-on", "never", t]
        if key == "picklescan":
            assert self.picklescan is not None
            return [str(self.picklescan), "-p", t]
        if key == "fickling":
            return [sys.executable, str(DRIVER), t]
        raise KeyError(key)


LABELS = {
    "hermetic-native": "hermetic (native)",
    "hermetic-py": "hermetic (Python entry point)",
    "picklescan": "picklescan",
    "fickling": "fickling (one process, API loop)",
    "hermetic-native-per-file": "hermetic (native), per file",
    "fickling-cli-per-file": "fickling --check-safety, per file",
}
# hermetic runs with --fail-on never (always 0); picklescan exits 1 on an infected file and 2
# when it could not parse one; fickling's CLI exits 1 for unsafe and 2 for a parse error.
OK_RCS: dict[str, frozenset[int]] = {
    "picklescan": frozenset({0, 1, 2}),
    "fickling-cli-per-file": frozenset({0, 1, 2}),
}
PARSERS: dict[str, Parser] = {
    "hermetic-native": parse_hermetic,
    "hermetic-py": parse_hermetic,
    "picklescan": parse_picklescan,
    "fickling": parse_fickling_driver,
}


def whole_target_jobs(tools: Tools, keys: list[str], target: Path) -> list[Job]:
    return [
        Job(
            key=k,
            label=LABELS[k],
            argvs=[tools.scan_argv(k, target)],
            parse=PARSERS[k],
            baseline="hermetic-native",
            ok_rcs=OK_RCS.get(k, frozenset({0})),
        )
        for k in keys
    ]


def per_file_jobs(tools: Tools, files: list[Path], skip_fickling: bool) -> list[Job]:
    jobs = [
        Job(
            key="hermetic-native-per-file",
            label=LABELS["hermetic-native-per-file"],
            argvs=[tools.scan_argv("hermetic-native", f) for f in files],
            baseline="hermetic-native-per-file",
        )
    ]
    if tools.fickling is not None and not skip_fickling:
        # --json-output: the CLI otherwise appends to ./safety_results.json on every call.
        jobs.append(
            Job(
                key="fickling-cli-per-file",
                label=LABELS["fickling-cli-per-file"],
                argvs=[
                    [str(tools.fickling), "--check-safety", "--json-output", os.devnull, str(f)]
                    for f in files
                ],
                parse=per_file_rc_parser(files, {0: SAFE, 1: FLAGGED, 2: ERROR}),
                baseline="hermetic-native-per-file",
                ok_rcs=OK_RCS["fickling-cli-per-file"],
            )
        )
    return jobs


# ---------------------------------------------------------------------------------------------
# Machine and version information


def _cmd_output(argv: list[str]) -> str | None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (p.stdout or p.stderr).strip() or None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def elf_has_debug_info(path: Path) -> bool | None:
    """Whether an ELF file has a .debug_info section (a `maturin develop` debug build has)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
        return None
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize = int.from_bytes(data[0x3A:0x3C], "little")
    shnum = int.from_bytes(data[0x3C:0x3E], "little")
    shstrndx = int.from_bytes(data[0x3E:0x40], "little")

    def section(i: int) -> tuple[int, int, int]:
        h = data[shoff + i * shentsize : shoff + (i + 1) * shentsize]
        name = int.from_bytes(h[0:4], "little")
        return name, int.from_bytes(h[0x18:0x20], "little"), int.from_bytes(h[0x20:0x28], "little")

    try:
        _, str_off, str_size = section(shstrndx)
        names = data[str_off : str_off + str_size]
        for i in range(shnum):
            name_off = section(i)[0]
            if names[name_off : names.index(b"\0", name_off)] == b".debug_info":
                return True
    except (ValueError, IndexError):
        return None
    return False


def machine_info(tools: Tools) -> dict[str, Any]:
    ext = _cmd_output([sys.executable, "-c", "import hermetic._hermetic as m; print(m.__file__)"])
    dirty = _cmd_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gib": _mem_total_gib(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": _short(sys.executable),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "git_commit": _cmd_output(["git", "rev-parse", "HEAD"]),
        "git_worktree_dirty": bool(dirty),
        "tools": {
            "hermetic_native": (_cmd_output([str(tools.hermetic), "--version"]) or "")
            .removeprefix("hermetic ")
            .strip()
            or None,
            "hermetic_native_path": _short(str(tools.hermetic)),
            "hermetic_python_package": _version("hermetic"),
            "hermetic_extension_module": _short(ext) if ext else None,
            "hermetic_extension_bytes": Path(ext).stat().st_size if ext else None,
            "hermetic_extension_has_debug_info": elf_has_debug_info(Path(ext)) if ext else None,
            "picklescan": _version("picklescan") if tools.picklescan else None,
            "fickling": _version("fickling") if tools.fickling else None,
        },
    }


# ---------------------------------------------------------------------------------------------
# Reporting


def fmt_time(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s >= 10:
        return f"{s:.2f} s"
    if s >= 1:
        return f"{s:.3f} s"
    return f"{s * 1000:.1f} ms" if s >= 0.01 else f"{s * 1000:.2f} ms"


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def ratio(job: Job, jobs: dict[str, Job], use_min: bool = False) -> float | None:
    base = jobs.get(job.baseline or "")
    if base is None or not base.times or not job.times:
        return None
    if use_min:
        return job.minimum / base.minimum
    return job.median / base.median


def timing_record(job: Job, jobs: dict[str, Job]) -> dict[str, Any]:
    return {
        "label": job.label,
        "command": [_short(a) for a in job.argvs[0]],
        "processes_per_sample": len(job.argvs),
        "times_s": [round(t, 6) for t in job.times],
        "median_s": round(job.median, 6) if job.times else None,
        "min_s": round(job.minimum, 6) if job.times else None,
        "ratio_to": job.baseline,
        "ratio_median": _round(ratio(job, jobs)),
        "ratio_min": _round(ratio(job, jobs, use_min=True)),
        "warmup_exit_codes": sorted(set(job.warmup_rcs)),
        "unexpected_exit_codes_when_timed": sorted(job.odd_rcs),
        "warmup_error": job.warmup_error,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _absent(key: str) -> dict[str, str]:
    return {"status": "not_reported", "detail": ABSENT.get(key, "not in the tool's output")}


def correctness(job: Job, labels: dict[str, str]) -> dict[str, Any]:
    """Counts over the labelled files; a parse error counts as flagged (the file is not passed)."""
    v = job.verdicts

    def flagged(names: list[str]) -> int:
        return sum(1 for n in names if n in v and v[n].status in (FLAGGED, ERROR))

    by_label: dict[str, list[str]] = {}
    for name, label in labels.items():
        by_label.setdefault(label, []).append(name)
    analysed: int | None = sum(1 for n in labels if n in v and v[n].status != NOT_SCANNED)
    if job.key == "picklescan":
        # Files it scanned without a dangerous global leave no line; its summary has the count.
        m = _PICKLESCAN_SCANNED.search(job.warmup_stdout)
        analysed = int(m.group(1)) if m else None
    return {
        "analysed": analysed,
        "flagged": flagged(list(labels)),
        "errors": sum(1 for n in labels if n in v and v[n].status == ERROR),
        "by_label": {
            label: {"files": len(names), "flagged": flagged(names)}
            for label, names in sorted(by_label.items())
        },
        "per_file": {
            n: {"status": v[n].status, "detail": v[n].detail} if n in v else _absent(job.key)
            for n in sorted(labels)
        },
    }


def md_table(header: list[str], rows: list[list[str]], align: str) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def find_tools(args: argparse.Namespace) -> Tools:
    hermetic = Path(args.hermetic).resolve()
    if not os.access(hermetic, os.X_OK):
        sys.exit(
            f"error: {hermetic} is not an executable; build it with "
            "`cargo build --release -p hermetic-cli` or pass --hermetic PATH"
        )
    hermetic_py = VENV_BIN / "hermetic"
    if not os.access(hermetic_py, os.X_OK):
        sys.exit(f"error: no `hermetic` entry point next to {sys.executable}; run from the venv")
    picklescan = VENV_BIN / "picklescan"
    fickling = VENV_BIN / "fickling"
    return Tools(
        hermetic=hermetic,
        hermetic_py=hermetic_py,
        picklescan=picklescan if os.access(picklescan, os.X_OK) else None,
        fickling=fickling if os.access(fickling, os.X_OK) and not args.skip_fickling else None,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 repeats, 50 MB checkpoint only"
    )
    ap.add_argument("--repeat", type=int, help="timed runs per command (default 5, --quick 2)")
    ap.add_argument("--startup-repeat", type=int, help="--version runs (default 20, --quick 5)")
    ap.add_argument("--skip-fickling", action="store_true", help="leave fickling out")
    ap.add_argument("--no-per-file", action="store_true", help="skip one-process-per-file runs")
    ap.add_argument(
        "--hermetic",
        default=str(REPO / "target" / "release" / "hermetic"),
        help="native hermetic binary (default: target/release/hermetic)",
    )
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    ap.add_argument("--regen", action="store_true", help="regenerate bench/data first")
    args = ap.parse_args()
    repeat = args.repeat or (2 if args.quick else 5)
    startup_repeat = args.startup_repeat or (5 if args.quick else 20)
    if repeat < 1 or startup_repeat < 1:
        ap.error("repeats must be at least 1")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tools = find_tools(args)
    info = machine_info(tools)
    # Smallest first; --quick keeps only the 50 MB one (the big-file path still runs).
    big_names = list(make_data.BIG_SPECS)
    if args.quick:
        big_names = big_names[:1]
    manifest = make_data.ensure_data(big=big_names, force=args.regen, log=log)
    labels: dict[str, str] = {n: v["label"] for n, v in manifest["small"].items()}
    small_dir = make_data.SMALL_DIR
    small_files = sorted(small_dir / n for n in labels)
    small_bytes = sum(f.stat().st_size for f in small_files)

    keys = ["hermetic-native", "hermetic-py"]
    if tools.picklescan is not None:
        keys.append("picklescan")
    else:
        log("picklescan not found in the venv: left out")
    if tools.fickling is not None:
        keys.append("fickling")
    elif not args.skip_fickling:
        log("fickling not found in the venv: left out")

    # 1. The folder of 200 small files.
    log(f"[1/3] {len(small_files)} small files")
    small_jobs = whole_target_jobs(tools, keys, small_dir)
    if not args.no_per_file:
        small_jobs += per_file_jobs(tools, small_files, args.skip_fickling)
    run_jobs(small_jobs, small_dir, repeat, log)
    small = {j.key: j for j in small_jobs}

    # 2. One big checkpoint, 50 MB and 500 MB.
    big: dict[str, dict[str, Job]] = {}
    big_info: dict[str, Any] = manifest["big"]
    for name in big_names:
        log(f"[2/3] {name}")
        jobs = whole_target_jobs(tools, keys, make_data.BIG_DIR / name)
        run_jobs(jobs, make_data.BIG_DIR, repeat, log)
        big[name] = {j.key: j for j in jobs}

    # 3. Start-up.
    log(f"[3/3] start-up, {startup_repeat} runs each")
    startup_jobs = [
        Job(
            "hermetic-native",
            "hermetic --version (native)",
            [[str(tools.hermetic), "--version"]],
            baseline="hermetic-native",
        ),
        Job(
            "hermetic-py",
            "hermetic --version (Python entry point)",
            [[str(tools.hermetic_py), "--version"]],
            baseline="hermetic-native",
        ),
        Job(
            "python",
            "python -c pass (interpreter alone)",
            [[sys.executable, "-c", "pass"]],
            baseline="hermetic-native",
        ),
    ]
    run_jobs(startup_jobs, REPO, startup_repeat, log)
    startup = {j.key: j for j in startup_jobs}
    info["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    # Targets.
    ps_ratio = ratio(small["picklescan"], small) if "picklescan" in small else None
    names = list(big)  # smallest first
    growth: float | None = None
    if len(names) >= 2:
        growth = big[names[-1]]["hermetic-native"].median / big[names[0]]["hermetic-native"].median
    targets = {
        "picklescan_over_hermetic_native_folder": {
            "target": f">= {TARGET_PICKLESCAN_SPEEDUP:g}x (medians, whole process)",
            "value": _round(ps_ratio),
            "met": None if ps_ratio is None else ps_ratio >= TARGET_PICKLESCAN_SPEEDUP,
        },
        "hermetic_native_500mb_over_50mb": {
            "target": f"<= {TARGET_PAYLOAD_GROWTH:g}x (medians): time does not grow with payload",
            "value": _round(growth),
            "met": None if growth is None else growth <= TARGET_PAYLOAD_GROWTH,
        },
    }

    results: dict[str, Any] = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "method": (
            "whole-process wall time (subprocess, time.perf_counter); one untimed warm-up run "
            "per command first (warm page cache; its output is what the correctness counts use); "
            "then the commands round-robin, `repeat` samples each; median and min reported"
        ),
        "repeat": repeat,
        "startup_repeat": startup_repeat,
        "machine": info,
        "small": {
            "dir": _short(str(small_dir)),
            "files": len(small_files),
            "bytes": small_bytes,
            "mix": _mix(manifest["small"]),
            "timings": {k: timing_record(j, small) for k, j in small.items()},
            "correctness": {k: correctness(j, labels) for k, j in small.items() if j.parse},
            "hermetic_py_matches_native": _same_verdicts(small, "hermetic-native", "hermetic-py"),
        },
        "big": {
            name: {
                **big_info[name],
                "timings": {k: timing_record(j, jobs) for k, j in jobs.items()},
                "verdicts": {
                    k: (j.verdicts[name].__dict__ if name in j.verdicts else _absent(k))
                    for k, j in jobs.items()
                },
            }
            for name, jobs in big.items()
        },
        "startup": {k: timing_record(j, startup) for k, j in startup.items()},
        "targets": targets,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.output)

    print(render(results, small, big, startup, labels, args))
    log(f"results written to {_short(str(args.output))}")
    return 0


def _entry_point_notes(
    results: dict[str, Any],
    small: dict[str, Job],
    big: dict[str, dict[str, Job]],
    startup: dict[str, Job],
) -> list[str]:
    """Warn when the Python entry point costs more than its start-up over the native binary."""
    notes: list[str] = []
    start_gap = startup["hermetic-py"].median - startup["hermetic-native"].median
    slow: list[str] = []
    for where, jobs in [("small folder", small), *big.items()]:
        if "hermetic-py" not in jobs or "hermetic-native" not in jobs:
            continue
        nat, py = jobs["hermetic-native"].median, jobs["hermetic-py"].median
        excess = py - nat - start_gap
        if excess > max(0.05, nat):
            slow.append(f"{where}: +{fmt_time(excess)} beyond start-up")
    tools = results["machine"]["tools"]
    debug = tools.get("hermetic_extension_has_debug_info")
    if slow:
        notes.append(
            "- hermetic's Python entry point is slower than the native binary by more than its "
            f"start-up cost ({'; '.join(slow)}): the extension module "
            f"({tools.get('hermetic_extension_module')}) is probably not an optimized build; "
            "rebuild it with `maturin develop --release` (or install the release wheel) before "
            "quoting Python-entry-point numbers"
        )
    if debug:
        size = tools.get("hermetic_extension_bytes") or 0
        notes.append(
            f"- the extension module carries DWARF debug info ({_mb(size)}), as a debug-profile "
            "`maturin develop` build does"
        )
    return notes


def _same_verdicts(jobs: dict[str, Job], a: str, b: str) -> bool | None:
    if a not in jobs or b not in jobs or jobs[a].warmup_error or jobs[b].warmup_error:
        return None
    return jobs[a].verdicts == jobs[b].verdicts


def _mix(small_manifest: dict[str, dict[str, str]]) -> dict[str, int]:
    mix: dict[str, int] = {}
    for v in small_manifest.values():
        key = f"{v['label']}/{v['kind']}"
        mix[key] = mix.get(key, 0) + 1
    return dict(sorted(mix.items()))


def render(
    results: dict[str, Any],
    small: dict[str, Job],
    big: dict[str, dict[str, Job]],
    startup: dict[str, Job],
    labels: dict[str, str],
    args: argparse.Namespace,
) -> str:
    m = results["machine"]
    out: list[str] = []
    title = "hermetic scan benchmark"
    if args.quick:
        title += " (--quick smoke run: few repeats, 50 MB checkpoint only; not for quoting)"
    out.append(f"# {title}\n")
    out.append(
        f"{m['date']} · {m['cpu_model']} · {m['cpu_count']} CPUs · Python {m['python']} · "
        f"torch {m['torch']} · hermetic {m['tools']['hermetic_native']} · picklescan "
        f"{m['tools']['picklescan']} · fickling {m['tools']['fickling']} · load average "
        f"{m['load_avg_at_start'][0]} at start, {m['load_avg_at_end'][0]} at end\n"
    )
    out.append(
        f"Whole-process wall time of each command (fresh process; interpreter start-up counts). "
        f"Warm page cache: every command ran once untimed first; then {results['repeat']} "
        f"timed runs each, round-robin. Median and min. Ratios are tool time / hermetic time "
        f"(higher = hermetic faster).\n"
    )

    n = len(labels)
    out.append(
        f"## {n} small files ({results['small']['dir']}, {_mb(results['small']['bytes'])})\n"
    )
    rows = []
    for j in small.values():
        rows.append(
            [
                j.label,
                f"`{j.shown_command()}`",
                fmt_time(j.median),
                fmt_time(j.minimum),
                fmt_time(j.median / n),
                fmt_ratio(ratio(j, small)) + _vs(j),
            ]
        )
    out.append(
        md_table(
            ["tool", "command", "median", "min", "per file", "÷ hermetic native"], rows, "llrrrr"
        )
    )
    out.append("")

    counts = {
        label: sum(1 for v in labels.values() if v == label) for label in set(labels.values())
    }
    out.append("## What each tool flags in those files (from the warm-up run)\n")
    out.append(
        "Flagged = the tool's own failure verdict (hermetic: suspicious or dangerous; picklescan: "
        "a dangerous global; fickling: severity above LIKELY_SAFE) or a parse error. "
        "'analysed' = files the tool reports having looked into (hermetic lists files that hold a "
        "pickle; picklescan skips extensions it does not know, such as .npy; fickling does not "
        "support .npy).\n"
    )
    rows = []
    for j in small.values():
        if j.parse is None:
            continue
        c = correctness(j, labels)
        bl = c["by_label"]
        rows.append(
            [
                j.label,
                str(c["analysed"]) if c["analysed"] is not None else "?",
                str(c["flagged"]),
                f"{bl.get('malicious', {}).get('flagged', 0)} / {counts.get('malicious', 0)}",
                f"{bl.get('model', {}).get('flagged', 0)} / {counts.get('model', 0)}",
                f"{bl.get('benign', {}).get('flagged', 0)} / {counts.get('benign', 0)}",
                str(c["errors"]),
            ]
        )
    out.append(
        md_table(
            [
                "tool",
                "analysed",
                "flagged",
                "malicious caught",
                "whole models flagged",
                "benign flagged",
                "parse errors",
            ],
            rows,
            "lrrrrrr",
        )
    )
    out.append("")
    for label, names in _missed_malicious(small, labels).items():
        out.append(f"- {label} missed: {', '.join(names)}")
    same = results["small"]["hermetic_py_matches_native"]
    if same is not None:
        out.append(
            "- hermetic's Python entry point gives the same verdict as the native binary on every "
            f"file: {'yes' if same else 'NO'}"
        )
    if "fickling-cli-per-file" in small:
        out.append(
            "- `fickling --check-safety FILE` reads the whole file as pickle streams; it does not "
            "open zip archives, so torch zip checkpoints (and .npy files) end as parse errors "
            "(exit 2), which it asks users to treat as unsafe."
        )
    out.append("")

    if big:
        names = list(big)
        growth_col = len(names) > 1
        out.append(f"## One checkpoint: {' vs '.join(names)} (148 float32 tensors each)\n")
        header = ["tool"]
        for name in names:
            header += [f"{name} median", f"{name} min"]
        if growth_col:
            header.append(f"{names[-1]} ÷ {names[0]}")
        header += [f"÷ hermetic native ({names[-1]})", "verdict"]
        rows = []
        for k in big[names[0]]:
            js = [big[name][k] for name in names]
            row = [js[0].label]
            for j in js:
                row += [fmt_time(j.median), fmt_time(j.minimum)]
            if growth_col:
                row.append(fmt_ratio(js[-1].median / js[0].median))
            row.append(fmt_ratio(ratio(js[-1], big[names[-1]])))
            verdicts = [j.verdicts.get(name) for j, name in zip(js, names, strict=True)]
            row.append(" / ".join(v.status if v else ABSENT.get(k, "—") for v in verdicts))
            rows.append(row)
        out.append(md_table(header, rows, "l" + "r" * (len(header) - 1)))
        out.append("")
        for name in names:
            bi = results["big"][name]
            out.append(
                f"- {name}: {_mb(bi['bytes'])}, {bi['tensors']} tensors, "
                f"{bi['params'] / 1e6:.1f}M parameters (d_model {bi['d_model']}, "
                f"vocab {bi['vocab']})"
            )
        out.append("")

    k = results["startup_repeat"]
    out.append(f"## Start-up ({k} run{'s' if k != 1 else ''} each)\n")
    rows = [
        [j.label, f"`{j.shown_command()}`", fmt_time(j.median), fmt_time(j.minimum)]
        for j in startup.values()
    ]
    out.append(md_table(["what", "command", "median", "min"], rows, "llrr"))
    py, nat = startup["hermetic-py"], startup["hermetic-native"]
    out.append(
        f"\nPython entry point costs {fmt_time(py.median - nat.median)} more per invocation "
        f"than the native binary ({fmt_ratio(py.median / nat.median)}).\n"
    )

    out.append("## Issue targets (reported, not asserted)\n")
    t = results["targets"]
    pt = t["picklescan_over_hermetic_native_folder"]
    out.append(
        f"- native hermetic >= {TARGET_PICKLESCAN_SPEEDUP:g}x faster than picklescan on the "
        f"{n}-file folder (whole process, medians): {fmt_ratio(pt['value'])} -> {_met(pt['met'])}"
    )
    gt = t["hermetic_native_500mb_over_50mb"]
    out.append(
        f"- hermetic time on 500 MB ≈ its time on 50 MB (ratio <= {TARGET_PAYLOAD_GROWTH:g}x, "
        f"medians): {fmt_ratio(gt['value'])} -> {_met(gt['met'])}"
    )
    notes = [
        f"- {j.label}: {j.warmup_error}"
        for group in [small, *big.values(), startup]
        for j in group.values()
        if j.warmup_error
    ]
    notes += [
        f"- {j.label}: exit status changed between runs ({sorted(j.odd_rcs)})"
        for group in [small, *big.values(), startup]
        for j in group.values()
        if j.odd_rcs
    ]
    notes += _entry_point_notes(results, small, big, startup)
    if notes:
        out.append("\n## Problems seen\n")
        out += notes
    return "\n".join(out) + "\n"


def _vs(job: Job) -> str:
    return "" if job.baseline == "hermetic-native" else " (÷ hermetic per file)"


def _missed_malicious(small: dict[str, Job], labels: dict[str, str]) -> dict[str, list[str]]:
    bad = sorted(n for n, label in labels.items() if label == "malicious")
    out: dict[str, list[str]] = {}
    for j in small.values():
        if j.parse is None:
            continue
        missed = [
            n for n in bad if n not in j.verdicts or j.verdicts[n].status not in (FLAGGED, ERROR)
        ]
        if missed:
            out[j.label] = missed
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _met(met: bool | None) -> str:
    return "n/a" if met is None else "MET" if met else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())
