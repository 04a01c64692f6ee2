"""Errors that say what to do: a pickle checkpoint handed to hermetic's own reader, and
`hermetic.save` into a folder that does not exist yet."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import hermetic

torch = pytest.importorskip("torch")

HINT = "use hermetic.torch.load"


@pytest.fixture()
def checkpoints(tmp_path: Path) -> dict[str, Path]:
    sd = {"w": torch.zeros(2, 3), "b": torch.ones(3)}
    zip_ckpt = tmp_path / "pytorch_model.bin"
    torch.save(sd, zip_ckpt)
    legacy = tmp_path / "sd.pt"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    raw = tmp_path / "plain.pkl"
    raw.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    return {"torch zip": zip_ckpt, "torch legacy": legacy, "pickle": raw}


@pytest.mark.parametrize("kind", ["torch zip", "torch legacy", "pickle"])
def test_load_says_it_is_a_pickle_checkpoint(checkpoints: dict[str, Path], kind: str) -> None:
    with pytest.raises(hermetic.FormatError) as e:
        hermetic.load(checkpoints[kind])
    msg = str(e.value)
    assert HINT in msg and "hermetic convert" in msg
    if kind.startswith("torch"):
        assert "this is a PyTorch pickle checkpoint" in msg
    else:
        assert "this is a pickle" in msg


@pytest.mark.parametrize("kind", ["torch zip", "torch legacy"])
def test_verify_says_it_is_a_pickle_checkpoint(checkpoints: dict[str, Path], kind: str) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "hermetic", "verify", str(checkpoints[kind])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1
    out = p.stdout + p.stderr
    assert "this is a PyTorch pickle checkpoint" in out and HINT in out
    assert "hermetic convert" in out


def test_a_broken_hermetic_file_gets_no_pickle_hint(tmp_path: Path) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}')
    with pytest.raises(hermetic.FormatError) as e:
        hermetic.load(bad)
    assert HINT not in str(e.value)


def test_save_creates_a_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "epoch-1" / "model.safetensors"
    hermetic.save({"w": torch.ones(2)}, target)
    assert torch.equal(hermetic.load(target)["w"], torch.ones(2))
    sharded = tmp_path / "more" / "shards"
    hermetic.save({"w": torch.ones(4)}, sharded, max_shard_size=8)
    assert sharded.is_dir()


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("Args(lr=0.1)", "argparse.Namespace(**vars(args))"),
        ("collections.defaultdict(lambda: 0)", "only builtin types"),
        ("Queue([1])", "collections.deque(d, d.maxlen)"),
        ("Mapping(a=1)", "store dict(d)"),
    ],
)
def test_save_refusals_say_what_to_store_instead(value: str, hint: str) -> None:
    import argparse
    import collections
    import pathlib

    class Args(argparse.Namespace):
        pass

    class Queue(collections.deque):  # type: ignore[type-arg]
        pass

    class Mapping(dict):  # type: ignore[type-arg]
        pass

    env = {
        "argparse": argparse,
        "collections": collections,
        "pathlib": pathlib,
        "Args": Args,
        "Queue": Queue,
        "Mapping": Mapping,
    }
    with pytest.raises(hermetic.FormatError) as e:
        hermetic.dumps({"x": eval(value, env)})
    assert hint in str(e.value)
    assert 'tree["x"]' in str(e.value)


def test_a_deny_refusal_of_a_data_only_checkpoint_names_the_safe_loader(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(2)}, path)
    code = (
        "from hermetic.firewall import _core\n"
        "_core.activate('deny', None, None)\n"
        "import torch\n"
        "try:\n"
        f"    torch.load({str(path)!r}, weights_only=False)\n"
        "except Exception as e:\n"
        "    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMETIC_")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "refused to unpickle" in r.stdout, r.stdout + r.stderr
    assert "hermetic.torch.load" in r.stdout and 'unlisted = "safe"' in r.stdout
