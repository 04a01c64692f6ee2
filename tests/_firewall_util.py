"""Helpers for the firewall tests: run Python in a fresh process where the
firewall's start-up hook is installed, as it is after ``pip install``.

The audit hook the firewall installs cannot be removed, so every test that
switches the firewall on does it in a child process.
"""

from __future__ import annotations

import atexit
import functools
import os
import pickle
import shutil
import site
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import hermetic

ROOT = Path(__file__).resolve().parent.parent
PTH = "hermetic_firewall.pth"


def _installed_hook() -> bool:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return any(os.path.exists(os.path.join(d, PTH)) for d in dirs)


@functools.cache
def hook_python() -> str:
    """A Python with the start-up hook installed.

    A wheel install (``scripts/test``) ships the hook in site-packages, so
    this interpreter is used as is. An editable install (``maturin
    develop``) does not install it; then a throwaway virtual environment is
    made whose site-packages holds this checkout's hook file and a path file
    for the current ``sys.path``, so ``site`` processes the real hook exactly
    as it would after ``pip install``.
    """
    if _installed_hook():
        return sys.executable
    root = Path(tempfile.mkdtemp(prefix="hermetic-hook-venv-"))
    atexit.register(shutil.rmtree, root, True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True)
    py = root / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    # Sorted before the hook file, so hermetic is importable when it runs.
    Path(purelib, "_hermetic_test_paths.pth").write_text("\n".join(paths) + "\n")
    shutil.copy(ROOT / "python" / PTH, Path(purelib, PTH))
    return str(py)


def clean_env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMETIC_")}
    env.pop("PYTHONPATH", None)
    for k, v in extra.items():
        if v is not None:
            env[k] = v
    return env


def run_py(
    code: str,
    *,
    mode: str | None = None,
    manifest: str | os.PathLike[str] | None = None,
    inventory: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    args: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` as a script in a fresh interpreter with the hook."""
    e = clean_env(
        HERMETIC_PICKLE=mode,
        HERMETIC_MANIFEST=os.fspath(manifest) if manifest is not None else None,
        HERMETIC_INVENTORY=os.fspath(inventory) if inventory is not None else None,
    )
    if env:
        e.update(env)
    d = Path(cwd) if cwd is not None else Path(tempfile.mkdtemp(prefix="hermetic-fw-"))
    script = d / "prog.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [hook_python(), str(script), *(args or [])],
        cwd=d,
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc.stdout


def hermetic_cli(*args: str, cwd: str | os.PathLike[str] | None = None, env=None):
    """Runs the ``hermetic`` command (the Python entry point of this package)."""
    return subprocess.run(
        [sys.executable, "-m", "hermetic", *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def blob_line(data: bytes, callers: list[str] | None = None) -> str:
    """The ``[blobs]`` line listing ``data``."""
    fields = [f"size = {len(data)}"]
    if callers:
        fields.append("callers = [" + ", ".join(f'"{c}"' for c in callers) + "]")
    return f'"{hermetic.blob_id(data)}" = {{ {", ".join(fields)} }}'


def write_manifest(path: Path, lines: list[str], header: str = "") -> Path:
    path.write_text("version = 1\n" + header + "\n[blobs]\n" + "\n".join(lines) + "\n")
    return path


SAFE = pickle.dumps({"weights": [1.0, 2.0], "step": 3}, protocol=4)


# Runs in a child: loads each job's file with each job's entry point and
# prints one JSON line per job. Jobs come as JSON in argv[1]. Each job gets
# its own HERMETIC_CANARY, so a payload that runs leaves evidence.
HARNESS = r"""
import io, json, os, pickle, sys

def run(loader, path):
    if loader == "pickle.load":
        with open(path, "rb") as f:
            return pickle.load(f)
    if loader == "pickle.loads":
        with open(path, "rb") as f:
            return pickle.loads(f.read())
    if loader == "pickle.Unpickler":
        with open(path, "rb") as f:
            return pickle.Unpickler(f).load()
    if loader == "pickle._Unpickler":
        with open(path, "rb") as f:
            return pickle._Unpickler(f).load()
    if loader == "pickle.load_all":
        out = []
        with open(path, "rb") as f:
            while True:
                try:
                    out.append(pickle.load(f))
                except EOFError:
                    return out
    if loader == "torch.load":
        import torch
        return torch.load(path, weights_only=False)
    if loader == "torch.load(weights_only=True)":
        import torch
        return torch.load(path, weights_only=True)
    if loader == "np.load":
        import numpy as np
        loaded = np.load(path, allow_pickle=True)
        if hasattr(loaded, "files"):
            return {k: loaded[k] for k in loaded.files}
        return loaded
    if loader == "joblib.load":
        import joblib
        return joblib.load(path)
    if loader == "pandas.read_pickle":
        import pandas
        return pandas.read_pickle(path)
    raise SystemExit("unknown loader " + loader)

with open(sys.argv[1], encoding="utf-8") as f:
    jobs = json.load(f)
for job in jobs:
    os.environ["HERMETIC_CANARY"] = job["canary"]
    rec = {"loader": job["loader"], "path": job["path"]}
    try:
        value = run(job["loader"], job["path"])
        rec["outcome"] = "ok"
        rec["value"] = repr(value)[:200]
    except BaseException as e:
        if type(e).__name__ == "NoPickleError":
            rec["outcome"] = "refused"
        else:
            rec["outcome"] = "error"
        rec["error"] = type(e).__name__
        rec["message"] = str(e)[:4000]
    print(json.dumps(rec), flush=True)
"""

ENTRY_POINTS = (
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "pickle._Unpickler",
    "torch.load",
    "torch.load(weights_only=True)",
    "np.load",
    "joblib.load",
    "pandas.read_pickle",
)


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def available_entry_points() -> list[str]:
    need = {"torch": "torch", "np": "numpy", "joblib": "joblib", "pandas": "pandas"}
    out = []
    for ep in ENTRY_POINTS:
        mod = need.get(ep.split(".")[0])
        if mod is None or have(mod):
            out.append(ep)
    return out


def run_jobs(
    jobs: list[tuple[str, str | os.PathLike[str]]],
    canary_dir: Path,
    *,
    mode: str | None = None,
    manifest: str | os.PathLike[str] | None = None,
    inventory: str | os.PathLike[str] | None = None,
    timeout: float = 600,
) -> list[dict]:
    """Loads each ``(entry point, path)`` in one child; one result per job,
    with ``canary`` (the path that job's payload would create)."""
    import json

    canary_dir.mkdir(parents=True, exist_ok=True)
    spec = [
        {"loader": ep, "path": os.fspath(p), "canary": str(canary_dir / f"canary-{i}")}
        for i, (ep, p) in enumerate(jobs)
    ]
    # The job list goes through a file: hundreds of jobs with long paths
    # exceed the kernel's limit on one argument (128 KiB).
    spec_file = canary_dir / "jobs.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    proc = run_py(
        HARNESS,
        mode=mode,
        manifest=manifest,
        inventory=inventory,
        args=[str(spec_file)],
        timeout=timeout,
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == len(spec), f"harness died:\n{proc.stdout}\n{proc.stderr}"
    for rec, job in zip(lines, spec, strict=True):
        rec["canary"] = job["canary"]
    return lines
