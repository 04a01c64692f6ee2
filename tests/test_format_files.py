"""What hermetic's files do on disk around a load or a save: ``mmap=False``
owns its memory (a map faults when the file is rewritten in place), and the
temporaries of interrupted saves are removed by the next save, never one a
live writer still holds."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hermetic


def _tree() -> dict[str, object]:
    torch.manual_seed(0)
    w = torch.randn(300, 40)
    return {"w": w, "chunk": w[:100], "step": torch.tensor(7), "np": np.arange(6.0).reshape(2, 3)}


def _same(a: dict[str, object], b: dict[str, object]) -> None:
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b[k]), k  # type: ignore[arg-type]
        else:
            assert np.array_equal(v, b[k]), k  # type: ignore[arg-type]


def test_mmap_false_owns_its_memory(tmp_path: Path) -> None:
    path = tmp_path / "opt.safetensors"
    ref = _tree()
    hermetic.save(ref, path)
    got = hermetic.load(path, mmap=False)
    with hermetic.open(path) as h:
        entry = h.get_tensor("w", mmap=False)
        sub = h.get("chunk", mmap=False)
    with open(path, "r+b") as f:  # rewritten in place: a map would fault now
        f.truncate(0)
    _same(ref, got)  # type: ignore[arg-type]
    assert torch.equal(entry, ref["w"]) and torch.equal(sub, ref["chunk"])  # type: ignore[arg-type]
    # Views of one storage stay views of one (owned) storage.
    assert got["chunk"].untyped_storage().data_ptr() == got["w"].untyped_storage().data_ptr()  # type: ignore[union-attr]


def test_mmap_false_on_a_file_cut_after_opening_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    hermetic.save(_tree(), path)
    with hermetic.open(path) as h:
        os.truncate(path, 300)
        with pytest.raises(hermetic.FormatError, match="the file ends at byte"):
            h.load(mmap=False)


def test_the_default_map_faults_on_an_in_place_rewrite_but_not_on_a_save(tmp_path: Path) -> None:
    """The documented contract: a mapped load keeps what it mapped through
    hermetic.save (a new file renamed over the old), and faults (SIGBUS) when
    another program truncates the file in place."""
    path = tmp_path / "a.safetensors"
    hermetic.save(_tree(), path)
    code = f"""
import hermetic, torch, sys
x = hermetic.load({str(path)!r})
before = float(x["w"].sum())
hermetic.save({{"w": torch.ones(1000)}}, {str(path)!r})
assert float(x["w"].sum()) == before
print("kept", flush=True)
y = hermetic.load({str(path)!r})
open({str(path)!r}, "r+b").truncate(0)
float(y["w"].sum())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "kept" in r.stdout, r.stderr
    # `y` maps the new file; truncating that file in place faults the map.
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr)


def _temps(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


SAVER = """
import sys, torch, hermetic
hermetic.save({"w": torch.ones(int(sys.argv[2]), dtype=torch.uint8)}, sys.argv[1])
"""


def test_killed_saves_leave_the_checkpoint_and_the_next_save_clears_their_temporaries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ckpt.safetensors"
    ref = _tree()
    hermetic.save(ref, path)
    kills = 0
    for _ in range(4):
        p = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(1 << 30)])
        deadline = time.monotonic() + 120
        while not _temps(path) or all(t.stat().st_size < (1 << 20) for t in _temps(path)):
            if p.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        _same(ref, hermetic.load(path))  # type: ignore[arg-type]
        # Each killed save left its temporary; the one killed after it (a
        # save to the same path) removed the earlier one first.
        assert len(_temps(path)) == 1
    assert kills >= 3
    hermetic.save(ref, path)
    assert _temps(path) == []
    _same(ref, hermetic.load(path))  # type: ignore[arg-type]


def test_a_live_writers_temporary_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    live = tmp_path / ".ckpt.safetensors.Live01.tmp"
    dead = tmp_path / ".ckpt.safetensors.Dead01.tmp"
    lookalike = tmp_path / ".ckpt.safetensors.old-copy.tmp"
    for p in (live, dead, lookalike):
        p.write_bytes(b"partial")
    with open(live, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a writer holds its temporary
        hermetic.save(_tree(), path)
        assert live.exists() and lookalike.exists() and not dead.exists()
    hermetic.save(_tree(), path)  # the lock is gone with its holder
    assert not live.exists() and lookalike.exists()


def test_sharded_saves_clear_their_temporaries_too(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    stale = [out / ".model-00001-of-00002.safetensors.Aaaaa1.tmp"]
    stale.append(out / ".model.safetensors.index.json.Bbbbb2.tmp")
    for p in stale:
        p.write_bytes(b"x")
    hermetic.save(_tree(), out, max_shard_size=20_000)
    assert not any(p.exists() for p in stale)
    _same(_tree(), hermetic.load(out))  # type: ignore[arg-type]


@pytest.mark.parametrize("max_shard_size", [1, 5_000, 50_000, 10**9])
def test_sharded_views_load_with_their_sharing(tmp_path: Path, max_shard_size: int) -> None:
    """A copy viewing a storage through its base goes into its base's shard,
    whatever the shard size (a reader refuses a base in another shard)."""
    from safetensors.torch import load_file

    torch.manual_seed(1)
    w = torch.randn(64, 32)
    qkv = torch.randn(96, 16)
    tree = {
        "w": w,
        "wt": w.t(),
        "rows": w[8:40],
        "strided": w[::3, 1::2],
        "q": qkv[:32],
        "k": qkv[32:64],
        "v": qkv[64:],
        "other": torch.arange(1000.0),
        "tied": w,
    }
    out = tmp_path / "m"
    hermetic.save(tree, out, max_shard_size=max_shard_size)
    got = hermetic.load(out)
    for k, v in tree.items():
        assert torch.equal(got[k], v), k
    assert got["rows"].untyped_storage().data_ptr() == got["w"].untyped_storage().data_ptr()
    assert got["tied"] is got["w"]
    plain: dict[str, torch.Tensor] = {}
    for shard in sorted(out.glob("*.safetensors")):
        plain.update(load_file(shard))
    for name, t in plain.items():
        assert torch.equal(t, tree[name]), name


# ------------------------------------------------ a state dict's `_metadata`


def _model() -> torch.nn.Module:
    torch.manual_seed(2)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_state_dict_metadata_round_trips(tmp_path: Path) -> None:
    sd = _model().state_dict()
    path = tmp_path / "sd.safetensors"
    hermetic.save({"model": sd, "again": sd}, path)
    got = hermetic.load(path)
    assert got["model"]._metadata == sd._metadata  # type: ignore[attr-defined]
    assert got["again"] is got["model"]
    fresh = _model()
    fresh.load_state_dict(got["model"])
    with hermetic.open(path) as h:
        assert h["model"]._metadata == sd._metadata
    # A plain safetensors reader sees the tensors, as before.
    from safetensors.torch import load_file

    assert set(load_file(path)) == {f"model.{k}" for k in sd}


def test_convert_carries_the_metadata_of_a_torch_save(tmp_path: Path) -> None:
    sd = _model().state_dict()
    src, out = tmp_path / "sd.pt", tmp_path / "sd.safetensors"
    torch.save(sd, src)
    r = subprocess.run(
        [sys.executable, "-m", "hermetic", "convert", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "not carried" not in r.stderr
    assert hermetic.load(out)._metadata == sd._metadata


def test_attributes_that_cannot_be_stored_are_errors_naming_them(tmp_path: Path) -> None:
    import collections

    od: collections.OrderedDict[str, object] = collections.OrderedDict(w=torch.zeros(2))
    vars(od)["not-an-identifier"] = 1
    with pytest.raises(hermetic.FormatError, match="not-an-identifier"):
        hermetic.save(od, tmp_path / "a.safetensors")
    od2: collections.OrderedDict[str, object] = collections.OrderedDict(w=torch.zeros(2))
    od2.hook = lambda: None  # type: ignore[attr-defined]
    with pytest.raises(hermetic.FormatError, match=r"\.hook"):
        hermetic.save(od2, tmp_path / "b.safetensors")
    assert not list(tmp_path.iterdir())


def test_saved_files_get_the_mode_new_files_get(tmp_path: Path) -> None:
    """0666 less the umask, as torch.save's files and any file ``open`` makes
    (a temporary's private 0600 would hide a checkpoint from a team)."""
    old = os.umask(0o022)
    try:
        hermetic.save({"w": torch.zeros(2)}, tmp_path / "h.safetensors")
        hermetic.save({"w": torch.zeros(2)}, tmp_path / "sharded", max_shard_size=4)
        torch.save({"w": torch.zeros(2)}, tmp_path / "t.pt")
    finally:
        os.umask(old)
    mode = (tmp_path / "t.pt").stat().st_mode & 0o777
    assert mode == 0o644
    assert (tmp_path / "h.safetensors").stat().st_mode & 0o777 == mode
    for f in (tmp_path / "sharded").iterdir():
        assert f.stat().st_mode & 0o777 == mode, f
