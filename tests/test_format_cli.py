"""`hermetic inspect` / `hermetic verify` on hermetic, safetensors and sharded files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import hermetic


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermetic", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_inspect_text_and_json(tmp_path: Path) -> None:
    p = tmp_path / "c.safetensors"
    w = torch.zeros(4, 8)
    hermetic.save({"model": {"w": w, "wT": w.T}, "step": 3, "cfg": {"lr": 0.1}}, p)
    out = run("inspect", p)
    assert out.returncode == 0, out.stderr
    assert "format: hermetic tree v3" in out.stdout
    assert '"w": tensor F32 [4, 8] 128 B' in out.stdout
    assert '"wT": tensor F32 [8, 4] 128 B (entry "model.wT", a view of "model.w")' in out.stdout
    assert '"step": 3' in out.stdout
    doc = json.loads(run("inspect", "--json", p).stdout)
    assert doc["format"] == "hermetic"
    assert [e["name"] for e in doc["entries"]] == ["model.w", "model.wT"]
    assert doc["tree"]["$dict"][0] == "model"


def test_inspect_plain_safetensors_and_shards(tmp_path: Path) -> None:
    p = tmp_path / "st.safetensors"
    save_file({"a": torch.ones(2)}, p)
    out = run("inspect", p)
    assert out.returncode == 0 and "safetensors (flat)" in out.stdout
    d = tmp_path / "ckpt"
    hermetic.save({f"w{i}": torch.ones(64) for i in range(4)}, d, max_shard_size=600)
    out = run("inspect", d)
    assert out.returncode == 0 and "in 2 files" in out.stdout, out.stdout
    assert run("verify", d).returncode == 0


def test_inspect_other_content(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    out = run("inspect", p)
    assert out.returncode == 1 and "not a safetensors or hermetic file" in out.stderr


def test_verify(tmp_path: Path) -> None:
    p = tmp_path / "v.safetensors"
    hermetic.save({"a": torch.arange(100.0), "b": torch.ones(3)}, p)
    ok = run("verify", p)
    assert ok.returncode == 0 and ok.stdout.startswith("OK") and "2 entries" in ok.stdout
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))
    bad = run("verify", p)
    assert bad.returncode == 1 and bad.stdout.startswith("CORRUPT"), bad.stdout
    assert "entry `" in bad.stdout
    doc = json.loads(run("verify", "--json", p).stdout)
    assert doc[0]["verdict"] == "corrupt" and len(doc[0]["corrupt"]) == 1
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.ones(1)}, plain)
    out = run("verify", plain)
    assert out.returncode == 1 and out.stdout.startswith("UNVERIFIABLE")
    missing = run("verify", tmp_path / "nope.safetensors")
    assert missing.returncode == 3 and missing.stdout.startswith("ERROR")
