"""DCP checkpoints written by torch's own ``FileSystemWriter``: read by
``hermetic.dcp.SafeReader`` exactly as the default reader reads them, judged
by ``hermetic scan`` as a folder, consolidated by ``hermetic convert`` and shown
by ``hermetic inspect``; tampered ones (a ``.metadata`` or a non-tensor item
whose pickle calls ``os.system``) are proved to fire under torch's reader (a
canary file appears, in a subprocess) and refused by hermetic (it does not),
also under the firewall's deny mode, by both readers."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

import hermetic  # noqa: E402
import hermetic.dcp  # noqa: E402
from hermetic.dcp._safe import DcpFormatError  # noqa: E402


def _state(seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(torch.randn(5, 4)).sum().backward()
    opt.step()
    return {
        "model": m.state_dict(),
        "optim": opt.state_dict(),
        "step": 7,
        "lr": 0.5,
        "names": ["a", "b"],
        "extra": {"k": 1, "t": (1, 2), "s": "text"},
        "ints": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }


def _blank() -> dict[str, Any]:
    """A state with the same structure and other values, to load into."""
    s = _state(seed=1)
    for t in list(s["model"].values()):
        t.zero_()
    s.update(step=0, lr=0.0, names=[], extra={"k": 0, "t": (), "s": ""}, ints=torch.zeros(2, 3))
    s["ints"] = torch.zeros(2, 3, dtype=torch.int64)
    return s


def _save(state: dict[str, Any], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(path))
    return path


def _load(state: dict[str, Any], **kw: Any) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, **kw)
    return state


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return type(a) is type(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and a == b


def _refusal(state: dict[str, Any], path: Path) -> str:
    """The message of dcp.load's failure with SafeReader (DCP wraps the
    reader's exception in a CheckpointException that carries its text)."""
    with pytest.raises(BaseException) as e:  # CheckpointException
        _load(state, storage_reader=hermetic.dcp.SafeReader(path))
    return str(e.value)


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    return _save(_state(), tmp_path / "ckpt")


def _metadata(path: Path) -> Any:
    # hermetic's evaluator, never pickle.load.
    return hermetic.load_pickle(path / ".metadata")


# ------------------------------------------------------------------ SafeReader


def test_safe_reader_gives_what_the_default_reader_gives(ckpt: Path) -> None:
    want = _load(_blank(), checkpoint_id=str(ckpt))
    got = _load(_blank(), storage_reader=hermetic.dcp.SafeReader(ckpt))
    assert _equal(want, got)
    assert got["step"] == 7 and got["extra"] == {"k": 1, "t": (1, 2), "s": "text"}
    assert _equal(got["model"], _state()["model"])


def test_metadata_is_rebuilt_as_pickle_rebuilds_it(ckpt: Path) -> None:
    md = hermetic.dcp.SafeReader(ckpt).read_metadata()
    # The reference is torch's own reader of this trusted, just-written file.
    ref = dcp.FileSystemReader(str(ckpt)).read_metadata()
    md.storage_meta.load_id = ref.storage_meta.load_id = None
    assert md == ref
    assert hermetic.scan(ckpt / ".metadata")[0].verdict == "safe"


def _canary_script(path: Path, canary: Path, state: str) -> str:
    return textwrap.dedent(
        f"""
        import warnings, torch, torch.distributed.checkpoint as dcp
        warnings.simplefilter("ignore")
        state = {state}
        try:
            dcp.load(state, checkpoint_id={str(path)!r})
        except Exception as e:
            print("load failed after the payload:", type(e).__name__)
        """
    )


def _fires_under_torch(path: Path, canary: Path, state: str = "{}") -> None:
    """The payload really runs under DCP's default reader."""
    assert not canary.exists()
    subprocess.run(
        [sys.executable, "-c", _canary_script(path, canary, state)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    assert canary.exists(), "the payload did not fire under FileSystemReader"
    canary.unlink()


class _Payload:
    def __init__(self, canary: Path) -> None:
        self.cmd = f"touch {canary}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.cmd,))


def test_tampered_metadata_fires_under_torch_and_is_refused(ckpt: Path, tmp_path: Path) -> None:
    canary = tmp_path / "fired"
    md = _metadata(ckpt)
    md.version = _Payload(canary)
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    _fires_under_torch(ckpt, canary)
    with pytest.raises(hermetic.UnsafePickleError, match="system") as e:
        hermetic.dcp.SafeReader(ckpt).read_metadata()
    assert e.value.imports == ["posix.system"]
    # dcp.load reports the reader's refusal in its CheckpointException.
    assert "posix.system" in _refusal(_blank(), ckpt)
    assert not canary.exists()
    verdicts = {Path(r.path).name: r.verdict for r in hermetic.scan(ckpt)}
    assert verdicts[".metadata"] == "dangerous"
    # With no metadata it can read, nothing vouches for the shard's layout.
    assert verdicts["__0_0.distcp"] != "safe"
    assert not canary.exists()


def test_tampered_bytes_item_fires_under_torch_and_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "fired"
    state = _state()
    state["evil"] = _Payload(canary)
    ckpt = _save(state, tmp_path / "ckpt")
    assert not canary.exists()  # saving only pickled it
    _fires_under_torch(ckpt, canary, state="{'evil': None}")
    blank = _blank()
    blank["evil"] = None
    assert "it imports posix.system" in _refusal(blank, ckpt)
    assert not canary.exists()
    (shard,) = [r for r in hermetic.scan(ckpt) if r.path.endswith(".distcp")]
    assert shard.verdict == "dangerous"
    evil = [s for s in shard.streams if s.name.startswith("evil@")]
    assert evil and evil[0].verdict == "dangerous"
    assert any(f.name == "system" for f in evil[0].findings)
    assert not canary.exists()


def test_relative_path_outside_the_folder_is_refused(ckpt: Path) -> None:
    md = _metadata(ckpt)
    info = next(iter(md.storage_data.values()))
    info.relative_path = "../elsewhere.distcp"
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(DcpFormatError, match="plain file name"):
        hermetic.dcp.SafeReader(ckpt).read_metadata()
    verdicts = {Path(r.path).name: r for r in hermetic.scan(ckpt)}
    assert verdicts[".metadata"].verdict == "dangerous"
    assert any(f.code == "dcp_layout" for f in verdicts[".metadata"].findings)


def test_transforms_are_refused(ckpt: Path) -> None:
    md = _metadata(ckpt)
    for info in md.storage_data.values():
        info.transform_descriptors = ["stream.zstd"]
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    assert "SafeReader does not implement" in _refusal(_blank(), ckpt)
    (shard,) = [r for r in hermetic.scan(ckpt) if r.path.endswith(".distcp")]
    assert shard.verdict == "dangerous"


# ------------------------------------------------------------------------ scan


def test_scan_recognises_the_folder(ckpt: Path) -> None:
    t0 = time.perf_counter()
    results = hermetic.scan(ckpt)
    took = time.perf_counter() - t0
    formats = {Path(r.path).name: (r.format, r.verdict) for r in results}
    assert formats == {
        ".metadata": ("dcp-metadata", "safe"),
        "__0_0.distcp": ("dcp-shard", "safe"),
    }, formats
    (shard,) = [r for r in results if r.path.endswith(".distcp")]
    md = _metadata(ckpt)
    # Every item of storage_data is one scanned archive, named after it.
    starts = sorted(
        (i.offset, idx.fqn)
        for idx, i in md.storage_data.items()
        if i.relative_path == "__0_0.distcp"
    )
    named = sorted(
        (int(s.name.split("@")[1].split(":")[0]), s.name.split("@")[0]) for s in shard.streams
    )
    assert named == starts
    proc = subprocess.run(
        [sys.executable, "-m", "hermetic", "scan", str(ckpt)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dcp-shard" in proc.stdout
    print(f"scan of the DCP folder: {took * 1000:.1f} ms")


def test_bytes_no_item_accounts_for_keep_the_folder_from_safe(ckpt: Path) -> None:
    shard = ckpt / "__0_0.distcp"
    with open(shard, "ab") as f:
        f.write(b"\0" * 32)
    (r,) = [r for r in hermetic.scan(ckpt) if r.path.endswith(".distcp")]
    assert r.verdict != "safe"
    assert any(f.code == "dcp_unaccounted" for f in r.findings)


def test_an_unlisted_shard_is_not_safe(ckpt: Path) -> None:
    (ckpt / "__1_0.distcp").write_bytes((ckpt / "__0_0.distcp").read_bytes())
    verdicts = {Path(r.path).name: r for r in hermetic.scan(ckpt)}
    assert verdicts["__1_0.distcp"].verdict != "safe"
    assert verdicts["__0_0.distcp"].verdict == "safe"


def test_items_scanned_as_dcp_reads_them(ckpt: Path) -> None:
    """storage_data ranges that are not the archives the file holds back to
    back: each range is scanned as torch.load would read that slice."""
    md = _metadata(ckpt)
    # Two items read as one slice: (first offset, both lengths).
    infos = sorted((i for i in md.storage_data.values()), key=lambda i: i.offset)
    infos[0].length += infos[1].length
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    (r,) = [r for r in hermetic.scan(ckpt) if r.path.endswith(".distcp")]
    assert r.verdict == "dangerous"  # the overlap
    assert any(f.code == "dcp_layout" for f in r.findings)


# --------------------------------------------------------- convert and inspect

SHARDED = Path(__file__).resolve().parent / "fixtures" / "dcp_sharded"  # make_dcp_sharded.py


def _hermetic(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermetic", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _equal_loose(a: Any, b: Any) -> bool:
    """dcp_to_torch_save's state against hermetic.load's (tuples come back as
    tuples, dicts as dicts; tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and list(a) == list(b) and all(_equal_loose(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal_loose, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("which", ["single", "sharded"])
def test_convert_equals_dcp_to_torch_save(which: str, tmp_path: Path) -> None:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    src = _save(_state(), tmp_path / "ckpt") if which == "single" else SHARDED
    out = tmp_path / "out.hmt"
    t0 = time.perf_counter()
    proc = _hermetic("convert", src, out)
    t_hermetic = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert "(dcp)" in proc.stdout
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp_to_torch_save(src, tmp_path / "ref.pt")  # trusted input: torch's own reader
    t_torch = time.perf_counter() - t0
    ref = torch.load(tmp_path / "ref.pt", weights_only=False)
    got = hermetic.load(out)
    assert _equal_loose(ref, got)
    print(f"convert {which}: hermetic {t_hermetic:.3f} s, dcp_to_torch_save {t_torch:.3f} s")


def test_safe_reader_reads_chunks_saved_by_two_ranks() -> None:
    def blank() -> dict[str, Any]:
        return {
            "w": torch.zeros(6, 5),
            "b": torch.zeros(5, 2),
            "plain": torch.zeros(3),
            "step": 0,
            "cfg": {"name": "", "ls": []},
        }

    want = _load(blank(), checkpoint_id=str(SHARDED))
    got = _load(blank(), storage_reader=hermetic.dcp.SafeReader(SHARDED))
    assert _equal(want, got)
    assert [r.verdict for r in hermetic.scan(SHARDED)] == ["safe"] * 3


def test_convert_refuses_a_tampered_item(tmp_path: Path) -> None:
    canary = tmp_path / "fired"
    state = _state()
    state["evil"] = _Payload(canary)
    ckpt = _save(state, tmp_path / "ckpt")
    proc = _hermetic("convert", ckpt, tmp_path / "out.hmt")
    assert proc.returncode == 1
    assert "posix.system" in proc.stderr
    assert not (tmp_path / "out.hmt").exists()
    assert not canary.exists()


def test_inspect_shows_tensors_chunks_and_state() -> None:
    proc = _hermetic("inspect", SHARDED)
    assert proc.returncode == 0, proc.stderr
    assert "w  float32 [6, 5]  2 chunk(s)" in proc.stdout
    assert "at [3, 0] size [3, 5]  __1_0.distcp@" in proc.stdout
    assert '"name": "x"' in proc.stdout
    doc = json.loads(_hermetic("inspect", "--json", SHARDED).stdout)
    items = {i["key"]: i for i in doc["items"]}
    assert items["b"]["shape"] == [5, 2] and len(items["b"]["chunks"]) == 2
    assert items["step"]["kind"] == "bytes"


# ------------------------------------------------------------- the firewall


def test_tampered_metadata_under_deny_never_fires(ckpt: Path, tmp_path: Path) -> None:
    """HERMETIC_PICKLE=deny: dcp.load with the default reader is refused before
    the payload runs, and SafeReader refuses it too, naming the import; a clean
    folder still loads through SafeReader in the same mode."""
    from _firewall_util import ok, run_py

    clean = _save(_state(), tmp_path / "clean")
    canary = tmp_path / "fired"
    md = _metadata(ckpt)
    md.version = _Payload(canary)
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    _fires_under_torch(ckpt, canary)  # the tampered folder really is armed
    out = ok(
        run_py(
            f"""
            import os, warnings; warnings.simplefilter("ignore")
            import torch, torch.distributed.checkpoint as dcp
            import hermetic, hermetic.dcp
            canary = {str(canary)!r}
            def blank():
                return {{"model": {{"0.weight": torch.zeros(3, 4)}}, "step": 0}}
            # DCP's own reader: its pickle.load of .metadata is refused.
            try:
                dcp.FileSystemReader({str(ckpt)!r}).read_metadata()
            except hermetic.NoPickleError as e:
                assert "refused to unpickle" in str(e), str(e)
                print("reader refused")
            else:
                raise SystemExit("FileSystemReader unpickled under deny")
            assert not os.path.exists(canary), "the payload ran"
            try:
                dcp.load(blank(), checkpoint_id={str(ckpt)!r})
            except BaseException as e:  # DCP's CheckpointException
                # torch >= 2.12 carries the firewall's refusal; older versions
                # log it and raise their own "metadata is None".
                msg = str(e)
                assert "refused to unpickle" in msg or "metadata is None" in msg, msg
                print("default refused")
            else:
                raise SystemExit("dcp.load loaded the tampered folder under deny")
            assert not os.path.exists(canary), "the payload ran"
            try:
                dcp.load(blank(), storage_reader=hermetic.dcp.SafeReader({str(ckpt)!r}))
            except BaseException as e:
                assert "posix.system" in str(e), str(e)
                print("safe refused")
            else:
                raise SystemExit("SafeReader loaded the tampered folder")
            assert not os.path.exists(canary), "the payload ran"
            st = blank()
            dcp.load(st, storage_reader=hermetic.dcp.SafeReader({str(clean)!r}))
            assert st["step"] == 7 and st["model"]["0.weight"].abs().sum() > 0
            print("clean ok")
            """,
            mode="deny",
            timeout=300,
        )
    )
    assert "reader refused" in out and "default refused" in out, out
    assert "safe refused" in out and "clean ok" in out, out
    assert not canary.exists()
